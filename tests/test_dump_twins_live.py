"""The dump adapters against transformers 4.37.2's own Flax and TensorFlow twins (written independently of
the PyTorch models): each twin loads an upstream PyTorch checkpoint (`from_pt=True`) of several tiny configs,
runs a batch of 2 with one row padded left or right, and its dump is compared with refimpl's trace.

- the names line up: every name in the dump is one of upstream's named_modules(), and the only traced modules
  missing are those the twin computes without a layer of its own (activation_fn, XGLM's sinusoids);
- the unperturbed twin agrees (exit 0); TF OPT/XGLM left-padded differ only at padded positions (exit 0 with
  those tensors reported; --padding strict: exit 1);
- a kernel scaled by 1.001 in one module of the twin is named as the first divergence;
- a dump whose names match nothing exits 3; LED's projections dumped [B, T, D] are compared transposed.
Needs the `twins` extra (jax, flax, tensorflow-cpu; numpy<2); skipped otherwise."""
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from twins import padded_inputs, reference, save_upstream, upstream_names  # noqa: E402

from refimpl.cli import main  # noqa: E402
from refimpl.compare import compare  # noqa: E402
from refimpl.dump import dump_flax, dump_tf, save_dump  # noqa: E402
from refimpl.dump.tf_dump import named_layers  # noqa: E402

# what a twin computes without a layer of its own: never in its dump
NOT_CAPTURED = r"\.activation_fn$|(^|\.)embed_positions$"

# (framework, twin class, config, padding side, planted module by upstream name; {L}: the last layer)
CASES = [
    ("flax", "FlaxOPTForCausalLM", "opt-preln", "left", "model.decoder.layers.{L}.fc1"),
    ("flax", "FlaxOPTForCausalLM", "opt-postln-proj", "right", "model.decoder.layers.0.self_attn.v_proj"),
    ("flax", "FlaxOPTModel", "opt-postln-proj", "left", "decoder.layers.{L}.self_attn.out_proj"),
    ("flax", "FlaxXGLMForCausalLM", "xglm-scaled", "left", "model.layers.{L}.fc2"),
    ("flax", "FlaxXGLMForCausalLM", "xglm-unscaled", "right", "model.layers.1.self_attn.q_proj"),
    ("flax", "FlaxXGLMModel", "xglm-scaled", "right", "layers.0.self_attn.k_proj"),
    ("tf", "TFOPTForCausalLM", "opt-preln", "left", "model.decoder.layers.{L}.self_attn.k_proj"),
    ("tf", "TFOPTForCausalLM", "opt-postln-proj", "right", "model.decoder.layers.1.fc2"),
    ("tf", "TFOPTModel", "opt-preln", "right", "decoder.layers.0.fc1"),
    ("tf", "TFXGLMForCausalLM", "xglm-scaled", "left", "model.layers.0.self_attn.out_proj"),
    ("tf", "TFXGLMForCausalLM", "xglm-unscaled", "right", "model.layers.{L}.fc1"),
    ("tf", "TFXGLMModel", "xglm-unscaled", "left", "layers.1.self_attn.v_proj"),
    ("tf", "TFLEDForConditionalGeneration", "led", "left", "led.encoder.layers.{L}.self_attn.longformer_self_attn.value"),
    ("tf", "TFLEDForConditionalGeneration", "led-heads4", "right", "led.decoder.layers.{L}.encoder_attn.k_proj"),
    ("tf", "TFLEDModel", "led", "right", "encoder.layers.0.self_attn.longformer_self_attn.query_global"),
]
IDS = [f"{twin}-{config}-{side}" for _, twin, config, side, _ in CASES]


@pytest.fixture(scope="module")
def twin_cache(tmp_path_factory):
    """One checkpoint per config and one twin per (class, config), shared by the module's tests (loading
    jax/TF models is the slow part)."""
    cache = {}

    def get(framework, twin_class, config):
        if framework == "flax":
            pytest.importorskip("flax")
        else:
            pytest.importorskip("tensorflow")
        if config not in cache:
            cache[config] = save_upstream(config, tmp_path_factory.mktemp(config))
        if (twin_class, config) not in cache:
            cache[twin_class, config] = getattr(transformers, twin_class).from_pretrained(cache[config], from_pt=True)
        return cache[config], cache[twin_class, config]

    return get


