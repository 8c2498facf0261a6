"""Output containers with upstream's field names, order and tuple behaviour.

Like transformers' `ModelOutput`: fields are attributes, `out["logits"]` works, and `out[i]` /
`out.to_tuple()` give the fields that are not None in declaration order. Every forward takes upstream's
`return_dict` and ends with `returned(cfg, return_dict, output)`: the object, or upstream's
`return_dict=False` tuple (mostly `to_tuple()`; a few forwards build theirs as upstream does).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import Any, Callable, Optional

import numpy as np


@dataclass
class ModelOutput:
    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def items(self) -> list:
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


Array = Any  # numpy.ndarray; tuples of them for hidden_states / attentions / past_key_values


def output_class(name: str, *field_names: str, doc: str = "") -> type:
    """A ModelOutput dataclass with these fields, in this order, each defaulting to None (for upstream's
    families of output classes that share long runs of fields)."""
    cls = make_dataclass(name, [(f, Any, None) for f in field_names], bases=(ModelOutput,))
    cls.__doc__ = doc or f"{name}({', '.join(field_names)})"
    return cls


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: Array = None
    past_key_values: Optional[tuple] = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class BaseModelOutputWithPastAndCrossAttentions(BaseModelOutputWithPast):
    cross_attentions: Optional[tuple] = None


@dataclass
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    last_hidden_state: Array = None
    pooler_output: Array = None
    hidden_states: Optional[tuple] = None
    past_key_values: Optional[tuple] = None
    attentions: Optional[tuple] = None
    cross_attentions: Optional[tuple] = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: Array = None
    logits: Array = None
    past_key_values: Optional[tuple] = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclass
class CausalLMOutputWithCrossAttentions(CausalLMOutputWithPast):
    cross_attentions: Optional[tuple] = None


@dataclass
class SequenceClassifierOutputWithPast(CausalLMOutputWithPast):
    """Same fields as CausalLMOutputWithPast; logits [B, num_labels]."""


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: Array = None
    logits: Array = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


# Upstream declares these separately; their fields are SequenceClassifierOutput's.
@dataclass
class MaskedLMOutput(SequenceClassifierOutput):
    """logits [B, T, V]."""


@dataclass
class NextSentencePredictorOutput(SequenceClassifierOutput):
    """logits [B, 2]."""


@dataclass
class MultipleChoiceModelOutput(SequenceClassifierOutput):
    """logits [B, num_choices]."""


@dataclass
class TokenClassifierOutput(SequenceClassifierOutput):
    """logits [B, T, num_labels]."""


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Array = None
    start_logits: Array = None
    end_logits: Array = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


# ---------------------------------------------------------------- return_dict (upstream's tuple outputs)


def _config_flag(cfg, key: str, default: bool) -> bool:  # a PretrainedConfig flag kept in config.json
    value = getattr(cfg, key, cfg.extra.get(key, default))
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"config {key!r} must be true or false, got {value!r}")
    return bool(value)


def use_return_dict(cfg, return_dict=None) -> bool:
    """upstream: `return_dict if return_dict is not None else config.use_return_dict`, where
    PretrainedConfig.use_return_dict = config.json's `return_dict` (default true) and not `torchscript`."""
    if return_dict is None:
        return _config_flag(cfg, "return_dict", True) and not _config_flag(cfg, "torchscript", False)
    if not isinstance(return_dict, (bool, np.bool_)):
        raise ValueError(f"return_dict must be True, False or None, got {return_dict!r}")
    return bool(return_dict)


def with_loss(loss, output: tuple) -> tuple:
    """upstream's heads: `((loss,) + output) if loss is not None else output`."""
    return output if loss is None else (loss,) + output


def returned(cfg, return_dict, output: ModelOutput, as_tuple: Optional[Callable[[], tuple]] = None):
    """What a forward returns: `output` when return_dict (else config.use_return_dict) is true, upstream's
    default; otherwise upstream's `return_dict=False` tuple, `as_tuple()` for the few forwards that build it
    differently, else `output.to_tuple()` (the non-None fields in declaration order)."""
    if use_return_dict(cfg, return_dict):
        return output
    return output.to_tuple() if as_tuple is None else as_tuple()
