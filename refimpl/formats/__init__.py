"""Readers for the weight files upstream writes, with NumPy alone (no torch, no pickle of arbitrary code).

    safetensors_file.py   model.safetensors: JSON header + raw little-endian bytes, memory-mapped
    torch_pickle.py       pytorch_model.bin: PyTorch's zip format (and the older non-zip format),
                          read through a restricted unpickler that only rebuilds tensors
    hub_cache.py          where checkpoints live: a directory, or a repo id in the Hugging Face cache

Each reader returns {name in the file: ndarray}. Arrays are read-only views of a memory map where the
format stores raw bytes (so reading does not hold a checkpoint in memory twice); refimpl.checkpoint's
match_params copies what a model keeps, so a loaded model never depends on the file again (unless the
caller opts into mmap=True). float16 stays float16 (NumPy has it); bfloat16, which NumPy lacks, is
decoded to float32 once per storage (exact: bfloat16 is the top half of a float32). Every failure is a
CheckpointError that names the file and, where there is one, the key.

Hostile files (README "Safety"): every size a file claims is checked against the bytes actually present
before anything is allocated; only regular files are opened (a FIFO or device would block or never
end); JSON is read with a size bound and its nesting depth error reported as a bad file.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np

MAX_JSON_BYTES = 100_000_000  # config.json, shard indexes, tokenizer files: a few MB at most in practice
MAX_DIMS = 32  # no checkpoint tensor has more; NumPy's own limit is 64


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names file and key."""


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:  # bits [...] uint16 -> [...] float32
    """bfloat16 is the upper 16 bits of an IEEE float32: shift them back into place and reinterpret."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def tensor_size(shape, limit: int = 1 << 62) -> int:
    """prod(shape) in linear time: 0 if any dimension is 0, else the product, or `limit` + 1 as soon
    as the running product passes `limit` (so a file claiming 200,000 huge dimensions costs nothing)."""
    if any(d == 0 for d in shape):
        return 0
    n = 1
    for d in shape:
        n *= d
        if n > limit:
            return limit + 1
    return n


def regular_file(file, what: str = "file") -> Path:
    """`file` as a Path if it is a regular file (symlinks followed); else a CheckpointError.

    Checked with stat() *before* open(): opening a FIFO blocks until a writer appears, and a device
    such as /dev/zero never ends."""
    file = Path(file)
    try:
        mode = os.stat(file).st_mode
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read {what} ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
        raise CheckpointError(f"{file}: {what} is {kind}; expected a regular file")
    return file


def read_bounded(file, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a huge or sparse file is refused unread)."""
    file = regular_file(file, what)
    try:
        with open(file, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read {what} ({err.strerror or err})") from None
    if len(data) > limit:
        raise CheckpointError(f"{file}: {what} is larger than {limit} bytes; refusing to read it")
    return data


def load_json(file, what: str = "JSON file", limit: int = MAX_JSON_BYTES, error=None):
    """The JSON value in `file`: a regular file, at most `limit` bytes, UTF-8, nesting within Python's
    recursion limit. Every failure is `error` (default CheckpointError) naming the file."""
    error = error or CheckpointError
    try:
        raw = read_bounded(file, limit, what)
    except CheckpointError as err:
        raise error(str(err)) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{file}: {what} is not valid UTF-8 ({err})") from None
    except RecursionError:
        raise error(f"{file}: {what} is nested too deeply to be a valid file") from None
    except ValueError as err:
        raise error(f"{file}: {what} is not valid JSON ({err})") from None
