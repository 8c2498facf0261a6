"""Primitives against independent formulations (Python's math module, textbook definitions)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refimpl import accel, ops


@pytest.mark.parametrize("dtype, tol", [(np.float64, 2.3e-16), (np.float32, 6.0e-8)])
def test_erf_matches_math_erf(dtype, tol):
    x = np.concatenate([np.random.default_rng(0).normal(0, 3, 100_000), [0.0, -0.0, 5.999, 6.0, 6.001, 10.0, 1e30, -np.inf]])
    x = x.astype(dtype)
    expected = np.array([math.erf(float(v)) for v in x])
    got = ops._erf(x)
    assert got.dtype == dtype
    assert np.abs(got - expected).max() <= tol
    assert np.isnan(ops._erf(np.array([np.nan], dtype)))[0]


@settings(max_examples=50, deadline=None)
@given(st.floats(-20, 20))
def test_gelu_is_x_phi_x(v):
    x = np.array([v])
    # erf is exact to 1 ulp, so 1 + erf(x) may differ by ~1e-16 absolutely (large relative error for x << 0)
    assert ops.gelu(x)[0] == pytest.approx(v * 0.5 * (1 + math.erf(v / math.sqrt(2))), rel=1e-15, abs=2e-16 * abs(v))


def test_layer_norm_definition():
    x = np.random.default_rng(1).normal(size=(3, 7))
    w, b = np.arange(7.0), np.ones(7)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ops.layer_norm(x, w, b, 1e-5), (x - mean) / np.sqrt(var + 1e-5) * w + b, rtol=1e-13)


def test_cross_entropy_definition_and_ignore_index():
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(5, 4)), np.array([0, 3, -100, 2, 1])
    keep = labels != -100
    expected = -np.mean([logits[i, labels[i]] - math.log(np.exp(logits[i]).sum()) for i in np.flatnonzero(keep)])
    assert ops.cross_entropy(logits, labels) == pytest.approx(expected, rel=1e-14)
    assert np.isnan(ops.cross_entropy(logits, np.full(5, -100)))  # torch: 0/0
    with pytest.raises(ValueError, match="label 7"):
        ops.cross_entropy(logits, np.array([7, 0, 0, 0, 0]))


def test_bce_with_logits_stable_form():
    x, y = np.array([-800.0, -1.0, 0.0, 2.0, 800.0]), np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    # -[y log s(x) + (1 - y) log(1 - s(x))]; for |x| = 800 the terms are exactly 800
    terms = [800.0, -math.log(1 - 1 / (1 + math.exp(1.0))), math.log(2), -math.log(1 / (1 + math.exp(-2.0))), 800.0]
    assert ops.bce_with_logits(x, y) == pytest.approx(np.mean(terms), rel=1e-12)


def test_causal_padding_mask_layout():
    mask = ops.causal_padding_mask(np.array([[0, 1, 1]]), 2, np.dtype(np.float64))  # past 1, 2 queries
    low = np.finfo(np.float64).min
    np.testing.assert_array_equal(mask[0, 0], [[low, 0, low], [low, 0, 0]])
    one = ops.causal_padding_mask(np.array([[1, 0, 1]]), 1, np.dtype(np.float32))  # one query: no causal part
    np.testing.assert_array_equal(one[0, 0], [[0, np.finfo(np.float32).min, 0]])


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="not supported"):
        ops.activation("nope")


@pytest.mark.parametrize("twin", ["gelu_numpy", "gelu_numba"])
def test_float32_gelu_twins_are_close_to_the_exact_gelu(twin):
    if twin == "gelu_numba" and not accel.HAVE_NUMBA:
        pytest.skip("numba not installed")
    x = np.concatenate([np.linspace(-12, 12, 20001), np.random.default_rng(0).normal(size=4999) * 3]).astype(np.float32)
    exact = ops.gelu_numpy(x.astype(np.float64))  # erf to float64 rounding (test_erf_matches_math_erf)
    fast = getattr(ops, twin)(x.reshape(5, -1)).reshape(-1)
    assert fast.dtype == np.float32
    assert np.abs(fast - exact).max() <= 5e-7, f"{twin}: max difference {np.abs(fast - exact).max():.2e}"


@pytest.mark.parametrize("shape, affine", [((3, 5, 768), True), ((700, 64), False), ((4, 1), True), ((0, 8), True)])
def test_float32_layer_norm_is_within_a_rounding_of_the_exact_one(shape, affine):
    """ops.layer_norm in float32 (the Numba twin when installed, else NumPy) against the textbook formula in
    float64: within a few float32 roundings; the NumPy twin too. One thread and several give the same bits."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    w, b = (rng.normal(size=shape[-1]).astype(np.float32) for _ in range(2)) if affine else (None, None)
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    exact = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    if affine:
        exact = exact * w + b
    scale = max(1.0, float(np.abs(exact).max(initial=0)))
    for fn in (ops.layer_norm, ops.layer_norm_numpy):
        got = fn(x, w, b, 1e-5)
        assert got.dtype == np.float32 and got.shape == shape
        err = float(np.abs(got - exact).max(initial=0)) / scale
        assert err <= 4e-7, f"{fn.__name__} {shape}: max relative difference {err:.2e}"
    if accel.HAVE_NUMBA and x.size:
        got = ops.layer_norm_numba(x, w, b, 1e-5)
        err = float(np.abs(got - exact).max(initial=0)) / scale
        assert err <= 4e-7, f"layer_norm_numba {shape}: max relative difference {err:.2e}"
        rows = x.reshape(-1, shape[-1])
        ones, zeros = np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)
        outs = []
        for n_threads in (1, 3):
            out = np.empty_like(rows)
            accel.on_threads(ops._layer_norm_rows, (rows, w if affine else ones, b if affine else zeros, 1e-5, out),
                             n_threads)
            outs.append(out)
        assert np.array_equal(outs[0], outs[1]), "threads changed the result"


SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.4e38], np.float32)


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="compares the Numba twins with NumPy (CI runs both passes)")
@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 700), width=st.integers(1, 900), broadcast=st.booleans(), in_place=st.booleans(),
       seed=st.integers(0, 2**31))
def test_elementwise_twins_are_bitwise_numpy(rows, width, broadcast, in_place, seed):
    """add and relu: one rounded operation per element, so the Numba twins (rows split over threads) give
    NumPy's bits, specials included (NaN stays NaN, -0.0 + 0.0 = 0.0, inf - inf = NaN)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, width)).astype(np.float32)
    a.flat[rng.integers(0, a.size, size=min(a.size, 5))] = rng.choice(SPECIALS, size=min(a.size, 5))
    b = rng.standard_normal(width if broadcast else (rows, width)).astype(np.float32)
    expected = a + b
    out = a.copy() if in_place else None
    got = ops.add_numba(out if in_place else a, b, out)
    assert got.dtype == np.float32 and got.shape == a.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)) or np.array_equal(got, expected, equal_nan=True)
    for step in (2, 3):  # the rows as split over threads (these sizes run on one: accel.STREAMING_WORK)
        out = a.copy() if in_place else np.full_like(a, np.nan)
        for first in range(step):
            ops._add_rows(out if in_place else a, b.reshape(-1, width), out, first, step)
        assert np.array_equal(out, expected, equal_nan=True), f"rows split in {step}"
    assert np.array_equal(ops.relu_numba(a), np.maximum(a, np.float32(0)), equal_nan=True)


def test_add_takes_numpy_for_other_shapes_and_dtypes():
    a = np.ones((2, 3), np.float32)
    assert np.array_equal(ops.add(a, np.ones((2, 1), np.float32)), np.full((2, 3), 2, np.float32))  # a column
    assert ops.add(a, np.ones(3)).dtype == np.float64                                             # promotion
    assert ops.add(a.T, np.ones(2, np.float32)).shape == (3, 2)                                   # not contiguous
