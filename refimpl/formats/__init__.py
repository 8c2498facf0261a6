"""Readers for the weight files upstream writes, with NumPy alone (no torch, no pickle of arbitrary code).

    safetensors_file.py   model.safetensors: JSON header + raw little-endian bytes, memory-mapped
    torch_pickle.py       pytorch_model.bin: PyTorch's zip format (and the older non-zip format),
                          read through a restricted unpickler that only rebuilds tensors
    hub_cache.py          where checkpoints live: a directory, or a repo id in the Hugging Face cache

Each reader returns {name in the file: ndarray}. Arrays are read-only views of a memory map where the
format stores raw bytes (so a checkpoint is not held in memory twice); float16 stays float16 (NumPy
has it); bfloat16, which NumPy lacks, is decoded to float32 (exact: bfloat16 is the top half of a
float32). Every failure is a CheckpointError that names the file and, where there is one, the key.
"""
from __future__ import annotations

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names file and key."""


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:  # bits [...] uint16 -> [...] float32
    """bfloat16 is the upper 16 bits of an IEEE float32: shift them back into place and reinterpret."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def tensor_size(shape) -> int:  # Python ints: no overflow whatever the file claims
    n = 1
    for d in shape:
        n *= d
    return n
