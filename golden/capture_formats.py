"""Golden checkpoints in every file format upstream writes, for tests/test_checkpoint.py.

`python golden/capture.py formats` (self-contained: it builds its own tiny model of each family, so it
does not depend on, or run after, the other captures). For each model below it writes, under
golden/formats/<family>-<class>/:

    safetensors/            save_pretrained(safe_serialization=True), float32: the reference
    safetensors-sharded/    the same with a small max_shard_size: model.safetensors.index.json + shards
    bin/                    save_pretrained(safe_serialization=False): pytorch_model.bin (torch's zip format)
    bin-sharded/            pytorch_model.bin.index.json + shards
    bin-legacy/             the same state dict via torch.save(..., _use_new_zipfile_serialization=False)
    float16/, bfloat16/     model.to(dtype).save_pretrained(...) (safetensors)
    float16-bin/, bfloat16-bin/   the same as pytorch_model.bin
    expected.safetensors    upstream's own tensors: "float32/<name>" = model.state_dict() (every name,
                            tied ones included); "float16/<name>", "bfloat16/<name>" = the state dict of
                            cls.from_pretrained(<float16 dir>, torch_dtype=torch.float32): upstream's upcast
    index.json              {checkpoint: {family, architecture, variants}}

and golden/formats/special/ with one state dict of every dtype torch.save writes (including the
uint16/32/64 that go through _rebuild_tensor_v3), views that share a storage (transposed, a row, a
strided column, an expanded position_ids buffer), an empty tensor and a scalar, as pytorch_model.bin
(zip) and legacy.bin, with expected.safetensors (bfloat16 stored upcast to float32).

The manifest gets no entries for "formats" (these checkpoints have no forward cases). Regeneration is
deterministic except the legacy-format files (bin-legacy/, special/legacy.bin): that format names
storages by their memory address, so those bytes change from run to run; every tensor stays the same.
"""
from __future__ import annotations

import json

import torch
import transformers
from safetensors.numpy import save_file

from common import ROOT, SEED, randomize_, seed_everything

OUT = ROOT / "formats"
SHARD_BYTES = 4000  # tiny models of ~10-40 kB -> several shards
MODELS = [  # (family, class, config): all-different small sizes; each class has a tied or prefixed weight
    ("opt", "OPTForCausalLM", transformers.OPTConfig(
        vocab_size=37, hidden_size=12, num_hidden_layers=2, ffn_dim=20, num_attention_heads=3,
        max_position_embeddings=24, pad_token_id=1, bos_token_id=2, eos_token_id=2)),
    ("opt", "OPTModel", transformers.OPTConfig(  # base model: keys "decoder.*" without "model."
        vocab_size=37, hidden_size=12, num_hidden_layers=2, ffn_dim=20, num_attention_heads=3,
        max_position_embeddings=24, word_embed_proj_dim=10, do_layer_norm_before=False,
        pad_token_id=1, bos_token_id=2, eos_token_id=2)),
    ("xglm", "XGLMForCausalLM", transformers.XGLMConfig(
        vocab_size=37, d_model=12, num_layers=2, ffn_dim=20, attention_heads=3, max_position_embeddings=24)),
    ("nezha", "NezhaForMaskedLM", transformers.NezhaConfig(
        vocab_size=37, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
        max_position_embeddings=24, max_relative_position=5, type_vocab_size=2)),
    ("led", "LEDForConditionalGeneration", transformers.LEDConfig(
        vocab_size=37, d_model=12, encoder_layers=2, decoder_layers=1, encoder_attention_heads=3,
        decoder_attention_heads=3, encoder_ffn_dim=20, decoder_ffn_dim=18, max_encoder_position_embeddings=32,
        max_decoder_position_embeddings=24, attention_window=4, pad_token_id=1, bos_token_id=0, eos_token_id=2)),
]
LOW_PRECISION = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def to_numpy(state) -> dict:  # bfloat16 has no NumPy dtype: expected values are stored upcast to float32
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().contiguous().numpy().copy()
            for k, v in state.items()}


def write_variants(name: str, model: torch.nn.Module) -> list:
    directory = OUT / name
    model.save_pretrained(directory / "safetensors", safe_serialization=True)
    model.save_pretrained(directory / "safetensors-sharded", safe_serialization=True, max_shard_size=SHARD_BYTES)
    model.save_pretrained(directory / "bin", safe_serialization=False)
    model.save_pretrained(directory / "bin-sharded", safe_serialization=False, max_shard_size=SHARD_BYTES)
    legacy = directory / "bin-legacy"  # the state dict save_pretrained wrote, in torch's pre-1.6 format
    model.config.save_pretrained(legacy)
    state = torch.load(directory / "bin" / "pytorch_model.bin", weights_only=True)
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    expected = {f"float32/{k}": v for k, v in to_numpy(model.state_dict()).items()}
    for label, dtype in LOW_PRECISION.items():
        low = type(model)(model.config).eval()
        low.load_state_dict(model.state_dict())
        low.to(dtype)
        low.save_pretrained(directory / label, safe_serialization=True)
        low.save_pretrained(directory / f"{label}-bin", safe_serialization=False)
        upcast = type(model).from_pretrained(directory / label, torch_dtype=torch.float32)
        expected.update({f"{label}/{k}": v for k, v in to_numpy(upcast.state_dict()).items()})
    save_file(dict(sorted(expected.items())), str(directory / "expected.safetensors"))
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def special_tensors() -> dict:
    gen = torch.Generator().manual_seed(SEED)
    base = torch.randn(3, 4, generator=gen)
    low = torch.randn(4, 5, generator=gen).to(torch.bfloat16)
    return {
        "float64": torch.randn(2, 3, generator=gen, dtype=torch.float64), "float16": base.half(),
        "int64": torch.arange(-3, 3), "int32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "int16": torch.arange(-2, 2, dtype=torch.int16), "int8": torch.arange(-4, 4, dtype=torch.int8),
        "uint8": torch.arange(250, 256, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
        "uint16": torch.arange(65530, 65536, dtype=torch.int32).to(torch.uint16),
        "uint32": torch.tensor([0, 2**32 - 1], dtype=torch.int64).to(torch.uint32),
        "base": base, "transposed": base.t(), "row": base[1], "column": base[:, 2],
        "bfloat16": low, "bfloat16_transposed": low.t(),
        "position_ids": torch.arange(7).expand((1, -1)), "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.5),
    }


def write_special() -> None:
    directory = OUT / "special"
    directory.mkdir(parents=True, exist_ok=True)
    state = special_tensors()
    torch.save(state, directory / "pytorch_model.bin")
    torch.save(state, directory / "legacy.bin", _use_new_zipfile_serialization=False)
    save_file(to_numpy(state), str(directory / "expected.safetensors"))


def capture(manifest_entries) -> None:
    """Writes golden/formats/; adds nothing to the manifest (no forward cases)."""
    index = {}
    for i, (family, cls_name, config) in enumerate(MODELS):
        seed_everything(SEED + i)
        model = getattr(transformers, cls_name)(config).eval()
        randomize_(model, SEED + i)
        name = f"{family}-{cls_name}"
        index[name] = {"family": family, "architecture": cls_name, "variants": write_variants(name, model)}
    write_special()
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
