"""Model configurations: `BaseConfig`, which every family's frozen config dataclass extends (each lives
in its refimpl/models/<family>.py), fields = config.json keys.

Field names and defaults are upstream's (transformers 4.37.2 `configuration_<family>.py` plus the
`PretrainedConfig` keys these models read). Keys we do not use are kept in `extra`, untouched, so a
config round-trips; they never change behaviour.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union


@dataclass(frozen=True)
class BaseConfig:
    """The `PretrainedConfig` keys that model code reads, with upstream's defaults."""

    model_type: str = ""
    architectures: Optional[list] = None
    id2label: Optional[dict] = None  # {index: name}; num_labels = len(id2label) as upstream derives it
    problem_type: Optional[str] = None
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    decoder_start_token_id: Optional[int] = None
    use_cache: bool = True
    output_attentions: bool = False
    output_hidden_states: bool = False
    tie_word_embeddings: bool = True
    is_encoder_decoder: bool = False
    is_decoder: bool = False
    add_cross_attention: bool = False
    # refimpl's float64 policy, not a config.json key (from_pretrained's `islands`, `islands_cpu`):
    # None computes every step in the model's dtype; "upstream" computes upstream's float32 islands in
    # float32 as torch does on its `islands_cpu` kernel ("avx2" or "avx512"). See ISLANDS below.
    islands: Optional[str] = None
    islands_cpu: str = "avx2"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_labels(self) -> int:
        return 2 if self.id2label is None else len(self.id2label)

    @classmethod
    def from_dict(cls, raw: dict) -> "BaseConfig":
        """Build from a config.json dict: known keys become fields, the rest go to `extra`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "islands", "islands_cpu"}
        raw = dict(raw)
        if "id2label" not in raw and "num_labels" in raw:  # PretrainedConfig(num_labels=n) form
            raw["id2label"] = {i: f"LABEL_{i}" for i in range(int(raw["num_labels"]))}
        if raw.get("id2label") is not None:
            raw["id2label"] = {int(k): v for k, v in raw["id2label"].items()}
        for alias, name in getattr(cls, "attribute_map", {}).items():  # e.g. XGLM's hidden_size -> d_model
            if alias in raw and name not in raw:
                raw[name] = raw.pop(alias)
        known = {k: v for k, v in raw.items() if k in names}
        extra = {k: v for k, v in raw.items() if k not in names}
        return cls(**known, extra=extra)

    def replace(self, **changes) -> "BaseConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FairseqConfig(BaseConfig):
    """The special-token ids of fairseq-born models (<s>=0, <pad>=1, </s>=2), which XGLM and LED keep."""

    decoder_start_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = 1
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 2


# Upstream computes these steps in float32 even in a float64 run (its float32 "islands"); refimpl's float64
# computes them in float64 unless a model is loaded with islands="upstream" (measured sizes: UPSTREAM_NOTES.md).
ISLANDS = {
    "xglm": "XGLMSinusoidalPositionalEmbedding.get_embedding: the sinusoid table in float32 "
            "(with islands: correctly rounded float32 values; torch's VML sin/cos are 1 ulp off in ~5%)",
    "nezha": "NezhaRelativePositionsEncoding: the relative-position table in float32 (with islands: correctly "
             "rounded float32 values; torch's are 1 ulp off in ~40% of entries)",
    "led": "LEDEncoderSelfAttention: softmax(..., dtype=torch.float32) for the local band and the global tokens "
           "(with islands: bit for bit as torch's `islands_cpu` kernel sums)",
}
ISLANDS_CHOICES, ISLANDS_CPUS = (None, "upstream"), ("avx2", "avx512")  # torch's CPU kernels: see torch_softmax.py


def check_islands(islands, islands_cpu) -> None:
    if islands not in ISLANDS_CHOICES:
        raise ValueError(f"islands must be None (float64 end to end) or 'upstream' (upstream's float32 islands), "
                         f"got {islands!r}")
    if islands_cpu not in ISLANDS_CPUS:
        raise ValueError(f"islands_cpu must be one of {ISLANDS_CPUS} (torch's CPU kernel: "
                         f"torch.backends.cpu.get_cpu_capability()), got {islands_cpu!r}")


def in_islands(cfg, dtype) -> bool:
    """Whether a float32 island of upstream's is computed as upstream does: float64 models loaded with
    islands="upstream" (float32 models compute everything in float32 anyway)."""
    return cfg.islands == "upstream" and str(dtype) == "float64"


def check_heads(width: int, heads: int) -> None:
    if heads <= 0 or width % heads:
        raise ValueError(f"hidden size {width} is not divisible by the number of attention heads {heads}")


def read_config_json(path: Union[str, Path]) -> dict:
    """The JSON object in `config.json` of a checkpoint directory (or the file itself)."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        raw: Any = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no config.json at {file}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, found {type(raw).__name__}")
    return raw
