"""Checkpoint files -> {upstream state-dict name: ndarray}, and the match against a model's parameters.

Two steps, kept apart:
1. `read_state_dict(path)`: the tensors in the files, under the names the files use. A directory is
   searched in upstream's order (modeling_utils.py PreTrainedModel.from_pretrained): model.safetensors,
   model.safetensors.index.json (shards), pytorch_model.bin, pytorch_model.bin.index.json. The
   readers live in refimpl/formats/; no torch, no code from the checkpoint is ever run.
2. `match_params(state, expected, ...)`: the parameters one architecture needs, named as that
   architecture names them (upstream's prefix variants resolved, tied weights filled in), checked
   for shape, and cast to the compute dtype. Anything missing or mis-shaped is an error naming
   the file and key; nothing half-loaded is returned.

The readers memory-map the files; match_params copies every parameter a model keeps (mmap=False, the
default), so a loaded model never reads its files again: truncating or rewriting a weight file after
loading changes nothing (with memory-mapped weights, truncation kills the process with SIGBUS on the
next forward and an in-place rewrite silently changes the model). mmap=True keeps parameters that need
no cast as read-only views of the files, so worker processes loading the same checkpoint share its
pages (the page cache) instead of each holding a copy; the price is that risk: never modify or replace
a checkpoint in place while a process uses it with mmap=True (write a new file and rename it instead).

`resolve_checkpoint(name, cache_dir, revision)` turns a repo id ("facebook/opt-125m") into its
snapshot directory in the Hugging Face cache (offline; see refimpl/formats/hub_cache.py).
"""
from __future__ import annotations

import mmap as mmap_module
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from .formats import CheckpointError, load_json, regular_file
from .formats.hub_cache import hub_cache_dir, resolve_checkpoint
from .formats.safetensors_file import read_safetensors
from .formats.torch_pickle import read_torch_file

__all__ = ["CheckpointError", "StateDict", "read_state_dict", "read_weight_file", "match_params",
           "resolve_checkpoint", "hub_cache_dir", "read_safetensors", "read_torch_file", "WEIGHT_FILES"]

SAFETENSORS = "model.safetensors"
WEIGHT_FILES = (SAFETENSORS, "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class StateDict(dict):
    """{name: ndarray} that also remembers which file each tensor came from (`files[name]`), for messages."""

    def __init__(self, tensors=(), files: Optional[Mapping[str, str]] = None):
        super().__init__(tensors)
        self.files: Dict[str, str] = dict(files or {})


def read_state_dict(path, cache_dir=None, revision: Optional[str] = None) -> StateDict:
    """Read every tensor of a checkpoint directory, or of one weight file (.safetensors, .bin, .index.json).

    path may also be a repo id ("org/name") already in the Hugging Face cache (see resolve_checkpoint).
    """
    path = resolve_checkpoint(path, cache_dir=cache_dir, revision=revision)
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise CheckpointError(f"no weights found in {path}: expected one of {', '.join(WEIGHT_FILES)}")
        path = found[0]
    elif not path.exists():
        raise CheckpointError(f"no weights found: {path} does not exist (expected a directory holding "
                              f"{SAFETENSORS} or another of {', '.join(WEIGHT_FILES[1:])})")
    return read_weight_file(path)


def read_weight_file(file: Path) -> StateDict:
    """One file by its name: *.index.json -> its shards; *.safetensors; anything else -> torch.save format."""
    file = regular_file(file, "weight file")  # a FIFO or device would block or never end: refused unopened
    if file.name.endswith(".index.json"):
        return read_sharded(file)
    reader = read_safetensors if file.suffix == ".safetensors" else read_torch_file
    tensors = reader(file)
    return StateDict(tensors, {k: str(file) for k in tensors})


def read_sharded(index_file: Path) -> StateDict:
    """An index ({"weight_map": {name: shard file}}) -> every tensor of every shard, each shard read once."""
    index = load_json(index_file, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())):
        raise CheckpointError(f"{index_file}: expected a non-empty \"weight_map\": {{tensor name: shard file}}")
    state = StateDict()
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard:  # save_pretrained writes bare file names next to the index
            raise CheckpointError(f"{index_file}: shard name {shard!r} must be a file name in the same directory")
        if shard.endswith(".index.json"):  # an index naming an index (itself, or a cycle): never nested
            raise CheckpointError(f"{index_file}: shard {shard!r} is an index file; shards must be weight files")
        file = index_file.parent / shard
        if not file.exists():
            raise CheckpointError(f"{index_file}: shard {shard} is missing ({file} does not exist)")
        tensors = read_weight_file(file)
        for key in tensors:
            if key in state:
                raise CheckpointError(f"{file}: tensor {key!r} is also in {state.files[key]}")
        state.update(tensors)
        state.files.update(tensors.files)
    for key, shard in weight_map.items():
        if key not in state or Path(state.files[key]).name != shard:
            where = f"it is in {state.files[key]}" if key in state else "no shard holds it"
            raise CheckpointError(f"{index_file}: the index puts {key!r} in {shard}, but {where}")
    return state


