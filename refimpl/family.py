"""The declared interface of a model family: one `FamilySpec` per `refimpl/models/<family>.py`.

Everything outside a family module (loading, scoring, generation, the command line) reads the spec and
nothing else of the module: no `hasattr`, no guessing from class names. A spec checks itself when its
module loads, so a family that forgets a piece fails at import with a message naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from .config import BaseConfig
from .layers import sub


@dataclass(frozen=True)
class Generation:
    """How `generate()` drives a family (upstream's GenerationMixin hooks)."""

    # upstream's <Class>.prepare_inputs_for_generation: (input_ids, **model_kwargs) -> the next call's kwargs
    prepare_inputs: Callable
    # encoder-decoder models: (model, input_ids, **encoder kwargs) -> encoder output, run once
    run_encoder: Optional[Callable] = None
    # the name of the decoder's attention mask in the forward's keyword arguments
    decoder_mask: str = "attention_mask"


@dataclass(frozen=True)
class FamilySpec:
    model_type: str                              # config.json's "model_type"
    config: type                                 # the family's BaseConfig subclass (fields = config.json keys)
    base_model: str                              # upstream's base class, e.g. "OPTModel"
    base_prefix: str                             # upstream's base_model_prefix: heads keep the base under it
    architectures: Mapping[str, Callable]        # upstream class name -> forward(params, cfg, **kwargs)
    param_shapes: Callable                       # (cfg, architecture) -> {state-dict name: shape}
    tied: Mapping[str, str] = field(default_factory=dict)     # weight -> the weight it is tied to
    ignored_buffers: Tuple[str, ...] = ()       # names in files that are recomputed, not read
    missing_defaults: Mapping[str, Callable] = field(default_factory=dict)  # name -> fill(shape) for a file without it
    causal_lm: Mapping[str, str] = field(default_factory=dict)  # causal-LM class -> its output-projection weight
    masked_lm: Mapping[str, str] = field(default_factory=dict)  # masked-LM class -> its token-logits output field
    sequence_classifiers: Tuple[str, ...] = ()  # classes whose `logits` are [B, num_labels]
    generation: Optional[Generation] = None     # None: no class of this family generates
    generates: Tuple[str, ...] = ()             # the classes generate() accepts

    def __post_init__(self):
        problems = []
        if not (isinstance(self.config, type) and issubclass(self.config, BaseConfig)):
            problems.append("config must be a BaseConfig subclass")
        elif self.config.model_type != self.model_type:  # the dataclass default
            problems.append(f"config.model_type is {self.config.model_type!r}")
        if self.base_model not in self.architectures:
            problems.append(f"base_model {self.base_model!r} is not among the architectures")
        for role, names in (("causal_lm", self.causal_lm), ("masked_lm", self.masked_lm),
                            ("sequence_classifiers", self.sequence_classifiers), ("generates", self.generates)):
            for name in names:
                if name not in self.architectures:
                    problems.append(f"{role} names {name!r}, which is not among the architectures")
        if self.generates and self.generation is None:
            problems.append("generates lists classes, but there are no generation hooks")
        for name, fn in [("param_shapes", self.param_shapes), *self.architectures.items()]:
            if not callable(fn):
                problems.append(f"{name} is not callable")
        if problems:
            raise TypeError(f"family spec {self.model_type!r}: " + "; ".join(problems))

    def check_architecture(self, architecture: str) -> str:
        if architecture not in self.architectures:
            raise ValueError(f"{architecture!r} is not a {self.model_type} architecture; "
                             f"expected one of {sorted(self.architectures)}")
        return architecture

    def base_params(self, params: Mapping, architecture: str) -> Mapping:
        """The base model's parameters inside a head's (heads keep them under `base_prefix.`)."""
        return params if architecture == self.base_model else sub(params, self.base_prefix)


# ---------------------------------------------------------------- pruned heads (config.json's `pruned_heads`)


def pruned_heads(cfg: BaseConfig, num_layers: int, num_heads: int) -> Dict[int, FrozenSet[int]]:
    """config.json's `pruned_heads`: {layer: [heads]}, what upstream's `prune_heads` records (the keys are
    strings in JSON; upstream's from_pretrained prunes them again when it builds the model). Checked: layers
    and heads must exist (upstream would index from the end for negative ones)."""
    raw = cfg.extra.get("pruned_heads") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config pruned_heads must map layer -> list of heads, got {raw!r}")
    result = {}
    for key, heads in raw.items():
        layer = int(key) if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()) else None
        if layer is None or not 0 <= layer < num_layers:
            raise ValueError(f"config pruned_heads names layer {key!r}; the model has layers 0..{num_layers - 1}")
        if not isinstance(heads, (list, tuple)) or not all(
                isinstance(h, int) and not isinstance(h, bool) and 0 <= h < num_heads for h in heads):
            raise ValueError(f"config pruned_heads[{key!r}] must list heads among 0..{num_heads - 1}, got {heads!r}")
        result[layer] = frozenset(heads)
    return result


def refuse_pruned_heads(cfg: BaseConfig, base_model: str) -> None:
    """Families whose base model has no `_prune_heads` (OPT, XGLM, LED in 4.37.2): upstream cannot build a
    model from a config with pruned heads (AttributeError in PreTrainedModel.prune_heads), nor can refimpl."""
    if cfg.extra.get("pruned_heads"):
        raise ValueError(f"config pruned_heads={cfg.extra['pruned_heads']!r}, but transformers 4.37.2 cannot prune "
                         f"heads of {base_model} (it has no _prune_heads; upstream fails to build the model with "
                         "AttributeError); a checkpoint of this family cannot carry pruned heads")
