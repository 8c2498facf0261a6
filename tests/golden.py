"""Reading golden cases and comparing refimpl's outputs with them (no torch needed).

Tolerance (one norm for every field): the normwise relative error
    max|ours - upstream| / max(max|upstream|, 1e-30) <= TOL[dtype]
over the whole tensor, with TOL = 1e-10 for float64 and 1e-5 for float32. A failure message names
the case, the step, the field, the max abs and relative difference and the index where it occurs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
from safetensors.numpy import load_file

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TOL = {"float32": 1e-5, "float64": 1e-10}
DTYPES = ("float32", "float64")
REGENERATE = "regenerate with `python golden/capture.py` (needs pip install -e '.[upstream]')"


@dataclass
class GoldenCase:
    family: str
    checkpoint: str
    architecture: str
    name: str
    steps: List[dict]
    note: str
    tensors: Dict[str, np.ndarray]

    @property
    def directory(self) -> Path:
        return GOLDEN / self.family / self.checkpoint

    @property
    def id(self) -> str:
        return f"{self.checkpoint}:{self.name}"

    def step_inputs(self, step: int, dtype) -> dict:
        """The call's keyword arguments: arrays (floats cast to dtype, as upstream's run cast them) + kwargs."""
        spec = self.steps[step]
        args = {}
        for arg in spec["arrays"]:
            value = self.tensors[f"{self.name}/{step}/input/{arg}"]
            args[arg] = value.astype(dtype) if value.dtype.kind == "f" else value
        args.update(spec["kwargs"])
        return args

    def expected(self, step: int, dtype: str) -> Dict[str, np.ndarray]:
        prefix = f"{self.name}/{step}/{dtype}/"
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def cases(family: str) -> Iterator[GoldenCase]:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    for entry in manifest["families"].get(family, []):
        if entry.get("kind", "forward") != "forward":  # generate() results are read by test_generation.py
            continue
        directory = GOLDEN / family / entry["checkpoint"]
        spec = json.loads((directory / "cases.json").read_text())
        tensors = load_file(str(directory / "cases.safetensors"))
        for case in spec["cases"]:
            yield GoldenCase(family, entry["checkpoint"], spec["architecture"], case["name"], case["steps"],
                             case.get("note", ""), tensors)


def flatten(prefix: str, value, out: dict) -> None:
    """Our output object -> {"field.i.j": array}, the same naming the capture used."""
    if value is None:
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = np.asarray(value)


def output_fields(output) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    for name, value in output.items():
        flatten(name, value, out)
    return out


def compare(ours: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], dtype: str, where: str) -> List[str]:
    """Every field upstream returned, and no other, within TOL[dtype]; returns failure messages."""
    problems = []
    missing, extra = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    if missing or extra:
        problems.append(f"{where}: fields differ from upstream: missing {missing}, unexpected {extra}")
    for key in sorted(set(expected) & set(ours)):
        problems += compare_tensor(ours[key], expected[key], dtype, f"{where} field {key}")
    return problems


def compare_tensor(ours, expected, dtype: str, where: str) -> List[str]:
    ours, expected = np.asarray(ours), np.asarray(expected)
    if ours.shape != expected.shape:
        return [f"{where}: shape {ours.shape}, upstream {expected.shape}"]
    if ours.dtype != expected.dtype:
        return [f"{where}: dtype {ours.dtype}, upstream {expected.dtype}"]
    if expected.size == 0:
        return []
    if expected.dtype.kind != "f":
        if not np.array_equal(ours, expected):
            return [f"{where}: integer values differ from upstream"]
        return []
    finite = np.isfinite(expected)
    if not np.array_equal(ours[~finite], expected[~finite], equal_nan=True) or not np.isfinite(ours[finite]).all():
        return [f"{where}: the pattern of inf/NaN entries differs from upstream"]
    diff = np.where(finite, np.abs(ours.astype(np.float64) - expected.astype(np.float64)), 0.0)
    scale = max(float(np.abs(np.where(finite, expected, 0)).max()), 1e-30)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    rel = float(diff[worst]) / scale
    if rel > TOL[dtype]:
        return [f"{where}: max abs diff {diff[worst]:.3e} at {tuple(int(i) for i in worst)} "
                f"(ours {ours[worst]!r}, upstream {expected[worst]!r}), relative {rel:.3e} > {TOL[dtype]:.0e}"]
    return []


def run_case(model_loader, case: GoldenCase, dtype: str, label: str = None, tolerance: str = None) -> List[str]:
    """Replay a case with refimpl (each step's past_key_values from our own previous step) and compare with
    the golden run `label` (default: the dtype's; "float64_upstream_islands" for upstream's island run) at
    the tolerance of `tolerance` (default: the dtype's)."""
    model = model_loader(case.directory, case.architecture, dtype)
    label = label or dtype
    problems, past = [], None
    for step, spec in enumerate(case.steps):
        args = case.step_inputs(step, dtype)
        if spec["use_past"]:
            args["past_key_values"] = past
        output = model(**args)
        past = output.past_key_values if "past_key_values" in output.keys() else None
        problems += compare(output_fields(output), case.expected(step, label), tolerance or dtype,
                            f"[{case.id} step {step} {label}]")
    return problems