def match_params(
    state: Mapping[str, np.ndarray],
    expected: Mapping[str, Tuple[int, ...]],
    dtype,
    base_prefix: str = "",
    tied: Optional[Mapping[str, str]] = None,
    ignore: Iterable[str] = (),
    source: str = "checkpoint",
    defaults: Optional[Mapping[str, Callable[[Tuple[int, ...]], np.ndarray]]] = None,
    mmap: bool = False,
) -> Dict[str, np.ndarray]:
    """Pick, rename, check and cast the parameters one architecture needs.

    expected: {name: shape} in the architecture's own naming (e.g. `model.decoder.layers.0.fc1.weight`).
    base_prefix: upstream's `base_model_prefix` ("model", "led", "nezha"); a checkpoint saved from the
      base model lacks it, one saved from a head has it: both load, either way round.
    tied: {name: source name} for weights upstream ties (lm_head <- embed_tokens) when the file lacks them.
    ignore: name suffixes of buffers upstream may save but we recompute (not reported as unexpected).
    defaults: {name: shape -> array} for buffers upstream fills in when a file lacks them
      (its `_keys_to_ignore_on_load_missing`, e.g. LED's `final_logits_bias`, zeros).
    Float weights (float16, float32, float64, bfloat16 already decoded) are cast to `dtype`; a
    non-float weight where a float is expected is an error.
    mmap: False (default): every parameter is a private copy (tied names share one), so the model never
      reads the files again. True: a parameter needing no cast stays a read-only view of the file's memory
      map, shared between processes; see the module docstring for the risk.
    Every name and shape is checked before anything is allocated (a config claiming a huge vocabulary
    fails on the shape of the weights present, not on allocating a default buffer of that size).
    """
    dtype = np.dtype(dtype)
    tied, defaults = dict(tied or {}), dict(defaults or {})
    files = getattr(state, "files", {})
    lookup = _name_variants(state, base_prefix)
    keys, missing = {}, []  # name -> key in the file, or None for a default buffer
    for name, shape in expected.items():
        key = lookup.get(name)
        if key is None and name in tied and lookup.get(tied[name]) is not None:
            key = lookup[tied[name]]
        if key is None and name not in defaults:
            missing.append(f"{name} {tuple(shape)}")
            continue
        keys[name] = key
        if key is not None:
            _check_weight(state[key], files.get(key, source), key, name, shape)
    if missing:
        raise CheckpointError(f"{source}: missing weights: " + ", ".join(missing))
    params, copies = {}, {}  # copies: key -> its array in the compute dtype, made once (tied names share it)
    for name, key in keys.items():
        if key is None:
            params[name] = np.ascontiguousarray(defaults[name](tuple(expected[name])), dtype=dtype)
            continue
        if key not in copies:
            array = state[key]
            copies[key] = (np.ascontiguousarray(array, dtype=dtype) if mmap
                           else np.array(array, dtype=dtype, order="C", copy=True))
            if not mmap:
                release_pages(array)  # the copy is what the model keeps: RSS holds each weight once
        params[name] = copies[key]
    used = {key for key in keys.values() if key is not None}
    unexpected = sorted(k for k in set(state) - used if not k.endswith(tuple(ignore)))
    if unexpected:  # one warning per load, listing them all
        warnings.warn(f"{source}: ignoring {len(unexpected)} unexpected weights: {', '.join(unexpected[:8])}"
                      + (" ..." if len(unexpected) > 8 else ""), stacklevel=3)
    return params


def release_pages(array) -> None:
    """Drop the pages of a memory-mapped `array` from this process (MADV_DONTNEED; they stay in the page cache,
    and a later read maps them again). After copying a weight out of its file, the file's pages would otherwise
    count in the peak RSS a second time until the whole map is closed (XGLM-564M: 4.4 GB instead of 2.4)."""
    base = array
    while base is not None and not isinstance(base, mmap_module.mmap):
        base = getattr(base, "base", None)
    if base is None or not hasattr(base, "madvise") or not array.nbytes:
        return
    begin = array.ctypes.data - np.frombuffer(base, np.uint8).ctypes.data  # byte offset in the map
    page = mmap_module.PAGESIZE
    lo, hi = begin // page * page, min(len(base), -(-(begin + array.nbytes) // page) * page)
    if hi > lo:
        base.madvise(mmap_module.MADV_DONTNEED, lo, hi - lo)


def _check_weight(array, where: str, key: str, name: str, shape) -> None:
    if tuple(array.shape) != tuple(shape):
        raise CheckpointError(f"{where}: weight {key!r} has shape {tuple(array.shape)}, but the config "
                              f"expects {tuple(shape)} for {name!r}")
    if array.dtype.kind != "f":
        raise CheckpointError(f"{where}: weight {key!r} has dtype {array.dtype}, expected a floating-point tensor")


def _name_variants(state: Iterable[str], base_prefix: str) -> Dict[str, str]:
    """{name the model may ask for: key in the file}: the key itself, then upstream's renames.

    modeling_utils.py _load_pretrained_model: `_fix_key` renames "gamma" -> "weight" and "beta" -> "bias"
    (old TF-style LayerNorm names), and the base-model prefix is added or removed so that a base model
    loads a head checkpoint and a head model loads a base checkpoint. Exact names win over variants.
    """
    lookup = {k: k for k in state}
    fixed = {k: _fix_key(k) for k in state}
    for key, new in fixed.items():
        lookup.setdefault(new, key)
    if base_prefix:
        p = base_prefix + "."
        for key, new in fixed.items():
            for name in (key, new):
                lookup.setdefault(name[len(p):] if name.startswith(p) else p + name, key)
    return lookup


def _fix_key(key: str) -> str:  # modeling_utils.py _fix_key (substring replace, as upstream; beta first)
    if "beta" in key:
        return key.replace("beta", "bias")
    if "gamma" in key:
        return key.replace("gamma", "weight")
    return key
