"""The decoding state: one model step at a time, with what upstream keeps in `model_kwargs` between steps."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..outputs import ModelOutput


def _take_rows(value, index):  # arrays and (nested) tuples of arrays, rows picked along axis 0
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(_take_rows(v, index) for v in value)
    if isinstance(value, ModelOutput):
        return dataclasses.replace(value, **{k: _take_rows(v, index) for k, v in value.items()})
    if isinstance(value, np.ndarray):
        return value[index]
    return value


class Decoder:
    """Runs one model step at a time and keeps what upstream keeps in `model_kwargs` between steps."""

    def __init__(self, model, model_kwargs, hooks):
        self.model, self.kwargs, self.hooks = model, model_kwargs, hooks

    def step(self, input_ids, output_attentions, output_hidden_states):  # -> model output for the new token(s)
        model_inputs = self.hooks.prepare_inputs(input_ids, **self.kwargs)
        out = self.model(**model_inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        # GenerationMixin._update_model_kwargs_for_generation
        self.kwargs["past_key_values"] = out.past_key_values
        mask_name = self.hooks.decoder_mask
        if self.kwargs.get(mask_name) is not None:
            mask = self.kwargs[mask_name]
            self.kwargs[mask_name] = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)
        return out

    def expand(self, n):  # repeat_interleave every array argument n times (beams, return sequences)
        index = np.repeat(np.arange(self._batch()), n)
        self.kwargs = {k: _take_rows(v, index) for k, v in self.kwargs.items()}

    def reorder(self, beam_idx):  # beam search: the cache follows the beams that were kept
        self.kwargs["past_key_values"] = _take_rows(self.kwargs.get("past_key_values"), beam_idx)

    def _batch(self):
        for v in self.kwargs.values():
            if isinstance(v, np.ndarray):
                return v.shape[0]
            if isinstance(v, ModelOutput):
                return v.to_tuple()[0].shape[0]
        raise ValueError("cannot tell the batch size")
