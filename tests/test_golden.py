"""Every golden case of every family, whole tensors, every output field, float32 and float64.

Expected values are upstream's (golden/capture.py); see tests/golden.py for the tolerance.
"""
import json

import numpy as np
import pytest

from golden import DTYPES, GOLDEN, REGENERATE, cases, run_case

FAMILIES = sorted(json.loads((GOLDEN / "manifest.json").read_text())["families"])
ALL = [case for family in FAMILIES for case in cases(family)]


def test_golden_files_present():
    assert "opt" in FAMILIES and len(ALL) > 50, f"golden cases missing; {REGENERATE}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL, ids=lambda c: f"{c.family}/{c.id}")
def test_golden(case, dtype, load_model):
    problems = run_case(load_model, case, dtype)
    assert not problems, "\n".join(problems) + f"\n({REGENERATE})"


def test_float32_tolerance_follows_refimpls_own_noise():
    """Live float32 checks allow NOISE_MARGIN x refimpl's float32-vs-float64 difference on the field, never
    less than TOL: the check itself can fail."""
    from golden import NOISE_MARGIN, compare_tensor, float32_noise

    expected = np.linspace(-1, 1, 50)
    off = expected + 3e-5  # relative 3e-5: above TOL, inside 10 x a noise of 1e-5
    assert compare_tensor(off, expected, "float64", "x", None)
    assert compare_tensor(off, expected, "float32", "x", None)
    assert not compare_tensor(off, expected, "float32", "x", 1e-5)
    assert compare_tensor(off, expected, "float32", "x", 1e-7)
    assert compare_tensor(expected + 2e-4, expected, "float32", "x", 1e-5)
    noise = float32_noise({"a": np.float32(expected).astype(np.float64) + 1e-6}, {"a": expected})
    assert abs(noise["a"] - 1e-6) < 1e-7 and NOISE_MARGIN == 10
