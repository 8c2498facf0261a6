"""refimpl.trace against upstream's own modules (forward hooks, refimpl.dump_torch), all 18 classes, and
`refimpl.compare` / `refimpl diff` on planted bugs in upstream copies (torch + transformers 4.37.2)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import live  # noqa: E402,F401  (puts golden/ on sys.path)
import capture_nezha  # noqa: E402
import capture_xglm  # noqa: E402
from common import randomize_, running_in  # noqa: E402
from golden import compare_tensor  # noqa: E402

import refimpl  # noqa: E402
from refimpl.compare import compare, trace_model  # noqa: E402
from refimpl.dump_torch import dump_torch, save_dump  # noqa: E402
from refimpl.trace import tracing  # noqa: E402

T = transformers
SMALL = dict(vocab_size=23, max_position_embeddings=24)


def configs():  # -> [(upstream class, config, extra inputs)] covering the 18 classes and their variants
    opt = [T.OPTConfig(**SMALL, hidden_size=8, num_hidden_layers=2, ffn_dim=12, num_attention_heads=2,
                       do_layer_norm_before=pre, word_embed_proj_dim=proj) for pre, proj in ((True, 8), (False, 4))]
    xglm = [T.XGLMConfig(**SMALL, d_model=8, num_layers=2, ffn_dim=12, attention_heads=2, add_cross_attention=c)
            for c in (False, True)]
    nezha = T.NezhaConfig(**SMALL, hidden_size=8, num_hidden_layers=2, intermediate_size=12, num_attention_heads=2,
                          max_relative_position=2)
    led = [T.LEDConfig(vocab_size=23, d_model=8, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=12,
                       decoder_ffn_dim=12, encoder_attention_heads=2, decoder_attention_heads=2, attention_window=w,
                       max_encoder_position_embeddings=32, max_decoder_position_embeddings=16, num_labels=3)
           for w in (4, [8, 4])]
    cases = [(cls, cfg, {}) for cfg in opt for cls in (T.OPTModel, T.OPTForCausalLM, T.OPTForSequenceClassification,
                                                        T.OPTForQuestionAnswering)]
    cases += [(cls, cfg, {"cross": cfg.add_cross_attention}) for cfg in xglm for cls in (T.XGLMModel, T.XGLMForCausalLM)]
    cases += [(cls, nezha, {"types": True}) for cls in (
        T.NezhaModel, T.NezhaForPreTraining, T.NezhaForMaskedLM, T.NezhaForNextSentencePrediction,
        T.NezhaForSequenceClassification, T.NezhaForTokenClassification, T.NezhaForQuestionAnswering)]
    cases += [(T.NezhaForMultipleChoice, nezha, {"types": True, "choices": 2})]
    cases += [(cls, cfg, {"global": True}) for cfg in led for cls in (
        T.LEDModel, T.LEDForConditionalGeneration, T.LEDForSequenceClassification, T.LEDForQuestionAnswering)]
    return cases


CASES = configs()


def make_inputs(rng, cfg, extra, length):  # -> the forward's keyword arrays
    batch = 2
    ids = rng.integers(3, cfg.vocab_size, size=(batch, length))
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>: LED's classification head pools at the last eos
    mask = np.ones((batch, length), np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask}
    if extra.get("types"):
        arrays["token_type_ids"] = (np.arange(length)[None] >= length // 2).repeat(batch, 0).astype(np.int64)
    if extra.get("global"):
        arrays["global_attention_mask"] = np.zeros_like(ids)
        arrays["global_attention_mask"][:, 0] = 1
    if extra.get("cross"):
        arrays["encoder_hidden_states"] = rng.normal(size=(batch, 3, cfg.d_model))
    if extra.get("choices"):
        arrays = {k: np.stack([v, v[:, ::-1]], axis=1) for k, v in arrays.items()}
    return arrays


def upstream_model(cls, cfg, seed):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    randomize_(model, seed)
    return model


@pytest.fixture(autouse=True, scope="module")
def exact_tables():  # upstream's float32 islands computed in float64 (as the golden capture does)
    with capture_xglm.correctly_rounded_sinusoid(), capture_nezha.exact_relative_positions():
        yield


def trace_problems(model, directory, arch, inputs):
    problems = []
    for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
        with running_in(model, torch_dtype):
            dump = dump_torch(model, inputs)
        ours = refimpl.from_pretrained(directory, architecture=arch, dtype=dtype)
        with tracing() as trace:
            ours(**inputs)
        if list(trace) != list(dump):
            problems.append(f"{arch} {dtype}: names differ; only upstream {[n for n in dump if n not in trace]}, "
                            f"only refimpl {[n for n in trace if n not in dump]}, or the order")
        for name in dump:
            if name in trace:
                problems += compare_tensor(np.asarray(trace[name], np.float64), dump[name], dtype,
                                           f"{arch} {dtype} {name or '<root>'}")
    return problems


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)])
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(2, 9), st.integers(0, 2**16))
def test_trace_equals_upstreams_module_outputs(tmp_path_factory, index, length, seed):
    """Every module of upstream's named_modules() that returns a tensor: the same names in the same order,
    upstream's shapes, the values within 1e-5 (float32) and 1e-10 (float64, islands computed in float64)."""
    cls, cfg, extra = CASES[index]
    model = upstream_model(cls, cfg, seed)
    directory = tmp_path_factory.mktemp("trace")
    model.save_pretrained(directory, safe_serialization=True)
    inputs = make_inputs(np.random.default_rng(seed), cfg, extra, max(length, 5))
    problems = trace_problems(model, directory, cls.__name__, inputs)
    assert not problems, "\n".join(problems[:20])


