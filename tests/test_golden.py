"""Every golden case of every family, whole tensors, every output field, float32 and float64.

Expected values are upstream's (golden/capture.py); see tests/golden.py for the tolerance.
"""
import json

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
