"""model.safetensors with NumPy alone: an 8-byte header length, a JSON header, then raw tensor bytes.

File layout (https://github.com/huggingface/safetensors, "Format"):

    [u64 little-endian N][N bytes of UTF-8 JSON][data buffer]
    JSON: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}

Offsets are relative to the data buffer. We check what the safetensors library checks (header size,
valid JSON, known dtype, `end - begin == prod(shape) * itemsize`, tensors tile the buffer with no gap
or overlap) and then hand out read-only views of one memory map of the buffer.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict

import numpy as np

from . import MAX_DIMS, CheckpointError, bfloat16_to_float32, regular_file, tensor_size

MAX_HEADER = 100_000_000  # safetensors' own limit (HeaderTooLarge)
DTYPES = {  # safetensors dtype name -> NumPy dtype (all little-endian); BF16 is decoded after reading
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def read_header(file: Path) -> tuple:
    """-> ({name: entry}, metadata, data_start, data_length), every entry checked against the file size."""
    size = regular_file(file, "safetensors file").stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file}: truncated safetensors file ({size} bytes, no header length)")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{file}: bad safetensors header length {n} (file has {size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{file}: safetensors header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{file}: safetensors __metadata__ must map strings to strings")
    data_length = size - 8 - n
    for name, entry in header.items():
        _check_entry(file, name, entry, data_length)
    _check_tiling(file, header, data_length)
    return header, metadata, 8 + n, data_length


def _check_entry(file: Path, name: str, entry, data_length: int) -> None:
    if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= set(entry)):
        raise CheckpointError(f"{file}: tensor {name!r:.200}: header entry needs dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not (isinstance(dtype, str) and dtype in DTYPES):
        raise CheckpointError(f"{file}: tensor {name!r:.200} has dtype {dtype!r:.200}; supported: {sorted(DTYPES)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_is_count(d) for d in shape)):
        raise CheckpointError(f"{file}: tensor {name!r:.200} has a bad shape {shape!r:.200} "
                              f"(expected a list of at most {MAX_DIMS} integers >= 0)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1] <= data_length):
        raise CheckpointError(f"{file}: tensor {name!r:.200} has bad data_offsets {offsets!r:.200} "
                              f"(expected [begin, end] with begin <= end <= {data_length}, the data size)")
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if 0 in shape and not _numpy_can_shape(shape, itemsize):  # no element, yet a shape NumPy refuses
        raise CheckpointError(f"{file}: tensor {name!r:.200} has shape {shape!r:.200}: beyond what NumPy can hold, "
                              f"even with no element (each dimension, and the product of the non-zero ones times "
                              f"{itemsize} bytes, must stay below 2**63)")
    elements = tensor_size(shape, data_length)  # data_length + 1 when the shape claims more than the data
    nbytes = elements * itemsize
    if offsets[1] - offsets[0] != nbytes:
        needs = f"{nbytes} bytes" if elements <= data_length else f"more than the {data_length} bytes of data"
        raise CheckpointError(f"{file}: tensor {name!r}: {dtype} {shape} needs {needs}, "
                              f"but data_offsets {offsets} span {offsets[1] - offsets[0]}")


def _numpy_can_shape(shape, itemsize: int) -> bool:
    limit = np.iinfo(np.intp).max
    return all(d <= limit for d in shape) and math.prod([d for d in shape if d] + [itemsize]) <= limit


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_tiling(file: Path, header: dict, data_length: int) -> None:
    """Tensors must tile the data buffer, back to back (safetensors: InvalidOffset, MetadataIncompleteBuffer)."""
    end = 0
    for name, entry in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, stop = entry["data_offsets"]
        if begin != end:
            raise CheckpointError(f"{file}: tensor {name!r} starts at byte {begin} of the data, expected {end} "
                                  "(overlapping or missing bytes)")
        end = stop
    if end != data_length:
        raise CheckpointError(f"{file}: the header describes {end} bytes of tensor data, the file holds "
                              f"{data_length} (truncated or padded file)")


def read_safetensors(file) -> Dict[str, np.ndarray]:
    """{name: read-only ndarray} memory-mapped from `file`; BF16 decoded to float32.

    The arrays map the file: refimpl.checkpoint.match_params copies what a model keeps (unless mmap=True)."""
    file = Path(file)
    try:
        header, _, start, length = read_header(file)
        data = (np.memmap(file, dtype=np.uint8, mode="r", offset=start, shape=(length,)) if length
                else np.zeros(0, np.uint8))
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read ({err})") from None
    out = {}
    for name, entry in header.items():
        begin, stop = entry["data_offsets"]
        array = data[begin:stop].view(DTYPES[entry["dtype"]]).reshape(entry["shape"])  # [bytes] -> shape
        out[name] = bfloat16_to_float32(array) if entry["dtype"] == "BF16" else array
    return out