def upstream_class(twin_class: str) -> str:
    return re.sub(r"^(Flax|TF)", "", twin_class)


def layers_of(directory) -> int:
    config = json.loads((directory / "config.json").read_text())
    return config.get("num_hidden_layers", config.get("num_layers", config.get("decoder_layers")))


def run_dump(framework, twin, inputs, params=None):
    return dump_flax(twin, inputs, params=params) if framework == "flax" else dump_tf(twin, inputs)


@pytest.mark.parametrize("framework,twin_class,config,side,_planted", CASES, ids=IDS)
def test_twin_agrees_name_for_name(twin_cache, framework, twin_class, config, side, _planted):
    directory, twin = twin_cache(framework, twin_class, config)
    architecture = upstream_class(twin_class)
    inputs = padded_inputs(config, side)
    ref, noise = reference(directory, architecture, inputs)
    dump = run_dump(framework, twin, inputs)
    not_upstream = sorted(set(dump) - upstream_names(directory, architecture))
    assert not not_upstream, f"{twin_class}/{config}: dump names that are no upstream module: {not_upstream}"
    report = compare(ref, dump, noise, attention_mask=inputs["attention_mask"])
    uncaptured = [n for n in report.missing["only_in_reference"] if not re.search(NOT_CAPTURED, n)]
    assert not uncaptured, f"{twin_class}/{config}: traced modules missing from the dump: {uncaptured}"
    assert not report.missing["only_in_candidate"], f"not run by upstream: {report.missing['only_in_candidate']}"
    assert report.coverage["final_output_compared"], report.coverage
    assert report.exit_code == 0, f"{twin_class}/{config}/{side}: {report.verdict}\n{report.table()}"
    padded_only = [t.name for t in report.tensors if t.padding_only]
    strict = compare(ref, dump, noise, attention_mask=inputs["attention_mask"], padding="strict")
    if framework == "tf" and side == "left" and config.startswith(("opt", "xglm")):
        # TF adds -1e8 masks where PyTorch clamps at float32's minimum: fully masked rows differ
        assert padded_only, f"{twin_class}/{config}: expected padding-only differences\n{report.table()}"
        assert strict.exit_code == 1, strict.table()
    else:
        assert strict.exit_code == 0, f"{twin_class}/{config}/{side} (strict)\n{strict.table()}"


@pytest.mark.parametrize("framework,twin_class,config,side,planted", CASES, ids=IDS)
def test_planted_kernel_is_named_first(twin_cache, framework, twin_class, config, side, planted):
    directory, twin = twin_cache(framework, twin_class, config)
    planted = planted.format(L=layers_of(directory) - 1)
    inputs = padded_inputs(config, side, seed=1)
    ref, noise = reference(directory, upstream_class(twin_class), inputs)
    if framework == "flax":
        from flax.traverse_util import flatten_dict, unflatten_dict

        flat = dict(flatten_dict(twin.params))
        key = tuple(planted.split(".")) + ("kernel",)
        assert key in flat, f"no Flax parameter {key}"
        flat[key] = flat[key] * 1.001
        dump = dump_flax(twin, inputs, params=unflatten_dict(flat))
    else:
        prefix = "" if "For" in twin_class else ("led." if "LED" in twin_class else "model.")
        layer = dict(named_layers(twin))[prefix + planted]
        original = layer.kernel.numpy()
        layer.kernel.assign(original * 1.001)
        try:
            dump = dump_tf(twin, inputs)
        finally:
            layer.kernel.assign(original)
    report = compare(ref, dump, noise, attention_mask=inputs["attention_mask"])
    assert report.first_divergence is not None and report.first_divergence.name == planted, \
        f"{twin_class}/{config}: planted {planted}, report:\n{report.table()}"
    assert report.exit_code == 1