# ---------------------------------------------------------------- the finder, on planted bugs


def scale_weight(module_name):  # a weight scaled by 1.001
    def plant(model):
        model.get_submodule(module_name).weight.mul_(1.001)
    return plant


def shift_bias(module_name):
    def plant(model):
        model.get_submodule(module_name).bias.add_(0.01)
    return plant


def drop_position_offset(module_name):  # OPT's / XGLM's position offset of 2 forgotten
    def plant(model):
        model.get_submodule(module_name).offset = 0
    return plant


def change_eps(module_name):  # a LayerNorm eps changed
    def plant(model):
        model.get_submodule(module_name).eps = 0.1
    return plant


PLANTED = [  # (index in CASES, bug, the module refimpl diff must name first)
    (0, scale_weight("decoder.layers.1.fc1"), "decoder.layers.1.fc1"),
    (1, shift_bias("model.decoder.layers.0.self_attn.v_proj"), "model.decoder.layers.0.self_attn.v_proj"),
    (9, change_eps("model.layers.1.final_layer_norm"), "model.layers.1.final_layer_norm"),
    (6, drop_position_offset("model.decoder.embed_positions"), "model.decoder.embed_positions"),
    (13, scale_weight("nezha.encoder.layer.1.attention.self.key"), "nezha.encoder.layer.1.attention.self.key"),
    (14, change_eps("nezha.embeddings.LayerNorm"), "nezha.embeddings.LayerNorm"),
    (21, scale_weight("led.encoder.layers.1.self_attn.longformer_self_attn.value"),
     "led.encoder.layers.1.self_attn.longformer_self_attn.value"),
    (21, shift_bias("led.decoder.layers.0.encoder_attn.q_proj"), "led.decoder.layers.0.encoder_attn.q_proj"),
]


@pytest.mark.parametrize("index, plant, culprit", PLANTED, ids=[c for _, _, c in PLANTED])
def test_refimpl_diff_names_the_planted_module_first(tmp_path, index, plant, culprit):
    cls, cfg, extra = CASES[index]
    model = upstream_model(cls, cfg, 11)
    model.save_pretrained(tmp_path, safe_serialization=True)
    inputs = make_inputs(np.random.default_rng(11), cfg, extra, 8)
    with torch.no_grad():
        plant(model)
    buggy = dump_torch(model, inputs)  # a float32 "port" with one bug
    reference, noise = trace_model(refimpl.from_pretrained(tmp_path, architecture=cls.__name__, dtype="float64"),
                                   inputs, refimpl.from_pretrained(tmp_path, architecture=cls.__name__))
    report = compare(reference, buggy, noise)
    assert report.first_divergence is not None and report.first_divergence.name == culprit, report.table()


@pytest.mark.parametrize("index", [0, 5, 9, 13, 17, 20, 22])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unperturbed_upstream_is_no_false_alarm(tmp_path, index, dtype):
    cls, cfg, extra = CASES[index]
    model = upstream_model(cls, cfg, 5)
    model.save_pretrained(tmp_path, safe_serialization=True)
    inputs = make_inputs(np.random.default_rng(5), cfg, extra, 9)
    with running_in(model, torch.float32 if dtype == "float32" else torch.float64):
        dump = dump_torch(model, inputs)
    reference, noise = trace_model(refimpl.from_pretrained(tmp_path, architecture=cls.__name__, dtype="float64"),
                                   inputs, refimpl.from_pretrained(tmp_path, architecture=cls.__name__))
    report = compare(reference, dump, noise)
    assert report.first_divergence is None, report.table()
    assert not report.missing["only_in_reference"] and not report.missing["only_in_candidate"], report.missing


def test_refimpl_diff_command_contract(tmp_path):
    """The CLI: a table and exit 0 on a clean dump; exit 1 and the culprit in --json on a planted bug;
    exit 2 on bad arguments."""
    cls, cfg, extra = CASES[0]
    model = upstream_model(cls, cfg, 2)
    model.save_pretrained(tmp_path, safe_serialization=True)
    inputs = make_inputs(np.random.default_rng(2), cfg, extra, 7)
    np.savez(tmp_path / "inputs.npz", **inputs)
    dump_torch(model, inputs, tmp_path / "clean.safetensors")
    with torch.no_grad():
        scale_weight("decoder.layers.0.fc2")(model)
    save_dump(dump_torch(model, inputs), tmp_path / "bug.npz")
    base = [sys.executable, "-m", "refimpl", "diff", "--model", str(tmp_path), "--inputs", str(tmp_path / "inputs.npz")]
    clean = subprocess.run(base + ["--against", str(tmp_path / "clean.safetensors")], capture_output=True, text=True)
    assert clean.returncode == 0 and "no divergence beyond noise" in clean.stdout, clean.stdout + clean.stderr
    bug = subprocess.run(base + ["--against", str(tmp_path / "bug.npz"), "--json"], capture_output=True, text=True)
    assert bug.returncode == 1, bug.stderr
    report = json.loads(bug.stdout)
    assert report["first_divergence"]["name"] == "decoder.layers.0.fc2"
    assert {"name", "shape", "max_abs", "max_rel", "noise"} <= set(report["tensors"][0])
    bad = subprocess.run(base + ["--against", str(tmp_path / "missing.safetensors")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a file" in bad.stderr
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dump_torch(refimpl.from_pretrained(tmp_path), inputs)
