"""Output containers with upstream's field names, order and tuple behaviour.

Like transformers' `ModelOutput`: fields are attributes, `out["logits"]` works, and `out[i]` /
`out.to_tuple()` give the fields that are not None in declaration order, which is exactly upstream's
`return_dict=False` tuple.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import Any, Optional


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