def test_diff_cli_on_tf_opt_left_padded(twin_cache, tmp_path, capsys):
    """`refimpl diff` on TF OPT's dump: exit 0 with padding-only tensors reported, 1 under --padding strict,
    3 for a dump whose names match none of refimpl's."""
    directory, twin = twin_cache("tf", "TFOPTForCausalLM", "opt-postln-proj")
    inputs = padded_inputs("opt-postln-proj", "left", seed=2)
    np.savez(tmp_path / "in.npz", **inputs)
    dump = dump_tf(twin, inputs, tmp_path / "dump.safetensors")
    save_dump({f"tf/{name}": value for name, value in dump.items()}, tmp_path / "renamed.npz")
    args = ["diff", "--model", str(directory), "--inputs", str(tmp_path / "in.npz"), "--json", "--against"]
    capsys.readouterr()
    assert main(args + [str(tmp_path / "dump.safetensors")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "agree" and any(t["padding_only"] for t in result["tensors"])
    assert main(args + [str(tmp_path / "dump.safetensors"), "--padding", "strict"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "diverge"
    assert main(args + [str(tmp_path / "renamed.npz")]) == 3
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "incomplete" and result["coverage"]["compared"] == 0


def test_flax_diff_cli_planted(twin_cache, tmp_path, capsys):
    """`refimpl diff` names a Flax XGLM's planted LayerNorm scale, from files."""
    directory, twin = twin_cache("flax", "FlaxXGLMForCausalLM", "xglm-unscaled")
    from flax.traverse_util import flatten_dict, unflatten_dict

    inputs = padded_inputs("xglm-unscaled", "left", seed=3)
    np.savez(tmp_path / "in.npz", **inputs)
    flat = dict(flatten_dict(twin.params))
    flat["model", "layers", "1", "final_layer_norm", "scale"] = flat["model", "layers", "1", "final_layer_norm", "scale"] * 1.001
    dump_flax(twin, inputs, tmp_path / "dump.npz", params=unflatten_dict(flat))
    capsys.readouterr()
    assert main(["diff", "--model", str(directory), "--inputs", str(tmp_path / "in.npz"),
                 "--against", str(tmp_path / "dump.npz"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_divergence"]["name"] == "model.layers.1.final_layer_norm"


def test_tf_led_projections_in_either_layout(twin_cache):
    """The adapter writes LED's projections in upstream's [T, B, D]; handed [B, T, D], compare finds the axis
    order and says so, and still agrees."""
    directory, twin = twin_cache("tf", "TFLEDForConditionalGeneration", "led")
    inputs = padded_inputs("led", "right", seed=4)
    ref, noise = reference(directory, "LEDForConditionalGeneration", inputs)
    dump = dump_tf(twin, inputs)
    assert not [n for n, layer in named_layers(twin) if "call" in vars(layer)], "a wrapped call left behind"
    name = "led.encoder.layers.0.self_attn.longformer_self_attn.key"
    assert dump[name].shape == ref[name].shape
    dump[name] = dump[name].transpose(1, 0, 2)  # [B, T, D], as TF computes it
    report = compare(ref, dump, noise, attention_mask=inputs["attention_mask"])
    tensor = next(t for t in report.tensors if t.name == name)
    assert tensor.layout == "transposed (1, 0, 2)" and not tensor.diverges, report.table()
    assert report.exit_code == 0


def test_bad_inputs_are_refused(twin_cache):
    pytest.importorskip("tensorflow")
    _directory, twin = twin_cache("flax", "FlaxOPTForCausalLM", "opt-preln")
    with pytest.raises(ValueError, match="head_mask"):
        dump_flax(twin, {"input_ids": np.ones((1, 3), np.int64), "head_mask": np.ones((2, 2))})
    with pytest.raises(ValueError, match="input_ids"):
        dump_flax(twin, {"attention_mask": np.ones((1, 3), np.int64)})
    with pytest.raises(TypeError, match="Keras"):
        dump_tf(twin, {"input_ids": np.ones((1, 3), np.int64)})
