"""What every dump adapter shares: a framework's output -> its first array, a NameMap applied, the file.

A dump is {upstream module name: that module's first output} as float64 NumPy arrays, in execution order,
in upstream's layout (refimpl/trace.py). Written as safetensors, or .npz when the path ends in .npz.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from .tables import NameMap


def first_array(output) -> Optional[np.ndarray]:  # a layer's output -> its first array (float64), or None
    """A tuple, a list or a ModelOutput gives its first element (ModelOutput.to_tuple() skips None fields,
    as upstream's forward hooks see them); anything array-like becomes a float64 copy; the rest is None."""
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        output = output[0] if output else None
    if output is None or not hasattr(output, "shape") or not hasattr(output, "dtype"):
        return None
    value = np.array(output)  # a copy: eager tensors, jax arrays and NumPy alike
    return value.astype(np.float64) if value.dtype.kind in "fc" else None


def holds(when, context: Mapping[str, object]) -> bool:  # a table entry's condition (tables.py)
    return when is None or bool(context.get(when, False))


def model_context(model_class: str, config) -> Dict[str, object]:  # what a table entry's `when` may test
    head = "For" in model_class
    context = dict(vars(config)) if config is not None else {}
    context.update(head=head, base=not head)
    return context


def to_upstream(raw: Mapping[str, object], table: NameMap, context: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """{framework name: array} in execution order -> {upstream name: float64 array in upstream's layout};
    a name seen twice keeps its first value (a module's first call)."""
    dump: Dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if value is None or any(re.search(pattern, name) for pattern in table.drop):
            continue
        for pattern, replacement, when in table.rename:
            if holds(when, context):
                name = re.sub(pattern, replacement, name)
        dump.setdefault(name, value)
    for target, source, when in table.alias:
        if holds(when, context) and target not in dump and source in dump:
            dump[target] = dump[source]
    for name in dump:
        for pattern, change, when in table.layout:
            if holds(when, context) and re.search(pattern, name):
                dump[name] = change_layout(dump[name], change, name)
    return dump


def change_layout(value: np.ndarray, change: str, name: str) -> np.ndarray:
    if change == "rows" and value.ndim == 3:   # [B, T, X] -> [B*T, X]
        return value.reshape(-1, value.shape[-1])
    if change == "TBD" and value.ndim == 3:    # [B, T, D] -> [T, B, D]
        return np.ascontiguousarray(value.transpose(1, 0, 2))
    if change in ("rows", "TBD"):
        return value                            # already in upstream's layout
    raise ValueError(f"{name}: unknown layout change {change!r} (expected 'rows' or 'TBD')")


def family_of(config, tables: Mapping[str, NameMap], adapter: str) -> str:
    family = getattr(config, "model_type", None)
    if family not in tables:
        raise ValueError(f"{adapter} knows the families {', '.join(sorted(tables))}; this model's config has "
                         f"model_type {family!r}")
    return family


def finish(dump: Dict[str, np.ndarray], path) -> Dict[str, np.ndarray]:
    if path is not None:
        save_dump(dump, path)
    return dump


def save_dump(dump: Mapping[str, np.ndarray], path: Union[str, Path]) -> None:
    """{name: array} -> a .safetensors file (or .npz)."""
    path = Path(path)
    arrays = {name: np.ascontiguousarray(value) for name, value in dump.items()}
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
