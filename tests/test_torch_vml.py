"""refimpl.torch_vml without torch: torch's float32 exp/sin/cos (MKL's VML) against the mathematics
(within MKL's documented accuracy, under 1 ulp), their special values, and the error when MKL is missing.
Bit for bit against torch itself: tests/test_islands_live.py."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refimpl import torch_vml
from refimpl.models.nezha import relative_position_table
from refimpl.models.xglm import sinusoid_rows

needs_mkl = pytest.mark.skipif(not torch_vml.available(),
                               reason=f"MKL's runtime is not installed (pip install mkl=={torch_vml.MKL_VERSION})")
EXACT = {"exp": math.exp, "sin": math.sin, "cos": math.cos}


def ulps_from_exact(name, x):  # float32 [...] -> float64 [...]: |f(x) - exact| in float32 ulps of the exact value
    ours = getattr(torch_vml, name)(x).astype(np.float64)
    exact = np.array([EXACT[name](float(v)) for v in x.reshape(-1)]).reshape(x.shape)
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(ours - exact) / ulp


@needs_mkl
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(EXACT)), st.lists(st.floats(-80, 80, width=32), min_size=1, max_size=200))
def test_within_one_ulp_of_the_mathematics(name, values):
    x = np.array(values, dtype=np.float32)
    worst = ulps_from_exact(name, x).max()
    assert worst < 1, f"{name}: {worst:.3f} ulp from the exact value"


@needs_mkl
def test_not_correctly_rounded_everywhere():
    """Why refimpl needs torch's own functions: some entries are one ulp from the correctly rounded value."""
    x = (np.random.default_rng(0).standard_normal(20000) * 30).astype(np.float32)
    for name in sorted(EXACT):
        with np.errstate(over="ignore"):  # exp beyond float32's range: inf on both sides
            rounded = np.array([EXACT[name](float(v)) for v in x]).astype(np.float32)
        off = np.mean(getattr(torch_vml, name)(x) != rounded)
        assert 0.001 < off < 0.2, f"{name}: {off:.2%} of values not correctly rounded"


@needs_mkl
def test_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 88.8, -104.0, 3e38], dtype=np.float32)
    with np.errstate(all="ignore"):
        for name, exact in (("exp", np.exp), ("sin", np.sin), ("cos", np.cos)):
            ours, expected = getattr(torch_vml, name)(x), exact(x.astype(np.float64)).astype(np.float32)
            finite = np.isfinite(expected)
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected), err_msg=f"{name}: NaN pattern")
            np.testing.assert_array_equal(ours[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)])
            assert np.abs(ours[finite] - expected[finite]).max() <= np.spacing(np.abs(expected[finite])).max()
            assert np.signbit(ours[1]) == np.signbit(expected[1]), f"{name}(-0.0): sign"


@needs_mkl
def test_shapes_layouts_and_empty():
    x = (np.random.default_rng(1).standard_normal((3, 4, 5)) * 5).astype(np.float32)
    for name in sorted(EXACT):
        function = getattr(torch_vml, name)
        out = function(x.transpose(1, 2, 0))
        assert out.shape == (4, 5, 3) and out.dtype == np.float32
        np.testing.assert_array_equal(out, function(np.ascontiguousarray(x.transpose(1, 2, 0))))
        np.testing.assert_array_equal(function(x[:, ::2]), function(x)[:, ::2])
        assert function(np.zeros((0, 3), np.float32)).shape == (0, 3)


@needs_mkl
def test_tables_stay_near_the_correctly_rounded_ones():
    """as_torch tables: float32; XGLM's within one ulp of refimpl's correctly rounded float32 table (the same
    float32 angles), NEZHA's within the float32 rounding of its angles r * w (<= 40 here: half an ulp of 40)
    of the exact table."""
    ours, rounded = (sinusoid_rows(np.arange(300), 40, 1, np.float32, as_torch=flag) for flag in (True, False))
    assert ours.dtype == np.float32 and np.abs(ours - rounded).max() <= np.spacing(np.float32(1))
    ours, exact = relative_position_table(20, 16, np.float64, as_torch=True), relative_position_table(20, 16, np.float64)
    assert ours.dtype == np.float32 and np.abs(ours - exact).max() <= np.spacing(np.float32(40)) / 2 + 1e-7


def test_as_torch_tables_are_float32_only():
    with pytest.raises(ValueError, match="float32 table"):
        sinusoid_rows(np.arange(3), 8, None, np.float64, as_torch=True)


def test_missing_mkl_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch_vml, "_mkl", None)
    monkeypatch.setattr(torch_vml, "_candidates", lambda: iter(["/nonexistent/libmkl_rt.so.2"]))
    assert not torch_vml.available()
    with pytest.raises(torch_vml.MKLNotFound, match=r"pip install mkl==2024\.2\.0"):
        torch_vml.sin(np.zeros(3, np.float32))


@needs_mkl
@pytest.mark.parametrize("name", sorted(EXACT))
def test_values_do_not_depend_on_where_a_call_starts_or_ends(name):
    """torch hands MKL any sub-range of a tensor (its threads split it at arbitrary, unaligned offsets):
    each value must be the same whatever range it came in."""
    base = (np.random.default_rng(5).standard_normal(5000) * 50).astype(np.float32)
    function = getattr(torch_vml, name)
    whole = function(base)
    for start in range(0, 33):
        for length in (1, 7, 17, 100, 3001):
            np.testing.assert_array_equal(function(base[start:start + length]), whole[start:start + length],
                                          err_msg=f"{name}: values {start}..{start + length}")
