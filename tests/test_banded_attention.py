"""Banded (Longformer / LED) attention core: refimpl.banded_attention (reference, NumPy, Numba, torch layout).

Expected values come from (a) an independent dense formulation written here (the full T x T
masked score matrix), (b) plain dense attention when the window covers the sequence, and (c) live
upstream `LEDEncoderSelfAttention` (skipped without torch / transformers).
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from refimpl import accel
from refimpl import banded_attention as ba

needs_numba = pytest.mark.skipif(not accel.HAVE_NUMBA, reason="numba (and scipy) not installed")
# each implementation called directly (banded_attention's dispatch never runs Numba on float64)
IMPLEMENTATIONS = {"reference": ba.banded_attention_reference, "numpy": ba.banded_attention_numpy,
                   "numba": ba.banded_attention_numba}
FAST = ["numpy"] + (["numba"] if accel.HAVE_NUMBA else [])

# tolerance by dtype of the computation: float64 softmax -> 1e-12, float32 anywhere -> 1e-6
TOL = {"f64": 1e-12, "f32": 1e-6}


def assert_close(actual, expected, tol, case, field):
    """Whole-tensor comparison: |actual - expected| <= tol * max(1, max |expected|) everywhere (a
    normwise bound: a context entry is a sum of terms as large as the largest value), NaN only where
    both are NaN; the message names the case, field, max abs diff and where it occurs."""
    assert actual.shape == expected.shape, f"{case}: {field} shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{case}: {field} dtype {actual.dtype} != {expected.dtype}"
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    diff[np.isnan(a) & np.isnan(e)] = 0
    bad = np.isnan(diff) | (diff > tol * max(1.0, float(np.abs(np.nan_to_num(e)).max(initial=0))))
    if bad.any():
        where = np.unravel_index(np.argmax(np.nan_to_num(diff, nan=np.inf)), diff.shape)
        raise AssertionError(f"{case}: {field} max abs diff {np.nanmax(diff):.3e} (tol {tol:.0e}, "
                             f"{int(bad.sum())} elements out) at {tuple(int(x) for x in where)}: "
                             f"{a[where]!r} vs expected {e[where]!r}")


# ----------------------------------------------------------------------------------------------
# Independent formulation: the full T x T matrix, no blocks, no slots
# ----------------------------------------------------------------------------------------------

def dense_banded(q, k, v, w, key_bias, query_masked, gk, gv, global_bias, softmax_dtype):
    """-> context [B, H, T, d], band probabilities [B, H, T, X + 2w + 1], dense probs [B, H, T, X + T]."""
    B, H, T, d = q.shape
    X = gk.shape[2]
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    scores = q @ np.swapaxes(k, -1, -2) + key_bias[:, None, None, :]           # [B, H, T, T]
    scores = np.where(np.abs(i - j) <= w, scores, -np.inf)                     # outside the band
    g_scores = q @ np.swapaxes(gk, -1, -2) + global_bias[:, None, None, :]     # [B, H, T, X]
    full = np.concatenate([g_scores, scores], axis=-1)                         # [B, H, T, X + T]
    sm = q.dtype if softmax_dtype is None else softmax_dtype
    with np.errstate(over="ignore", invalid="ignore"):
        full = full.astype(sm)
        e = np.exp(full - full.max(axis=-1, keepdims=True))
        p = (e / e.sum(axis=-1, keepdims=True)).astype(q.dtype)
    p = np.where(query_masked[:, None, :, None], 0, p).astype(q.dtype)
    context = p[..., :X] @ gv + p[..., X:] @ v                                 # [B, H, T, d]
    # band layout: slot s of query i <-> key i - w + s (0 when outside the sequence)
    band = np.zeros((B, H, T, X + 2 * w + 1), q.dtype)
    band[..., :X] = p[..., :X]
    for s in range(2 * w + 1):
        for ii in range(T):
            jj = ii - w + s
            if 0 <= jj < T:
                band[:, :, ii, X + s] = p[:, :, ii, X + jj]
    return context, band, p


def make_case(rng, B, H, T, d, w, X, dtype, p_pad=0.2, p_global=0.15, scale=1.5):
    """Random q, k, v and masks in the layout the LED layer will build."""
    q, k, v = (rng.standard_normal((B, H, T, d)) * scale for _ in range(3))
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    pad = rng.random((B, T)) < p_pad
    is_global = (rng.random((B, T)) < p_global) & ~pad
    if X:
        # guarantee at least one global token so that X >= 1
        is_global[0, rng.integers(T)] = True
        pad &= ~is_global
        gk, gv, gb = ba.gather_global_keys(k, v, is_global)
    else:
        is_global[:] = False
        gk = gv = gb = None
    key_bias = ba.key_bias_from_mask(pad | is_global, dtype)
    return dict(q=q, k=k, v=v, one_sided_window=w, key_bias=key_bias, query_masked=pad,
                global_k=gk, global_v=gv, global_bias=gb)


def run(backend, case, softmax_dtype, block_size=None, output_probs=True):
    kw = dict(output_probs=output_probs, softmax_dtype=softmax_dtype)
    if backend != "reference":
        kw["block_size"] = block_size
    return IMPLEMENTATIONS[backend](**case, **kw)


def dense_of(case, softmax_dtype):
    q = case["q"]
    B, H, T, d = q.shape
    gk = case["global_k"] if case["global_k"] is not None else np.zeros((B, H, 0, d), q.dtype)
    gv = case["global_v"] if case["global_v"] is not None else np.zeros((B, H, 0, d), q.dtype)
    gb = case["global_bias"] if case["global_bias"] is not None else np.zeros((B, 0), q.dtype)
    return dense_banded(q, case["k"], case["v"], case["one_sided_window"], case["key_bias"],
                        case["query_masked"], gk, gv, gb, softmax_dtype)


# ----------------------------------------------------------------------------------------------
# Reference vs the dense formulation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("B,H,T,d,w,X", [(2, 3, 12, 5, 3, 0), (1, 2, 16, 7, 2, 2), (2, 1, 10, 3, 5, 1),
                                         (1, 1, 8, 4, 1, 3)])
@pytest.mark.parametrize("dtype,softmax_dtype,tol", [(np.float64, None, TOL["f64"]),
                                                     (np.float64, np.float32, TOL["f32"]),
                                                     (np.float32, np.float32, TOL["f32"])])
def test_reference_equals_dense(B, H, T, d, w, X, dtype, softmax_dtype, tol):
    case = make_case(np.random.default_rng(B * 1000 + T * 10 + w), B, H, T, d, w, X, dtype)
    name = f"B{B} H{H} T{T} d{d} w{w} X{X} {np.dtype(dtype).name} softmax {softmax_dtype}"
    ctx, probs = run("reference", case, softmax_dtype)
    d_ctx, d_probs, d_full = dense_of(case, softmax_dtype)
    assert_close(ctx, d_ctx, tol, name, "context")
    assert_close(probs, d_probs, tol, name, "probs")
    # nothing outside the band: the dense probabilities there are exactly 0
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    n_global = probs.shape[-1] - (2 * w + 1)               # X actually drawn (>= 1 when X > 0)
    assert np.all(d_full[..., n_global:][..., np.abs(i - j) > w] == 0), name


def test_masked_rows_zero_and_rows_sum_to_one():
    case = make_case(np.random.default_rng(7), 2, 3, 16, 4, 3, 2, np.float64)
    ctx, probs = run("reference", case, None)
    m = case["query_masked"]
    assert np.all(ctx[np.broadcast_to(m[:, None, :, None], ctx.shape)] == 0)
    assert np.all(probs[np.broadcast_to(m[:, None, :, None], probs.shape)] == 0)
    sums = probs.sum(-1)[np.broadcast_to(~m[:, None, :], probs.shape[:3])]
    assert np.abs(sums - 1).max() < 1e-12, f"row sums off by {np.abs(sums - 1).max():.2e}"
    # removed keys (pad, global) carry exactly zero probability inside the band
    w, X, T = 3, probs.shape[-1] - 7, 16
    removed = case["key_bias"] < 0
    for s in range(2 * w + 1):
        for i in range(T):
            j = i - w + s
            if 0 <= j < T:
                assert np.all(probs[removed[:, j] & ~m[:, i], :, i, X + s] == 0)


@pytest.mark.parametrize("backend", ["reference", "numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_window_equals_dense_attention(backend, dtype):
    # w >= T - 1: every query sees every key; banded == ordinary masked softmax attention
    rng = np.random.default_rng(3)
    B, H, T, d, w = 2, 3, 9, 5, 8
    q, k, v = (rng.standard_normal((B, H, T, d)).astype(dtype) for _ in range(3))
    key_bias = ba.key_bias_from_mask(rng.random((B, T)) < 0.3, dtype)
    key_bias[:, 0] = 0                                   # keep one visible key per row
    ctx, probs = IMPLEMENTATIONS[backend](q, k, v, w, key_bias, output_probs=True, softmax_dtype=None)
    s = q @ np.swapaxes(k, -1, -2) + key_bias[:, None, None, :]                # [B, H, T, T]
    e = np.exp(s - s.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    tol = TOL["f64"] if dtype == np.float64 else TOL["f32"]
    assert_close(ctx, (p @ v).astype(dtype), tol, f"full window {backend}", "context")
    for i in range(T):                                   # slot s <-> key i - w + s
        assert_close(probs[:, :, i, w - i:w - i + T], p[:, :, i].astype(dtype), tol,
                     f"full window {backend} query {i}", "probs")


# ----------------------------------------------------------------------------------------------
# NumPy == Numba == reference on drawn shapes and masks
# ----------------------------------------------------------------------------------------------

@st.composite
def cases(draw):
    w = draw(st.integers(1, 4))
    # a multiple of the window as the LED encoder pads it, sometimes not (the core accepts any T)
    T = 2 * w * draw(st.integers(1, 4)) + draw(st.sampled_from([0, 0, 0, 1, w]))
    B, H, d = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    X = draw(st.integers(0, 3))
    mode = draw(st.sampled_from(["f64", "f64-upstream", "f64-torch", "f32"]))
    seed = draw(st.integers(0, 2**31 - 1))
    p_pad = draw(st.sampled_from([0.0, 0.2, 0.6]))
    block = draw(st.sampled_from([None, 1, 3, 2 * w, 64]))
    return B, H, T, d, w, X, mode, seed, p_pad, block


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_backends_agree(params):
    B, H, T, d, w, X, mode, seed, p_pad, block = params
    dtype = np.float32 if mode == "f32" else np.float64
    softmax_dtype = {"f64": None, "f64-torch": ba.TORCH_FLOAT32}.get(mode, np.float32)
    tol = TOL["f64"] if mode == "f64" else TOL["f32"]
    case = make_case(np.random.default_rng(seed), B, H, T, d, w, X, dtype, p_pad=p_pad)
    name = f"B{B} H{H} T{T} d{d} w{w} X{X} {mode} pad{p_pad} block{block} seed{seed}"
    ref_ctx, ref_probs = run("reference", case, softmax_dtype)
    for backend in FAST:
        ctx, probs = run(backend, case, softmax_dtype, block)
        assert_close(ctx, ref_ctx, tol, f"{name} {backend}", "context")
        assert_close(probs, ref_probs, tol, f"{name} {backend}", "probs")
        ctx_only, none = run(backend, case, softmax_dtype, block, output_probs=False)
        assert none is None
        assert_close(ctx_only, ctx, 0.0, f"{name} {backend} without probs", "context")


def test_dtype_follows_inputs():
    for dtype in (np.float32, np.float64):
        case = make_case(np.random.default_rng(1), 1, 2, 8, 3, 2, 1, dtype)
        for backend in ["reference"] + FAST:
            ctx, probs = IMPLEMENTATIONS[backend](**case, output_probs=True)
            assert ctx.dtype == dtype and probs.dtype == dtype, (backend, dtype, ctx.dtype, probs.dtype)


def test_upstream_float64_mode_has_float32_probabilities():
    # softmax_dtype=float32 (the default, upstream's softmax(dtype=torch.float32)) on float64
    # inputs: every probability is a float32 value
    case = make_case(np.random.default_rng(2), 1, 2, 8, 3, 2, 1, np.float64)
    _, probs = ba.banded_attention(**case, output_probs=True, backend="numpy")
    assert np.array_equal(probs, probs.astype(np.float32).astype(np.float64))
    _, probs64 = ba.banded_attention(**case, output_probs=True, backend="numpy", softmax_dtype=None)
    assert not np.array_equal(probs64, probs64.astype(np.float32).astype(np.float64))


# ----------------------------------------------------------------------------------------------
# Without numba
# ----------------------------------------------------------------------------------------------

def test_dispatch_without_numba(monkeypatch):
    case = make_case(np.random.default_rng(5), 1, 2, 8, 3, 2, 1, np.float32)
    expected = ba.banded_attention_numpy(**case, output_probs=True)
    monkeypatch.setattr(accel, "HAVE_NUMBA", False)
    got = ba.banded_attention(**case, output_probs=True)
    assert_close(got[0], expected[0], 0.0, "no numba", "context")
    assert_close(got[1], expected[1], 0.0, "no numba", "probs")
    with pytest.raises(ValueError, match="numba"):
        ba.banded_attention(**case, backend="numba")


def test_import_without_numba_subprocess():
    # numba made unimportable: the package imports, HAVE_NUMBA is False, the default backend runs
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None
        import numpy as np
        from refimpl import accel, banded_attention as ba
        assert accel.HAVE_NUMBA is False and "numba" in accel.NUMBA_MISSING
        q = np.ones((1, 1, 4, 2), np.float32)
        ctx, _ = ba.banded_attention(q, q, q, 1)
        assert ctx.dtype == np.float32 and np.allclose(ctx, 1)
        print("ok")
    """)
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (dict(q=np.zeros((1, 2, 8), np.float32)), "4-D"),
    (dict(k=np.zeros((1, 2, 8, 4), np.float64)), "dtype"),
    (dict(v=np.zeros((1, 2, 9, 3), np.float32)), "same shape"),
    (dict(q=np.zeros((1, 2, 8, 3), np.int64), k=np.zeros((1, 2, 8, 3), np.int64),
          v=np.zeros((1, 2, 8, 3), np.int64)), "float32 or float64"),
    (dict(one_sided_window=-1), "one_sided_window"),
    (dict(key_bias=np.zeros((1, 7), np.float32)), "key_bias"),
    (dict(query_masked=np.zeros((2, 8), bool)), "query_masked"),
    (dict(global_k=np.zeros((1, 2, 1, 3), np.float32)), "together"),
    (dict(global_k=np.zeros((1, 2, 1, 3), np.float32), global_v=np.zeros((1, 2, 2, 3), np.float32)), "global_k"),
    (dict(global_bias=np.zeros((1, 1), np.float32)), "global_bias"),
])
@pytest.mark.parametrize("backend", ["reference", "numpy", pytest.param("numba", marks=needs_numba)])
def test_bad_input(change, match, backend):
    z = np.zeros((1, 2, 8, 3), np.float32)
    args = dict(q=z, k=z, v=z, one_sided_window=2)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        ba.banded_attention(**args, backend=backend)


def test_bad_backend():
    z = np.zeros((1, 1, 4, 2), np.float32)
    with pytest.raises(ValueError, match="backend"):
        ba.banded_attention(z, z, z, 1, backend="torch")


def test_numpy_threads_do_not_change_results():
    # blocks are independent: one thread or several give bit-identical output
    case = make_case(np.random.default_rng(11), 2, 3, 24, 4, 3, 2, np.float32)
    one = ba.banded_attention_numpy(**case, output_probs=True, block_size=4, n_threads=1)
    many = ba.banded_attention_numpy(**case, output_probs=True, block_size=4, n_threads=3)
    assert_close(many[0], one[0], 0.0, "threads", "context")
    assert_close(many[1], one[1], 0.0, "threads", "probs")
    if accel.HAVE_NUMBA:
        one = ba.banded_attention_numba(**case, output_probs=True, block_size=4, n_threads=1)
        many = ba.banded_attention_numba(**case, output_probs=True, block_size=4, n_threads=3)
        assert_close(many[0], one[0], 0.0, "numba threads", "context")
        assert_close(many[1], one[1], 0.0, "numba threads", "probs")
