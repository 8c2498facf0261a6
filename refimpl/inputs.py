"""Checks and conversions of caller inputs, with errors that say what was expected.

Every model entry point passes its arrays through here before any computation, so a wrong shape
or an id outside the vocabulary is reported as such rather than as an IndexError deep inside.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


def ids(x, name="input_ids", vocab_size=None, ndim=2):  # -> int64 ndarray
    """Token ids as int64, refused (with the offending value as given) when they are not integers: bool
    (True is not token 1), floats (as upstream's embedding refuses them), values beyond int64, ids outside
    the vocabulary."""
    arr = _array(x, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions{' (batch, sequence)' if ndim == 2 else ''}, "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one sequence of at least one token is needed")
    _check_integers(arr, name)
    low, high = -(1 << 63), (1 << 63) - 1
    if vocab_size is not None:
        low, high = 0, vocab_size - 1
    lo, hi = int(arr.min()), int(arr.max())  # exact Python ints, whatever the dtype (uint64, object)
    if lo < low or hi > high:
        bad = lo if lo < low else hi
        where = (f"outside the vocabulary of {vocab_size} (valid: 0..{vocab_size - 1})" if vocab_size is not None
                 else "outside the int64 range")
        raise ValueError(f"{name} holds id {bad}, {where}")
    return arr.astype(np.int64)


def _array(x, name):  # -> ndarray, a ragged nesting of lists reported as such
    try:
        return np.asarray(x)
    except ValueError as err:
        raise ValueError(f"{name} must be a rectangular array (every row the same length): {err}") from None


def _check_integers(arr, name):
    kind = arr.dtype.kind
    if kind == "b":
        raise ValueError(f"{name} must hold integer token ids, got dtype bool (True/False are not token ids)")
    if kind == "f":  # upstream's embedding refuses float ids too ("Expected ... Long, Int")
        bad = arr[~np.isfinite(arr) | (arr != np.round(arr))]
        what = f"the non-integral value {float(bad.flat[0])}" if bad.size else "integral values"
        raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype} ({what}); "
                         "convert integral values with .astype(np.int64)")
    if kind == "O":
        bad = next((v for v in arr.flat
                    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_))), None)
        if bad is not None:
            raise ValueError(f"{name} must hold integer token ids, got {bad!r:.80} ({type(bad).__name__})")
    elif kind not in "iu":
        raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")


def mask(x, shape, name="attention_mask"):  # -> int64 0/1 ndarray of `shape`
    """A 0/1 mask (bool, integer or float) of `shape`; any other value is refused, as LED does upstream
    (OPT, XGLM and NEZHA would silently compute with a 2 or -1 and give other logits)."""
    arr = _array(x, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold 0/1 values, got dtype {arr.dtype}")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        values = np.unique(arr[(arr != 0) & (arr != 1)])[:5].tolist()
        raise ValueError(f"{name} must hold 0/1 values (1 = attend, 0 = padding), got {values}")
    return arr.astype(np.int64)


def floats(x, dtype, name, shape=None):  # -> ndarray of the compute dtype
    if x is None:
        return None
    arr = _array(x, name)
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
    if x.ndim != 3 or x.shape[-1] != table.shape[1] or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{embeds_name} must have shape (batch, sequence, {table.shape[1]}) with batch >= 1 and "
                         f"sequence >= 1, got {x.shape}")
    return None, x


def past_length(past_key_values, num_layers, batch, heads=None, head_dim=None, arrays=(2,)):  # -> cached positions
    """Check a cache before any of it is used and return its length S.

    past_key_values: one tuple per layer of `arrays` arrays (2: self-attention key, value [B, H, S, d];
    4: then the cross-attention key, value [B, H, S_enc, d]). Every layer and array is checked (count,
    batch, heads, head_dim, one S for all self-attention arrays, one S_enc for all cross ones), so a
    wrong cache is reported as such, not as a broadcast error inside attention or a dropped cross cache.
    """
    if past_key_values is None:
        return 0
    if not isinstance(past_key_values, (tuple, list)) or len(past_key_values) != num_layers:
        got = len(past_key_values) if isinstance(past_key_values, (tuple, list)) else type(past_key_values).__name__
        raise ValueError(f"past_key_values must hold one tuple per layer ({num_layers}), got {got}")
    want = {"self": None, "cross": None}  # the shape every self / cross array must have
    for i, layer in enumerate(past_key_values):
        if not isinstance(layer, (tuple, list)) or len(layer) not in arrays:
            got = len(layer) if isinstance(layer, (tuple, list)) else type(layer).__name__
            raise ValueError(f"past_key_values[{i}] must hold {' or '.join(map(str, arrays))} arrays "
                             "(self-attention key, value[, cross-attention key, value]), got " + str(got))
        for j, array in enumerate(layer):
            part = "self" if j < 2 else "cross"
            shape = np.shape(array)
            if np.asarray(array).dtype.kind != "f":
                raise ValueError(f"past_key_values[{i}][{j}] must be a float array, "
                                 f"got dtype {np.asarray(array).dtype}")
            if want[part] is None:
                want[part] = (batch, heads, None, head_dim)
            expected = want[part]
            if len(shape) != 4 or any(e is not None and g != e for g, e in zip(shape, expected)):
                letters = ", ".join(f"{n}={e}" if e is not None else n for n, e in
                                    zip(("batch", "heads", "length", "head_dim"), expected))
                raise ValueError(f"past_key_values[{i}][{j}] ({part}-attention {'key' if j % 2 == 0 else 'value'}) "
                                 f"must have shape ({letters}), got {shape}")
            want[part] = tuple(shape)  # every later array of this part must match it exactly
    return want["self"][2]


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
