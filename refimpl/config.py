"""Model configurations: one frozen dataclass per family, fields = config.json keys.

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
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_labels(self) -> int:
        return 2 if self.id2label is None else len(self.id2label)

    @classmethod
    def from_dict(cls, raw: dict) -> "BaseConfig":
        """Build from a config.json dict: known keys become fields, the rest go to `extra`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
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
class OPTConfig(BaseConfig):
    """configuration_opt.py OPTConfig."""

    model_type: str = "opt"
    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 2048
    do_layer_norm_before: bool = True
    _remove_final_layer_norm: bool = False
    word_embed_proj_dim: Optional[int] = None  # None -> hidden_size (set in __post_init__, as upstream)
    num_attention_heads: int = 12
    activation_function: str = "relu"
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    pad_token_id: Optional[int] = 1
    bos_token_id: Optional[int] = 2
    eos_token_id: Optional[int] = 2

    def __post_init__(self):
        if self.word_embed_proj_dim is None:
            object.__setattr__(self, "word_embed_proj_dim", self.hidden_size)
        _check_heads(self.hidden_size, self.num_attention_heads)


@dataclass(frozen=True)
class XGLMConfig(BaseConfig):
    """configuration_xglm.py XGLMConfig."""

    attribute_map = {"num_attention_heads": "attention_heads", "hidden_size": "d_model", "num_hidden_layers": "num_layers"}
    model_type: str = "xglm"
    vocab_size: int = 256008
    max_position_embeddings: int = 2048
    d_model: int = 1024
    ffn_dim: int = 4096
    num_layers: int = 24
    attention_heads: int = 16
    activation_function: str = "gelu"
    scale_embedding: bool = True
    decoder_start_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = 1
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 2

    def __post_init__(self):
        _check_heads(self.d_model, self.attention_heads)


@dataclass(frozen=True)
class NezhaConfig(BaseConfig):
    """configuration_nezha.py NezhaConfig."""

    model_type: str = "nezha"
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    max_relative_position: int = 64
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    classifier_dropout: Optional[float] = 0.1
    pad_token_id: Optional[int] = 0
    bos_token_id: Optional[int] = 2
    eos_token_id: Optional[int] = 3

    def __post_init__(self):
        _check_heads(self.hidden_size, self.num_attention_heads)


@dataclass(frozen=True)
class LEDConfig(BaseConfig):
    """configuration_led.py LEDConfig."""

    attribute_map = {"num_attention_heads": "encoder_attention_heads", "hidden_size": "d_model"}
    model_type: str = "led"
    vocab_size: int = 50265
    max_encoder_position_embeddings: int = 16384
    max_decoder_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    is_encoder_decoder: bool = True
    activation_function: str = "gelu"
    d_model: int = 1024
    decoder_start_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = 1
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 2
    attention_window: Union[list, int] = 512

    def __post_init__(self):
        _check_heads(self.d_model, self.encoder_attention_heads)
        _check_heads(self.d_model, self.decoder_attention_heads)


CONFIG_CLASSES = {"opt": OPTConfig, "xglm": XGLMConfig, "nezha": NezhaConfig, "led": LEDConfig}


def _check_heads(width: int, heads: int) -> None:
    if heads <= 0 or width % heads:
        raise ValueError(f"hidden size {width} is not divisible by the number of attention heads {heads}")


def config_from_dict(raw: dict) -> BaseConfig:
    """Dispatch on `model_type` to the family's config class."""
    model_type = raw.get("model_type")
    if model_type not in CONFIG_CLASSES:
        raise ValueError(f"model_type {model_type!r} is not supported; expected one of {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[model_type].from_dict(raw)


def load_config(path: Union[str, Path]) -> BaseConfig:
    """Read `config.json` from a checkpoint directory (or the file itself)."""
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
    return config_from_dict(raw)
