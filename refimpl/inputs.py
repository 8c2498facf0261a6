"""Checks and conversions of caller inputs, with errors that say what was expected.

Every model entry point passes its arrays through here before any computation, so a wrong shape
or an id outside the vocabulary is reported as such rather than as an IndexError deep inside.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


def ids(x, name="input_ids", vocab_size=None, ndim=2):  # -> int64 ndarray
    arr = np.asarray(x)
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr))):
        raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions (batch, sequence), got shape {arr.shape}")
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one token is needed")
    if vocab_size is not None and arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        bad = arr[(arr < 0) | (arr >= vocab_size)].flat[0]
        raise ValueError(f"{name} holds id {int(bad)}, outside the vocabulary of {vocab_size} (valid: 0..{vocab_size - 1})")
    return arr


def mask(x, shape, name="attention_mask"):  # -> int64 0/1 ndarray of `shape`
    arr = np.asarray(x)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype.kind == "f" and arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must hold 0/1 values")
    return arr.astype(np.int64)


def floats(x, dtype, name, shape=None):  # -> ndarray of the compute dtype
    if x is None:
        return None
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr.astype(dtype, copy=False)


def one_of(input_ids, inputs_embeds, what="input_ids", embeds="inputs_embeds"):
    if input_ids is not None and inputs_embeds is not None:
        raise ValueError(f"pass either {what} or {embeds}, not both")
    if input_ids is None and inputs_embeds is None:
        raise ValueError(f"pass {what} or {embeds}")


def embed(input_ids, inputs_embeds, table, ids_name="input_ids", embeds_name="inputs_embeds"):
    """Token embeddings from ids (checked against the table) or the caller's embeddings (checked, cast).

    -> (ids [B, T] int64 or None, x [B, T, E]); table [V, E]."""
    one_of(input_ids, inputs_embeds, ids_name, embeds_name)
    if input_ids is not None:
        input_ids = ids(input_ids, ids_name, vocab_size=table.shape[0])
        return input_ids, table[input_ids]
    x = floats(inputs_embeds, table.dtype, embeds_name)
    if x.ndim != 3 or x.shape[-1] != table.shape[1] or x.shape[1] == 0:
        raise ValueError(f"{embeds_name} must have shape (batch, sequence, {table.shape[1]}) with sequence >= 1, got {x.shape}")
    return None, x


def past_length(past_key_values, num_layers, batch):  # -> number of cached positions
    """Check a (key, value, ...) cache per layer, [B, H, S, d] arrays, and return S."""
    if past_key_values is None:
        return 0
    if len(past_key_values) != num_layers:
        raise ValueError(f"past_key_values must hold one tuple per layer ({num_layers}), got {len(past_key_values)}")
    k = np.asarray(past_key_values[0][0])
    if k.ndim != 4 or k.shape[0] != batch:
        raise ValueError(f"past_key_values[0][0] must have shape (batch={batch}, heads, past, head_dim), got {k.shape}")
    return k.shape[2]


def causal_lm_mask(attention_mask, batch, past, length):  # -> [B, past + T] 0/1
    """A decoder's 2-D mask: all ones when absent; it must span the cached and the new tokens."""
    if attention_mask is None:
        return np.ones((batch, past + length), dtype=np.int64)
    return mask(attention_mask, (batch, past + length), "attention_mask (it must span past + current tokens)")


class OutputFlags(NamedTuple):
    use_cache: bool
    attentions: bool
    hidden_states: bool


def output_flags(cfg, use_cache=None, output_attentions=None, output_hidden_states=None) -> OutputFlags:
    """A forward's use_cache / output_attentions / output_hidden_states; None takes the config's default."""
    return OutputFlags(bool(cfg.use_cache if use_cache is None else use_cache),
                       bool(cfg.output_attentions if output_attentions is None else output_attentions),
                       bool(cfg.output_hidden_states if output_hidden_states is None else output_hidden_states))
