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


NOISE_MARGIN = 10  # live float32 checks: a field may differ by this many times refimpl's own float32 noise there


def compare(ours: Dict[str, np.ndarray], expected: Dict[str, np.ndarray], dtype: str, where: str,
            noise: Dict[str, float] = None) -> List[str]:
    """Every field upstream returned, and no other, within TOL[dtype] (or NOISE_MARGIN x noise[field] when
    that is larger); returns failure messages."""
    problems = []
    missing, extra = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    if missing or extra:
        problems.append(f"{where}: fields differ from upstream: missing {missing}, unexpected {extra}")
    for key in sorted(set(expected) & set(ours)):
        problems += compare_tensor(ours[key], expected[key], dtype, f"{where} field {key}", (noise or {}).get(key))
    return problems


def float32_noise(ours32: Dict[str, np.ndarray], ours64: Dict[str, np.ndarray]) -> Dict[str, float]:
    """{field: normwise relative difference of refimpl's float32 and float64 outputs}: the rounding error a
    correct float32 computation shows on that tensor and input (it grows with magnitude and depth)."""
    noise = {}
    for key, value in ours32.items():
        other = ours64.get(key)
        if other is None or np.shape(other) != np.shape(value) or np.asarray(value).dtype.kind != "f":
            continue
        a, b = np.asarray(value, np.float64), np.asarray(other, np.float64)
        finite = np.isfinite(a) & np.isfinite(b)
        scale = float(np.abs(np.where(finite, b, 0)).max(initial=0))
        if scale > 0:
            noise[key] = float(np.abs(np.where(finite, a - b, 0)).max(initial=0)) / scale
    return noise


def compare_tensor(ours, expected, dtype: str, where: str, noise: float = None) -> List[str]:
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
    tol = max(TOL[dtype], NOISE_MARGIN * noise) if noise is not None else TOL[dtype]
    if rel > tol:
        why = f" ({NOISE_MARGIN} x refimpl's float32 noise {noise:.1e})" if tol > TOL[dtype] else ""
        return [f"{where}: max abs diff {diff[worst]:.3e} at {tuple(int(i) for i in worst)} "
                f"(ours {ours[worst]!r}, upstream {expected[worst]!r}), relative {rel:.3e} > {tol:.1e}{why}"]
    return []


def replay(model, case: GoldenCase, dtype: str) -> List[Dict[str, np.ndarray]]:
    """Every step's output fields, each step's past_key_values from refimpl's own previous step."""
    outputs, past = [], None
    for step, spec in enumerate(case.steps):
        args = case.step_inputs(step, dtype)
        if spec["use_past"]:
            args["past_key_values"] = past
        output = model(**args)
        past = output.past_key_values if "past_key_values" in output.keys() else None
        outputs.append(output_fields(output))
    return outputs


def run_case(model_loader, case: GoldenCase, dtype: str, label: str = None, tolerance: str = None,
             with_noise: bool = False) -> List[str]:
    """Replay a case with refimpl and compare with the golden run `label` (default: the dtype's;
    "float64_upstream_islands" for upstream's island run) at the tolerance of `tolerance` (default: the
    dtype's). with_noise (float32): also allow NOISE_MARGIN x refimpl's own float32 noise per field."""
    label = label or dtype
    outputs = replay(model_loader(case.directory, case.architecture, dtype), case, dtype)
    exact = replay(model_loader(case.directory, case.architecture, "float64"), case, "float64") if with_noise else None
    problems = []
    for step, ours in enumerate(outputs):
        noise = float32_noise(ours, exact[step]) if exact is not None else None
        problems += compare(ours, case.expected(step, label), tolerance or dtype, f"[{case.id} step {step} {label}]",
                            noise)
    return problems
