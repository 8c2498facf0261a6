"""Checks and conversions of caller inputs, with errors that say what was expected.

Every model entry point passes its arrays through here before any computation, so a wrong shape
or an id outside the vocabulary is reported as such rather than as an IndexError deep inside.
"""
from __future__ import annotations

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


def within_table(length, table_rows, what):
    if length > table_rows:
        raise ValueError(f"{what}: position {length - 1} is past the position table of {table_rows} rows")
