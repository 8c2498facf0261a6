"""Shared machinery of the golden capture scripts (needs torch and transformers==4.37.2).

A family's capture script builds tiny upstream models, calls `write_checkpoint(...)` for each with a
list of `Case`s, and this module:
1. randomises the weights from a fixed seed with scales that make attention peaked (upstream's init
   std of 0.02 gives nearly uniform softmax and hides mask bugs),
2. saves the model with upstream's own `save_pretrained` (real checkpoint format and names),
3. runs every case in float32 and in float64 (`model.double()` under a float64 default dtype, see
   UPSTREAM_NOTES.md) and writes every returned tensor to `cases.safetensors`, the case list to
   `cases.json`.

Golden layout, read by tests/golden.py:
    golden/<family>/<checkpoint>/config.json, model.safetensors      the checkpoint
    golden/<family>/<checkpoint>/cases.json                           [{name, architecture, steps: [...]}]
    golden/<family>/<checkpoint>/cases.safetensors                    tensors, keys:
        "<case>/<step>/input/<arg>"                  an array argument (floats stored as float64)
        "<case>/<step>/<dtype>/<field>[.<i>[.<j>]]"  an output; tuples flattened by index
"""
from __future__ import annotations

import json
import math
import platform
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent
SEED = 20240202
PEAKED_GAIN = 1.5  # q/k weights: scores ~ N(0, gain^4) so softmax rows are peaked but not one-hot
QK_NAMES = ("q_proj", "k_proj", "query", "key", "query_global", "key_global")


@dataclass
class Step:
    """One forward call. `arrays` are ndarray arguments; `kwargs` plain JSON values; `use_past` passes the
    previous step's past_key_values."""

    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    kwargs: Dict[str, Any] = field(default_factory=dict)
    use_past: bool = False


@dataclass
class Case:
    name: str
    steps: List[Step]
    note: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Deterministic weights with scales that keep activations O(1) and attention peaked."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        base = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        if p.ndim >= 2:
            if "embed" in name or "embeddings" in name:
                std = 1.0
            else:
                std = 1.0 / math.sqrt(p.shape[1])
                if base in QK_NAMES:
                    std *= PEAKED_GAIN
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("weight"):  # LayerNorm gains
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        else:  # biases
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def flatten(prefix: str, value: Any, out: Dict[str, np.ndarray]) -> None:
    """Tensors -> numpy under `prefix`; tuples/lists recurse with `.i` suffixes; None is skipped."""
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        out[prefix] = value.detach().cpu().numpy().copy()
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out)
    else:
        raise TypeError(f"cannot store {type(value)} at {prefix}")


def to_torch(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(dtype) if t.is_floating_point() else t


@torch.no_grad()
def run_case(model: torch.nn.Module, case: Case, dtype: torch.dtype) -> Dict[str, np.ndarray]:
    """Run a case in `dtype`; returns {"<step>/<field>": array}."""
    problem_type = getattr(model.config, "problem_type", None)
    out: Dict[str, np.ndarray] = {}
    past = None
    for s, step in enumerate(case.steps):
        kwargs = {k: to_torch(v, dtype) for k, v in step.arrays.items()}
        kwargs.update(step.kwargs)
        if step.use_past:
            kwargs["past_key_values"] = past
        result = model(**kwargs, return_dict=True)
        model.config.problem_type = problem_type  # upstream writes the inferred type back; undo it
        past = getattr(result, "past_key_values", None)
        for name, value in result.items():
            flatten(f"{s}/{name}", value, out)
    return out


def run_both_dtypes(model: torch.nn.Module, case: Case) -> Dict[str, np.ndarray]:
    """{"<step>/<dtype>/<field>": array} for float32 and float64 runs of the same float32 weights."""
    result = {}
    model.float()
    for key, v in run_case(model, case, torch.float32).items():
        step, name = key.split("/", 1)
        result[f"{step}/float32/{name}"] = v
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # upstream builds causal masks in the default dtype
    try:
        model.double()
        for key, v in run_case(model, case, torch.float64).items():
            step, name = key.split("/", 1)
            result[f"{step}/float64/{name}"] = v
    finally:
        torch.set_default_dtype(previous)
        model.float()
    return result


def write_checkpoint(family: str, name: str, model: torch.nn.Module, cases: List[Case]) -> dict:
    """Save the model with save_pretrained and every case's inputs and outputs; returns a manifest entry."""
    directory = ROOT / family / name
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    tensors: Dict[str, np.ndarray] = {}
    specs = []
    for case in cases:
        for s, step in enumerate(case.steps):
            for arg, value in step.arrays.items():
                value = np.asarray(value)
                tensors[f"{case.name}/{s}/input/{arg}"] = value.astype(np.float64) if value.dtype.kind == "f" else value
        for key, value in run_both_dtypes(model, case).items():
            tensors[f"{case.name}/{key}"] = value
        specs.append({"name": case.name, "note": case.note,
                      "steps": [{"arrays": sorted(st.arrays), "kwargs": st.kwargs, "use_past": st.use_past}
                                for st in case.steps]})
    save_file({k: np.array(v, order="C") for k, v in sorted(tensors.items())}, str(directory / "cases.safetensors"))
    architecture = type(model).__name__
    (directory / "cases.json").write_text(json.dumps({"architecture": architecture, "cases": specs}, indent=1) + "\n")
    return {"family": family, "checkpoint": name, "architecture": architecture, "cases": [c.name for c in cases]}


def versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "seed": SEED}
