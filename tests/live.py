"""Live differential checks against upstream (torch + transformers 4.37.2), shared by every family.

`live_problems(model, case, tmp_path)` saves an upstream model with save_pretrained, runs the case
upstream in float32 and float64 (golden/common.py, the same code the golden capture uses) and with
refimpl, and returns the comparison failures (tests/golden.py). Import this module only after
`pytest.importorskip("torch")`.
"""
import sys

import numpy as np

from golden import GOLDEN, GoldenCase, run_case

sys.path.insert(0, str(GOLDEN))
from common import Case, Step, randomize_, run_both_dtypes  # noqa: E402,F401  (re-exported for tests)

import refimpl  # noqa: E402


def _golden(model, case: Case, tmp_path, architecture, islands: bool) -> GoldenCase:
    """The model saved with save_pretrained and `case` run upstream (float32, float64 and, with `islands`,
    unpatched float64), as a golden case for tests/golden.py's run_case."""
    model.eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    tensors = {f"{case.name}/{k}": v for k, v in run_both_dtypes(model, case, islands).items()}
    for s, step in enumerate(case.steps):
        for arg, value in step.arrays.items():
            value = np.asarray(value)
            tensors[f"{case.name}/{s}/input/{arg}"] = value.astype(np.float64) if value.dtype.kind == "f" else value
    steps = [{"arrays": sorted(st.arrays), "kwargs": st.kwargs, "use_past": st.use_past} for st in case.steps]
    return GoldenCase("live", tmp_path.name, architecture or type(model).__name__, case.name, steps, "", tensors)


def _island_loader(tmp_path, islands):
    def load(_directory, arch, dtype):
        return refimpl.from_pretrained(tmp_path, architecture=arch, dtype=dtype, islands="upstream",
                                       islands_cpu=islands)
    return load


def live_problems(model, case: Case, tmp_path, architecture=None, islands=None):
    """Failures of refimpl against upstream on `case`: float32, float64 (upstream's float32 islands patched to
    float64: the exact mathematics) and, with `islands` ("avx2" or "avx512": the kernel torch runs here),
    refimpl's islands="upstream" against unpatched upstream float64, within 1e-10 for AVX2 (checked bit for
    bit) and float32 noise for AVX-512 (derived from ATen's code; no AVX-512 CPU has checked its bits)."""
    golden = _golden(model, case, tmp_path, architecture, islands is not None)

    def loader(_directory, arch, dtype):
        return refimpl.from_pretrained(tmp_path, architecture=arch, dtype=dtype)

    # float32: within 1e-5, or 10 x refimpl's own float32 noise on that field and input where it is larger
    problems = run_case(loader, golden, "float32", with_noise=True) + run_case(loader, golden, "float64")
    if islands is not None:
        island_problems = run_case(_island_loader(tmp_path, islands), golden, "float64", "float64_upstream_islands",
                                   tolerance="float64" if islands == "avx2" else "float32")
        problems += island_problems
    return problems


def island_problems(model, case: Case, tmp_path, islands_cpu, architecture=None):
    """Failures of refimpl's islands="upstream" (float64, torch's `islands_cpu` kernel) against upstream's own
    unpatched float64 run of `case`, within float64's 1e-10: every output field of every step."""
    golden = _golden(model, case, tmp_path, architecture, True)
    return run_case(_island_loader(tmp_path, islands_cpu), golden, "float64", "float64_upstream_islands")
