"""Model configurations: `BaseConfig`, which every family's frozen config dataclass extends (each lives
in its refimpl/models/<family>.py), fields = config.json keys.

Field names and defaults are upstream's (transformers 4.37.2 `configuration_<family>.py` plus the
`PretrainedConfig` keys these models read). Keys we do not use are kept in `extra`, untouched, so a
config round-trips; they never change behaviour.

Every field of a config.json is validated before anything is built (`check_fields`): its type comes
from the dataclass annotation (an `int` field refuses "16", 16.0 and true), its range and the relations
between fields (heads dividing the hidden size, LED's even attention windows) from RULES, one entry per
family. A ConfigError names the file, the field, the value and what was expected.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .formats import load_json


class ConfigError(ValueError):
    """A config.json that does not describe a model: the message names file, field, value, expectation."""


class ConfigDict(dict):
    """The JSON object of a config file, remembering the file it came from (`source`) for messages."""

    source = "config"


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
        """Build from a config.json dict: known keys become fields (each checked, see check_fields), the
        rest go to `extra`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "islands", "islands_cpu"}
        source = getattr(raw, "source", "config")
        raw = dict(raw)
        if "id2label" not in raw and "num_labels" in raw:  # PretrainedConfig(num_labels=n) form
            num_labels = raw["num_labels"]
            _expect(source, "num_labels", num_labels, _is_int(num_labels) and 1 <= num_labels <= MAX_COUNT,
                    f"an integer from 1 to {MAX_COUNT}")
            raw["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
        if raw.get("id2label") is not None:
            raw["id2label"] = _id2label(source, raw["id2label"])
        for alias, name in getattr(cls, "attribute_map", {}).items():  # e.g. XGLM's hidden_size -> d_model
            if alias in raw and name in raw and raw[alias] != raw[name]:  # upstream silently takes the alias's
                _expect(source, alias, raw[alias], False, f"the same value as {name!r} ({raw[name]!r:.40}), "
                        "which it is another name for")
            if alias in raw:
                raw[name] = raw.pop(alias)
        known = {k: v for k, v in raw.items() if k in names}
        extra = {k: v for k, v in raw.items() if k not in names}
        check_fields(cls, known, source)
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
            "(with islands: bit for bit, torch's own float32 exp/sin/cos from MKL: refimpl/torch_vml.py)",
    "nezha": "NezhaRelativePositionsEncoding: the relative-position table in float32 (with islands: bit for bit, "
             "torch's own float32 exp/sin/cos from MKL: refimpl/torch_vml.py)",
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


def read_config_json(path: Union[str, Path]) -> ConfigDict:
    """The JSON object in `config.json` of a checkpoint directory (or the file itself), with its `source`."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not (file.exists() or file.is_symlink()):
        raise FileNotFoundError(f"no config.json at {file}")
    raw = load_json(file, "config.json", error=ConfigError)  # regular file, size bound, nesting depth
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must hold a JSON object, found {type(raw).__name__}")
    if not isinstance(raw.get("model_type", ""), str):
        _expect(file, "model_type", raw["model_type"], False, "a string such as \"opt\"")
    config = ConfigDict(raw)
    config.source = str(file)
    return config


# ---------------------------------------------------------------- validation of config.json fields

MAX_COUNT = 1 << 16  # layers, heads, labels: far above any real model; stops a config from building 10^9 layers
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")  # PretrainedConfig
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


@dataclass(frozen=True)
class Rules:
    """What a family's config must satisfy beyond the field types."""

    sizes: tuple = ()  # integers >= 1 (widths, vocabulary, positions)
    counts: tuple = ()  # integers from 1 to MAX_COUNT (layers, heads)
    heads: tuple = ()  # (width field, heads field): heads must divide the width
    activations: tuple = ()  # fields naming an activation (refimpl.ops.ACTIVATIONS)
    non_negative: tuple = ()  # integers >= 0


RULES = {  # model_type -> Rules (configuration_<family>.py and the modules that read each field)
    "opt": Rules(sizes=("vocab_size", "hidden_size", "ffn_dim", "max_position_embeddings", "word_embed_proj_dim"),
                 counts=("num_hidden_layers", "num_attention_heads"), heads=(("hidden_size", "num_attention_heads"),),
                 activations=("activation_function",)),
    "xglm": Rules(sizes=("vocab_size", "d_model", "ffn_dim", "max_position_embeddings"),
                  counts=("num_layers", "attention_heads"), heads=(("d_model", "attention_heads"),),
                  activations=("activation_function",)),
    "nezha": Rules(sizes=("vocab_size", "hidden_size", "intermediate_size", "max_position_embeddings",
                          "type_vocab_size"),
                   counts=("num_hidden_layers", "num_attention_heads"), heads=(("hidden_size", "num_attention_heads"),),
                   activations=("hidden_act",), non_negative=("max_relative_position",)),
    "led": Rules(sizes=("vocab_size", "d_model", "encoder_ffn_dim", "decoder_ffn_dim",
                        "max_encoder_position_embeddings", "max_decoder_position_embeddings"),
                 counts=("encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads"),
                 heads=(("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads")),
                 activations=("activation_function",)),
}


def check_fields(cls, values: dict, source="config") -> None:
    """Check config.json values against `cls`'s field types, then its family's RULES; ConfigError otherwise."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name in hints:
            ok, expected = _type_ok(value, hints[name])
            _expect(source, name, value, ok, expected)
    merged = {f.name: getattr(f, "default", None) for f in dataclasses.fields(cls)
              if f.default is not dataclasses.MISSING}
    merged.update(values)
    _check_rules(source, merged, RULES.get(merged.get("model_type"), Rules()))
    _check_common(source, merged)


def _check_rules(source, c: dict, rules: Rules) -> None:
    from .ops import ACTIVATIONS  # the activations refimpl implements

    for name in rules.sizes:
        if c.get(name) is not None:
            _expect(source, name, c[name], c[name] >= 1, "an integer >= 1")
    for name in rules.counts:
        _expect(source, name, c[name], 1 <= c[name] <= MAX_COUNT, f"an integer from 1 to {MAX_COUNT}")
    for name in rules.non_negative:
        _expect(source, name, c[name], c[name] >= 0, "an integer >= 0")
    for width, heads in rules.heads:
        _expect(source, heads, c[heads], c[width] % c[heads] == 0,
                f"a divisor of {width} = {c[width]} (each head gets {width} / {heads} dimensions)")
    for name in rules.activations:
        _expect(source, name, c[name], c[name] in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}")
    if c.get("model_type") == "led":
        _check_led_windows(source, c["attention_window"], c["encoder_layers"])


def _check_led_windows(source, window, layers) -> None:  # LEDEncoderSelfAttention, LEDEncoder.__init__
    windows = window if isinstance(window, list) else [window]
    _expect(source, "attention_window", window,
            all(_is_int(w) and w > 0 and w % 2 == 0 for w in windows) and len(windows) >= 1,
            "an even integer > 0, or a list of them")
    if isinstance(window, list):
        _expect(source, "attention_window", window, len(window) == layers,
                f"one window per encoder layer (encoder_layers = {layers}), got {len(window)}")


def _check_common(source, c: dict) -> None:
    vocab = c.get("vocab_size")
    for name in TOKEN_IDS:
        if c.get(name) is not None and _is_int(vocab):
            _expect(source, name, c[name], 0 <= c[name] < vocab, f"a token id in 0..{vocab - 1} (or null)")
    if c.get("problem_type") is not None:
        _expect(source, "problem_type", c["problem_type"], c["problem_type"] in PROBLEM_TYPES,
                f"null or one of {list(PROBLEM_TYPES)}")
    if c.get("architectures") is not None:
        _expect(source, "architectures", c["architectures"], all(isinstance(a, str) for a in c["architectures"]),
                "a list of class names (strings)")
    for name in ("layer_norm_eps", "classifier_dropout"):
        if c.get(name) is not None:
            _expect(source, name, c[name], c[name] >= 0, "a number >= 0")


def _id2label(source, id2label) -> dict:
    """{"0": "NEG", ...} -> {0: "NEG", ...}; keys must be integer strings (JSON keys) or integers."""
    _expect(source, "id2label", id2label, isinstance(id2label, dict), 'an object {"0": "label name", ...}')
    out = {}
    for key, label in id2label.items():
        index = int(key) if isinstance(key, str) and key.strip().lstrip("-").isdigit() and len(key) < 20 else key
        _expect(source, f"id2label[{key!r}]", key, _is_int(index) and 0 <= index < MAX_COUNT,
                "an integer label index >= 0")
        out[index] = label
    _expect(source, "id2label", id2label, len(out) <= MAX_COUNT, f"at most {MAX_COUNT} labels")
    return out


def _type_ok(value, hint) -> tuple:  # -> (whether value fits the annotation, what the annotation expects)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        results = [_type_ok(value, arg) for arg in args]
        return any(ok for ok, _ in results), " or ".join(expected for _, expected in results)
    if hint is type(None):
        return value is None, "null"
    if hint is bool:
        return isinstance(value, bool), "true or false"
    if hint is int:
        return _is_int(value), "an integer"
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                "a finite number")
    if hint is str:
        return isinstance(value, str), "a string"
    if hint in (list, dict):
        return isinstance(value, hint), "a list" if hint is list else "an object"
    return True, str(hint)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(source, name, value, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{source}: field {name!r} = {value!r:.120}: expected {expected}")
