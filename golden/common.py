"""Shared machinery of the golden capture scripts (needs torch and transformers==4.37.2).

A family's capture script builds tiny upstream models, calls `write_checkpoint(...)` for each with a
list of `Case`s, and this module:
1. randomises the weights from a fixed seed with scales that make attention peaked (upstream's init
   std of 0.02 gives nearly uniform softmax and hides mask bugs),
2. saves the model with upstream's own `save_pretrained` (real checkpoint format and names),
3. runs every case in float32 and in float64 (`model.double()` under a float64 default dtype, see
   UPSTREAM_NOTES.md) and writes every returned tensor to `cases.safetensors`, the case list to
   `cases.json`. The float64 run is the exact mathematics: upstream's float32 islands are computed in
   float64 there (`float64_softmax` here; the sinusoid tables in capture_xglm.py and capture_nezha.py).
   With `islands=True` the float64 run is repeated unpatched (upstream's own float32 islands, as torch's
   CPU kernel of this machine computes them: recorded in the manifest) under the dtype key
   "float64_upstream_islands".

Golden layout, read by tests/golden.py:
    golden/<family>/<checkpoint>/config.json, model.safetensors      the checkpoint
    golden/<family>/<checkpoint>/cases.json                           [{name, architecture, steps: [...]}]
    golden/<family>/<checkpoint>/cases.safetensors                    tensors, keys:
        "<case>/<step>/input/<arg>"                  an array argument (floats stored as float64)
        "<case>/<step>/<dtype>/<field>[.<i>[.<j>]]"  an output; tuples flattened by index
"""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def float64_softmax():
    """Inside: `softmax(x, dtype=torch.float32)` on a float64 x runs in float64. Upstream's LED calls it so
    (modeling_led.py LEDEncoderSelfAttention, local and global attention: its float32 island), and torch's
    float32 sums differ between its AVX2 and AVX-512 kernels; patched, a float64 run is exact and the same
    on every CPU. Float32 inputs are untouched."""
    original = torch.nn.functional.softmax

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype == torch.float32 and input.dtype == torch.float64:
            dtype = None
        return original(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    torch.nn.functional.softmax = softmax
    try:
        yield
    finally:
        torch.nn.functional.softmax = original


@contextlib.contextmanager
def float64_default_dtype():  # upstream builds causal masks in the default dtype (UPSTREAM_NOTES.md)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def running_in(model: torch.nn.Module, dtype: torch.dtype, islands: bool = False):
    """Inside: the model in `dtype`; float64 under a float64 default dtype and, unless `islands`, without
    upstream's float32 softmax island. The model is float32 again afterwards."""
    try:
        with contextlib.ExitStack() as stack:
            if dtype == torch.float64:
                stack.enter_context(float64_default_dtype())
                if not islands:
                    stack.enter_context(float64_softmax())
            model.to(dtype)
            yield model
    finally:
        model.float()


def run_both_dtypes(model: torch.nn.Module, case: Case, islands: bool = False) -> Dict[str, np.ndarray]:
    """{"<step>/<dtype>/<field>": array} for float32 and float64 runs of the same float32 weights; the
    float64 run without upstream's float32 islands, and, with `islands`, once more with them."""
    runs = [("float32", torch.float32, False), ("float64", torch.float64, False)]
    if islands:
        runs.append(("float64_upstream_islands", torch.float64, True))
    result = {}
    for label, dtype, with_islands in runs:
        with running_in(model, dtype, with_islands):
            for key, v in run_case(model, case, dtype).items():
                step, name = key.split("/", 1)
                result[f"{step}/{label}/{name}"] = v
    return result


def write_checkpoint(family: str, name: str, model: torch.nn.Module, cases: List[Case], islands: bool = False) -> dict:
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
        for key, value in run_both_dtypes(model, case, islands).items():
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
            "python": platform.python_version(), "seed": SEED,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}  # the kernels of the islands cases
