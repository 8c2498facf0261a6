"""Where does another implementation part ways with refimpl, and is it more than float32 noise?

    from refimpl.compare import compare, trace_model
    reference, noise = trace_model(model, inputs)           # refimpl float64 trace + its float32 noise
    report = compare(reference, their_dump, noise)          # their_dump: {upstream module name: array}
    report.first_divergence                                 # the first module past its noise floor, or None

Errors are normwise, as in the golden tests: `max|candidate - reference| / max|reference|` over the
tensor. The noise floor of a tensor is refimpl's own float32-vs-float64 difference for that tensor on the
same inputs (the rounding a correct float32 implementation may show there; it grows with depth). A tensor
diverges when its error exceeds MARGIN times its noise floor, and at least FLOOR (a relative error below
FLOOR is float32 rounding wherever it stands). The first divergence, in the reference's execution order,
names the module where the other implementation goes wrong; what follows it inherits the error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np

from .trace import tracing

MARGIN = 10.0   # how many noise floors an error may reach before it is a divergence
FLOOR = 1e-6    # relative errors below this are never divergences (a few float32 roundings)


@dataclass
class TensorReport:
    name: str                 # the upstream module name ("" is the root module)
    shape: tuple              # the reference's shape
    max_abs: float            # max |candidate - reference|
    max_rel: float            # max_abs / max |reference|
    noise: Optional[float]    # the float32 noise floor (relative), when known
    diverges: bool
    note: str = ""            # e.g. "reshaped from (10, 12)", "shape (3, 4) vs (2, 5)"


@dataclass
class Comparison:
    tensors: List[TensorReport]
    first_divergence: Optional[TensorReport]
    missing: Dict[str, List[str]] = field(default_factory=dict)  # names on one side only

    def to_json(self) -> dict:
        return {"first_divergence": None if self.first_divergence is None else asdict(self.first_divergence),
                "tensors": [asdict(t) for t in self.tensors], "missing": self.missing}

    def table(self) -> str:
        """A readable report: one line per tensor, the first divergence marked, then what is missing."""
        lines = [f"{'module':<60} {'shape':<18} {'max abs':>10} {'max rel':>10} {'noise':>10}"]
        for t in self.tensors:
            mark = "  <-- first divergence" if t is self.first_divergence else ("  diverges" if t.diverges else "")
            noise = "-" if t.noise is None else f"{t.noise:.2e}"
            lines.append(f"{t.name or '<root>':<60} {str(t.shape):<18} {t.max_abs:>10.2e} {t.max_rel:>10.2e} "
                         f"{noise:>10}{mark}{'  ' + t.note if t.note else ''}")
        for side, names in self.missing.items():
            if names:
                lines.append(f"{len(names)} name(s) {side.replace('_', ' ')}: {', '.join(n or '<root>' for n in names)}")
        verdict = ("no divergence beyond noise" if self.first_divergence is None else
                   f"first divergence: {self.first_divergence.name or '<root>'}")
        return "\n".join(lines + [verdict])


def relative_error(candidate: np.ndarray, reference: np.ndarray):  # -> (max abs, max rel), normwise
    c, r = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    nan_c, nan_r = np.isnan(c), np.isnan(r)
    if not np.array_equal(nan_c, nan_r):
        return float("inf"), float("inf")  # NaN where the other has a number
    diff = np.abs(np.where(nan_r, 0.0, c - r))
    if not np.isfinite(diff).all():
        diff = np.where(np.isfinite(diff), diff, np.where(c == r, 0.0, np.inf))
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(np.where(np.isfinite(r), r, 0.0)).max(initial=0.0))
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


def _numeric(value, name):  # -> a float64 ndarray, or a clear error naming the entry
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"candidate[{name!r}] is not a numeric array (got {type(value).__name__})") from None


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
            noise: Optional[Mapping[str, float]] = None, margin: float = MARGIN, floor: float = FLOOR) -> Comparison:
    """Compare two {module name: array} dicts tensor by tensor, in the reference's order."""
    noise = noise or {}
    tensors, first = [], None
    for name, ref in reference.items():
        if name not in candidate:
            continue
        ref, cand, note = np.asarray(ref), _numeric(candidate[name], name), ""
        if cand.shape != ref.shape:
            if cand.size != ref.size:
                report = TensorReport(name, ref.shape, float("inf"), float("inf"), noise.get(name), True,
                                      f"shape {cand.shape}, reference {ref.shape}")
                tensors.append(report)
                first = first or report
                continue
            note, cand = f"reshaped from {cand.shape}", cand.reshape(ref.shape)
        max_abs, max_rel = relative_error(cand, ref)
        tolerance = max(margin * noise.get(name, 0.0), floor)
        report = TensorReport(name, ref.shape, max_abs, max_rel, noise.get(name), bool(max_rel > tolerance), note)
        tensors.append(report)
        if report.diverges and first is None:
            first = report
    missing = {"only_in_reference": [n for n in reference if n not in candidate],
               "only_in_candidate": [n for n in candidate if n not in reference]}
    return Comparison(tensors, first, missing)


def trace_model(model, inputs: Mapping, noise_model=None):  # -> (trace {name: array}, noise {name: relative})
    """Run `model` on `inputs` under a trace; with `noise_model` (the same checkpoint in the other dtype),
    also the float32-vs-float64 relative difference of every traced tensor."""
    with tracing() as trace:
        model(**inputs)
    if noise_model is None:
        return dict(trace), {}
    with tracing() as other:
        noise_model(**inputs)
    noise = {}
    for name, value in trace.items():
        if name in other and np.shape(other[name]) == np.shape(value):
            noise[name] = relative_error(other[name], value)[1]
    return dict(trace), noise
