"""Checkpoint files -> {upstream state-dict name: ndarray}, and the match against a model's parameters.

Two steps, kept apart:
1. `read_state_dict(path)`: the tensors in the files, under the names the files use.
2. `match_params(state, expected, ...)`: the parameters one architecture needs, named as that
   architecture names them (upstream's prefix variants resolved, tied weights filled in), checked
   for shape, and cast to the compute dtype. Anything missing or mis-shaped is an error naming
   the key; nothing half-loaded is returned.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names file and key."""


SAFETENSORS = "model.safetensors"


def read_state_dict(path) -> Dict[str, np.ndarray]:
    """Read every tensor of a checkpoint directory (or a single .safetensors file)."""
    path = Path(path)
    file = path / SAFETENSORS if path.is_dir() else path
    if not file.exists():
        raise CheckpointError(f"no weights found: {file} does not exist (expected {SAFETENSORS})")
    return read_safetensors(file)


def read_safetensors(file: Path) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{file}: not a readable safetensors file ({err})") from None


def match_params(
    state: Mapping[str, np.ndarray],
    expected: Mapping[str, Tuple[int, ...]],
    dtype,
    base_prefix: str = "",
    tied: Optional[Mapping[str, str]] = None,
    ignore: Iterable[str] = (),
    source: str = "checkpoint",
) -> Dict[str, np.ndarray]:
    """Pick, rename, check and cast the parameters one architecture needs.

    expected: {name: shape} in the architecture's own naming (e.g. `model.decoder.layers.0.fc1.weight`).
    base_prefix: upstream's `base_model_prefix` ("model", "led", "nezha"); a checkpoint saved from the
      base model lacks it, one saved from a head has it: both load, either way round.
    tied: {name: source name} for weights upstream ties (lm_head <- embed_tokens) when the file lacks them.
    ignore: name suffixes of buffers upstream may save but we recompute (not reported as unexpected).
    """
    dtype = np.dtype(dtype)
    tied = dict(tied or {})
    lookup = _prefix_variants(state, base_prefix)
    params, missing, used = {}, [], set()
    for name, shape in expected.items():
        key = lookup.get(name)
        if key is None and name in tied and lookup.get(tied[name]) is not None:
            key = lookup[tied[name]]
        if key is None:
            missing.append(f"{name} {tuple(shape)}")
            continue
        array = state[key]
        if tuple(array.shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: weight {key!r} has shape {tuple(array.shape)}, but the config expects {tuple(shape)} for {name!r}"
            )
        if array.dtype.kind != "f":
            raise CheckpointError(f"{source}: weight {key!r} has dtype {array.dtype}, expected a floating-point tensor")
        params[name] = np.ascontiguousarray(array, dtype=dtype)
        used.add(key)
    if missing:
        raise CheckpointError(f"{source}: missing weights: " + ", ".join(missing))
    unexpected = sorted(k for k in set(state) - used if not k.endswith(tuple(ignore)))
    if unexpected:
        warnings.warn(f"{source}: ignoring {len(unexpected)} unexpected weights: {', '.join(unexpected[:8])}"
                      + (" ..." if len(unexpected) > 8 else ""), stacklevel=3)
    return params


def _prefix_variants(state: Iterable[str], base_prefix: str) -> Dict[str, str]:
    """{name the model may ask for: key in the file}, adding/removing the base-model prefix."""
    lookup = {k: k for k in state}
    if base_prefix:
        p = base_prefix + "."
        for key in state:
            alt = key[len(p):] if key.startswith(p) else p + key
            lookup.setdefault(alt, key)
    return lookup
