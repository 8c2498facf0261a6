"""Tiny upstream checkpoints of several configs and padded batches for the dump adapters' live tests and
bench/twins_table.py. Import only after `pytest.importorskip("torch")` (or with torch installed)."""
import inspect
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
from common import randomize_  # noqa: E402  (the golden capture's peaked, O(1) weights)

import refimpl  # noqa: E402
from refimpl.compare import trace_model  # noqa: E402

# name -> (upstream class with a head, config): all-different small sizes, so a swapped axis cannot pass
CONFIGS = {
    "opt-preln": ("OPTForCausalLM", lambda: transformers.OPTConfig(
        vocab_size=61, hidden_size=16, num_hidden_layers=2, ffn_dim=20, num_attention_heads=2,
        max_position_embeddings=40, word_embed_proj_dim=16, pad_token_id=1, enable_bias=True)),
    "opt-postln-proj": ("OPTForCausalLM", lambda: transformers.OPTConfig(
        vocab_size=61, hidden_size=24, num_hidden_layers=3, ffn_dim=28, num_attention_heads=3,
        max_position_embeddings=40, word_embed_proj_dim=12, do_layer_norm_before=False, pad_token_id=1,
        activation_function="gelu")),
    "xglm-scaled": ("XGLMForCausalLM", lambda: transformers.XGLMConfig(
        vocab_size=61, d_model=16, num_layers=2, ffn_dim=20, attention_heads=2, max_position_embeddings=40,
        scale_embedding=True, pad_token_id=1)),
    "xglm-unscaled": ("XGLMForCausalLM", lambda: transformers.XGLMConfig(
        vocab_size=61, d_model=20, num_layers=3, ffn_dim=12, attention_heads=5, max_position_embeddings=40,
        scale_embedding=False, activation_function="relu", pad_token_id=1)),
    "led": ("LEDForConditionalGeneration", lambda: transformers.LEDConfig(
        vocab_size=61, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=20, decoder_ffn_dim=20, max_encoder_position_embeddings=64,
        max_decoder_position_embeddings=64, attention_window=4, pad_token_id=1)),
    "led-heads4": ("LEDForConditionalGeneration", lambda: transformers.LEDConfig(
        vocab_size=61, d_model=24, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=3, encoder_ffn_dim=12, decoder_ffn_dim=28, max_encoder_position_embeddings=64,
        max_decoder_position_embeddings=64, attention_window=[2], pad_token_id=1)),
    "nezha": ("NezhaForMaskedLM", lambda: transformers.NezhaConfig(
        vocab_size=61, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
        max_position_embeddings=40, max_relative_position=6)),
}


def save_upstream(config_name: str, directory: Path, seed: int = 0) -> Path:
    """An upstream checkpoint (save_pretrained) of the named config with the golden capture's weights."""
    class_name, make = CONFIGS[config_name]
    model = getattr(transformers, class_name)(make()).eval()
    with torch.no_grad():
        randomize_(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def padded_inputs(config_name: str, side: str, T: int = 7, seed: int = 0, global_attention: bool = True) -> dict:
    """Batch 2, the second row padded on `side` (token 1 where masked); LED: global attention on one token
    per row and a decoder prompt; NEZHA: token type ids."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 61, size=(2, T))
    n = T - 3
    mask = np.ones((2, T), np.int64)
    mask[1] = [1] * n + [0] * (T - n) if side == "right" else [0] * (T - n) + [1] * n
    ids = np.where(mask == 1, ids, 1)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if config_name.startswith("led"):
        if global_attention:
            inputs["global_attention_mask"] = np.zeros_like(mask)
            inputs["global_attention_mask"][0, 0] = 1
            inputs["global_attention_mask"][1, int(np.argmax(mask[1]))] = 1  # the row's first real token
        inputs["decoder_input_ids"] = rng.integers(3, 61, size=(2, 4))
    if config_name.startswith("nezha"):
        inputs["token_type_ids"] = np.zeros_like(ids)
    return inputs


def reference(directory: Path, architecture: str, inputs: dict):  # -> (float64 trace, float32 noise)
    model = refimpl.from_pretrained(directory, architecture=architecture, dtype="float64")
    noise_model = refimpl.from_pretrained(directory, architecture=architecture, dtype="float32")
    return trace_model(model, inputs, noise_model)


def upstream_names(directory: Path, architecture: str) -> set:  # upstream's named_modules() of that class
    return {name for name, _ in getattr(transformers, architecture).from_pretrained(directory).named_modules()}


def export_onnx(directory: Path, architecture: str, inputs: dict, path: Path, scale: tuple = None,
                onnx_export: bool = True) -> Path:
    """torch.onnx.export (TorchScript exporter) of the upstream class on these inputs; with
    scale=(module name, factor), that module's weight is scaled first (a planted bug). LED's `onnx_export`
    config switch picks upstream's exportable chunking (its default as_strided one exports wrongly)."""
    model = getattr(transformers, architecture).from_pretrained(directory).eval()
    model.config.onnx_export = onnx_export
    if scale is not None:
        with torch.no_grad():
            model.get_submodule(scale[0]).weight.mul_(scale[1])
    names = [n for n in inspect.signature(model.forward).parameters if n in inputs]
    with torch.no_grad():
        torch.onnx.export(model, (), str(path), kwargs={n: torch.from_numpy(inputs[n]) for n in names},
                          input_names=names, dynamo=False, opset_version=17)
    return path


def export_vs_upstream(directory: Path, architecture: str, inputs: dict, path: Path) -> float:
    """The ONNX graph's first output in ONNX Runtime against upstream's own forward: max abs / max |upstream|."""
    import onnxruntime

    model = getattr(transformers, architecture).from_pretrained(directory).eval()
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})[0].numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})[0]
    return float(np.abs(got - expected).max() / np.abs(expected).max())
