"""The decoding state: one model step at a time, with what upstream keeps in `model_kwargs` between steps."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..outputs import ModelOutput


def take_rows(value, index):  # arrays and (nested) tuples of arrays, rows picked along axis 0
    """Rows `index` of every array in `value` (a cache: tuples of tuples of [N, ...] arrays)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(take_rows(v, index) for v in value)
    if isinstance(value, np.ndarray):
        return value[index]
    return value


def _expand_arrays(kwargs: dict, n) -> dict:
    """_expand_inputs_for_generation's _expand_dict_for_generation: each array directly in the dict is
    repeat_interleaved n times along its first axis (a head mask [layers, heads] too, as upstream, whose
    forward then refuses it); tuples (a caller's past_key_values, an encoder output's hidden states and
    attentions) are left as they are, so the encoder's attentions stay once per input (batch B)."""
    return {k: np.repeat(v, n, axis=0) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


class Decoder:
    """Runs one model step at a time and keeps what upstream keeps in `model_kwargs` between steps."""

    def __init__(self, model, model_kwargs, hooks):
        self.model, self.kwargs, self.hooks = model, model_kwargs, hooks

    def run(self, input_ids, output_attentions, output_hidden_states):  # -> model output; the state is unchanged
        model_inputs = self.hooks.prepare_inputs(input_ids, **self.kwargs)
        return self.model(**model_inputs, output_attentions=output_attentions,  # upstream's generate: return_dict=True
                          output_hidden_states=output_hidden_states, return_dict=True)

    def advance(self, past_key_values):
        """GenerationMixin._update_model_kwargs_for_generation: the new cache; the mask grows by one column."""
        self.kwargs["past_key_values"] = past_key_values
        mask_name = self.hooks.decoder_mask
        if self.kwargs.get(mask_name) is not None:
            mask = self.kwargs[mask_name]  # [N, S] -> [N, S + 1]
            self.kwargs[mask_name] = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)

    def step(self, input_ids, output_attentions, output_hidden_states):  # -> model output for the new token(s)
        out = self.run(input_ids, output_attentions, output_hidden_states)
        self.advance(out.past_key_values)
        return out

    def expand(self, n):  # repeat_interleave every array argument n times (beams, return sequences)
        self.kwargs = _expand_arrays(self.kwargs, n)
        encoder = self.kwargs.get("encoder_outputs")
        if isinstance(encoder, ModelOutput):
            expanded = _expand_arrays(dict(encoder.items()), n)  # last_hidden_state [B * n, T, D]
            self.kwargs["encoder_outputs"] = dataclasses.replace(encoder, **expanded)

    def reorder(self, beam_idx):  # beam search: the cache follows the beams that were kept
        self.kwargs["past_key_values"] = take_rows(self.kwargs.get("past_key_values"), beam_idx)
