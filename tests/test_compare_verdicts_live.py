"""Verdicts on candidates built independently of refimpl: upstream transformers 4.37.2 models loaded from
the same checkpoints, dumped through refimpl.dump_torch, with left- and right-padded batches. An
unperturbed upstream agrees (exit 0) with full coverage; upstream with TensorFlow's additive -1e8 masks
(TFOPT/TFXGLM's formulation, in place of PyTorch's clamp at float32's minimum) differs only at padded
positions: exit 0 with those tensors reported, exit 1 under --padding strict; LED's projections dumped
[B, T, D] agree transposed; a renamed dump exits 3."""
import contextlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import live  # noqa: E402,F401  (puts golden/ on sys.path)

import refimpl  # noqa: E402
from golden import GOLDEN  # noqa: E402
from refimpl.cli import SHIPPED_MODEL, main  # noqa: E402
from refimpl.compare import compare, trace_model  # noqa: E402
from refimpl.dump_torch import dump_torch, save_dump  # noqa: E402

DECODERS = [(SHIPPED_MODEL, "OPTForCausalLM", "opt"), (GOLDEN / "opt" / "postln-proj-OPTModel", "OPTModel", "opt"),
            (GOLDEN / "xglm" / "gelu-scaled-XGLMForCausalLM", "XGLMForCausalLM", "xglm"),
            (GOLDEN / "xglm" / "relu-unscaled-XGLMModel", "XGLMModel", "xglm")]


def padded_inputs(vocab, side, lengths, T, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.array([[1] * n + [0] * (T - n) if side == "right" else [0] * (T - n) + [1] * n for n in lengths])
    ids = np.where(mask == 1, rng.integers(4, vocab, size=mask.shape), 1)
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}


def reference_of(directory, arch, inputs):
    return trace_model(refimpl.from_pretrained(directory, architecture=arch, dtype="float64"), inputs,
                       refimpl.from_pretrained(directory, architecture=arch, dtype="float32"))


@contextlib.contextmanager
def tensorflow_masks(family):
    """Upstream PyTorch with TF's masks: -1e8 added per masked key for the causal mask and again for
    padding (modeling_tf_opt.py / modeling_tf_xglm.py), instead of float32's minimum."""
    module = getattr(transformers.models, family).__dict__[f"modeling_{family}"]
    original = module._prepare_4d_causal_attention_mask

    def tf_style(attention_mask, input_shape, inputs_embeds, past_key_values_length, *args, **kwargs):
        B, T = input_shape
        causal = torch.triu(torch.full((T, T), -1e8), diagonal=1)[None, None]
        padding = (1.0 - attention_mask[:, None, None, :].to(inputs_embeds.dtype)) * -1e8
        return (causal + padding).to(inputs_embeds.dtype)

    module._prepare_4d_causal_attention_mask = tf_style
    try:
        yield
    finally:
        module._prepare_4d_causal_attention_mask = original


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("directory, arch, family", DECODERS, ids=[a for _, a, _ in DECODERS])
def test_upstream_agrees_and_tf_masks_differ_only_at_padded_positions(directory, arch, family, side):
    model = getattr(transformers, arch).from_pretrained(directory).eval()
    inputs = padded_inputs(model.config.vocab_size, side, [7, 4, 2], 7)
    reference, noise = reference_of(directory, arch, inputs)
    mask = inputs["attention_mask"]
    plain = compare(reference, dump_torch(model, inputs), noise, attention_mask=mask)
    assert (plain.verdict, plain.exit_code) == ("agree", 0), plain.table()
    assert plain.coverage["compared"] == plain.coverage["expected"] == len(reference)
    assert not any(t.padding_only for t in plain.tensors), plain.table()
    with tensorflow_masks(family):
        tf_like = dump_torch(model, inputs)
    lenient = compare(reference, tf_like, noise, attention_mask=mask)
    strict = compare(reference, tf_like, noise, attention_mask=mask, padding="strict")
    assert (lenient.verdict, lenient.exit_code) == ("agree", 0), lenient.table()
    padding_only = [t for t in lenient.tensors if t.padding_only]
    if side == "left":  # a padded query row sees only masked keys: softmax over -1e8 + scores vs uniform
        assert padding_only and padding_only[0].name.endswith("layers.0.self_attn.out_proj"), lenient.table()
        assert all(t.max_rel_padded > 1e-3 for t in padding_only[:1])
        assert (strict.verdict, strict.exit_code) == ("diverge", 1)
        assert strict.first_divergence.name == padding_only[0].name
    else:  # right padding: every padded query still sees attended keys, both masks give them all the weight
        assert strict.verdict == "agree", strict.table()


LED = GOLDEN / "led" / "window-6-LEDForConditionalGeneration"


@pytest.mark.parametrize("side", ["left", "right"])
def test_leds_batch_major_projections_agree_transposed(side, tmp_path):
    model = transformers.LEDForConditionalGeneration.from_pretrained(LED).eval()
    inputs = padded_inputs(model.config.vocab_size, side, [9, 5], 9, seed=3)
    inputs["input_ids"][:, 0 if side == "right" else -1] = 2
    inputs["decoder_input_ids"] = np.array([[2, 0, 7, 8], [2, 0, 9, 10]], np.int64)
    reference, noise = reference_of(LED, "LEDForConditionalGeneration", inputs)
    dump = dump_torch(model, inputs)
    projections = [k for k in dump if k.split(".")[-1] in ("query", "key", "value")]
    assert projections and all(dump[k].shape[1] == 2 for k in projections)  # upstream: [T, B, D]
    port = {k: np.ascontiguousarray(v.transpose(1, 0, 2)) if k in projections else v for k, v in dump.items()}
    report = compare(reference, port, noise, attention_mask=inputs["attention_mask"])
    assert report.verdict == "agree", report.table()
    assert {t.name for t in report.tensors if t.layout == "transposed (1, 0, 2)"} == set(projections)
    np.savez(tmp_path / "inputs.npz", **inputs)
    save_dump(port, tmp_path / "port.safetensors")
    save_dump({f"led_model/{k}": v for k, v in dump.items()}, tmp_path / "renamed.safetensors")
    args = ["diff", "--model", str(LED), "--inputs", str(tmp_path / "inputs.npz"), "--json", "--against"]
    assert main(args + [str(tmp_path / "port.safetensors")]) == 0
    assert main(args + [str(tmp_path / "renamed.safetensors")]) == 3


def test_a_planted_bug_in_a_padded_batch_is_named(tmp_path, capsys):
    model = transformers.OPTForCausalLM.from_pretrained(SHIPPED_MODEL).eval()
    inputs = padded_inputs(model.config.vocab_size, "left", [6, 3], 6, seed=1)
    with torch.no_grad():
        model.model.decoder.layers[1].fc2.weight.mul_(1.001)
    np.savez(tmp_path / "inputs.npz", **inputs)
    dump_torch(model, inputs, tmp_path / "bug.safetensors")
    code = main(["diff", "--model", str(SHIPPED_MODEL), "--inputs", str(tmp_path / "inputs.npz"),
                 "--against", str(tmp_path / "bug.safetensors"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["first_divergence"]["name"] == "model.decoder.layers.1.fc2"
    assert report["first_divergence"]["max_rel_attended"] > 1e-5 and not report["first_divergence"]["padding_only"]
