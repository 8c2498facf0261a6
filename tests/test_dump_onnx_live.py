"""refimpl.dump.dump_onnx on torch.onnx.export's exports of all four families (TorchScript exporter), run
in ONNX Runtime without and with its graph optimisations (ORT_ENABLE_ALL: fusions): the names line up with
upstream's named_modules(), the export agrees with refimpl, and a weight scaled by 1.001 in one module before
export is named as the first divergence. Also `refimpl dump-onnx` then `refimpl diff`."""
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from twins import export_onnx, export_vs_upstream, padded_inputs, reference, save_upstream, upstream_names  # noqa: E402

from refimpl.cli import main  # noqa: E402
from refimpl.compare import compare  # noqa: E402
from refimpl.dump import dump_onnx  # noqa: E402

# traced modules an export cannot show: dropout (gone in eval) and what constant folding computes away
NOT_IN_EXPORT = r"dropout$|relative_positions_encoding$|decoder\.embed_positions$"

# (upstream class, config, padding side, LED global attention, planted module)
CASES = [
    ("OPTForCausalLM", "opt-preln", "left", False, "model.decoder.layers.1.fc2"),
    ("OPTForCausalLM", "opt-postln-proj", "right", False, "model.decoder.layers.2.self_attn.q_proj"),
    ("XGLMForCausalLM", "xglm-scaled", "left", False, "model.layers.0.fc1"),
    ("XGLMModel", "xglm-unscaled", "right", False, "layers.2.self_attn.out_proj"),
    ("NezhaForMaskedLM", "nezha", "right", False, "nezha.encoder.layer.1.attention.self.value"),
    ("LEDForConditionalGeneration", "led", "right", False, "led.encoder.layers.0.self_attn.longformer_self_attn.key"),
    ("LEDForConditionalGeneration", "led", "left", True, "led.encoder.layernorm_embedding"),
]
IDS = [f"{arch}-{config}-{side}" for arch, config, side, _, _ in CASES]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    cache = {}

    def get(config):
        if config not in cache:
            cache[config] = save_upstream(config, tmp_path_factory.mktemp(config))
        return cache[config]

    return get


@pytest.mark.parametrize("architecture,config,side,global_attention,planted", CASES, ids=IDS)
def test_onnx_export_agrees_and_planted_weight_is_named(checkpoints, tmp_path, architecture, config, side,
                                                        global_attention, planted):
    directory = checkpoints(config)
    inputs = padded_inputs(config, side, global_attention=global_attention)
    ref, noise = reference(directory, architecture, inputs)
    clean = export_onnx(directory, architecture, inputs, tmp_path / "clean.onnx")
    buggy = export_onnx(directory, architecture, inputs, tmp_path / "buggy.onnx", scale=(planted, 1.001))
    names = upstream_names(directory, architecture)
    assert export_vs_upstream(directory, architecture, inputs, clean) < 1e-5  # the export is upstream's forward
    for optimization in ("none", "all"):
        dump = dump_onnx(clean, inputs, optimization=optimization)
        case = f"{architecture}/{config}/{side}/optimization={optimization}"
        assert not sorted(set(dump) - names), f"{case}: not upstream modules: {sorted(set(dump) - names)}"
        report = compare(ref, dump, noise, attention_mask=inputs["attention_mask"])
        absent = [n for n in report.missing["only_in_reference"] if not re.search(NOT_IN_EXPORT, n)]
        assert not absent, f"{case}: traced modules missing from the dump: {absent}"
        assert not report.missing["only_in_candidate"], f"not run by upstream: {report.missing['only_in_candidate']}"
        assert report.exit_code == 0, f"{case}: {report.verdict}\n{report.table()}"
        report = compare(ref, dump_onnx(buggy, inputs, optimization=optimization), noise,
                         attention_mask=inputs["attention_mask"])
        assert report.first_divergence is not None and report.first_divergence.name == planted, \
            f"{case}: planted {planted}\n{report.table()}"


@pytest.mark.parametrize("global_attention", [False, True])
def test_led_export_without_onnx_export_is_located(checkpoints, tmp_path, global_attention):
    """Exported without `config.onnx_export`, LED's as_strided chunking does not export faithfully: the
    graph's own output is far from upstream's forward, and the diff puts the fault in the first Longformer
    attention, whose query, key and value still agree."""
    directory = checkpoints("led")
    inputs = padded_inputs("led", "right", seed=6, global_attention=global_attention)
    ref, noise = reference(directory, "LEDForConditionalGeneration", inputs)
    path = export_onnx(directory, "LEDForConditionalGeneration", inputs, tmp_path / "led.onnx", onnx_export=False)
    assert export_vs_upstream(directory, "LEDForConditionalGeneration", inputs, path) > 1e-2
    report = compare(ref, dump_onnx(path, inputs), noise, attention_mask=inputs["attention_mask"])
    attention = "led.encoder.layers.0.self_attn.longformer_self_attn"
    assert report.exit_code == 1 and report.first_divergence.name == attention, report.table()
    assert all(not t.diverges for t in report.tensors if t.name in {f"{attention}.{p}" for p in ("query", "key", "value")})


def test_dump_onnx_cli_then_diff(checkpoints, tmp_path, capsys):
    directory = checkpoints("opt-preln")
    inputs = padded_inputs("opt-preln", "left", seed=5)
    np.savez(tmp_path / "in.npz", **inputs)
    export_onnx(directory, "OPTForCausalLM", inputs, tmp_path / "m.onnx")
    out = tmp_path / "dump.safetensors"
    assert main(["dump-onnx", str(tmp_path / "m.onnx"), "--inputs", str(tmp_path / "in.npz"), "-o", str(out),
                 "--optimization", "all"]) == 0
    capsys.readouterr()
    assert main(["diff", "--model", str(directory), "--inputs", str(tmp_path / "in.npz"), "--against", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "agree" and result["coverage"]["compared"] == result["coverage"]["expected"]


def test_dump_onnx_refuses_bad_input(checkpoints, tmp_path, capsys):
    directory = checkpoints("opt-preln")
    inputs = padded_inputs("opt-preln", "right")
    path = export_onnx(directory, "OPTForCausalLM", inputs, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="missing: attention_mask"):
        dump_onnx(path, {"input_ids": inputs["input_ids"]})
    with pytest.raises(ValueError, match="not inputs of this graph: head_mask"):
        dump_onnx(path, dict(inputs, head_mask=np.ones((2, 2))))
    with pytest.raises(ValueError, match="could not run the graph"):
        dump_onnx(path, dict(inputs, input_ids=inputs["input_ids"][:, :, None]))
    with pytest.raises(ValueError, match="optimization"):
        dump_onnx(path, inputs, optimization="fast")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    np.savez(tmp_path / "in.npz", **inputs)
    assert main(["dump-onnx", str(tmp_path / "junk.onnx"), "--inputs", str(tmp_path / "in.npz"),
                 "-o", str(tmp_path / "d.safetensors")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
