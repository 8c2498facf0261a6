"""More promises of the kernels' plumbing: no spurious floating-point warnings where a function silences them
on purpose (float64's finfo.min cast to float32, fully masked rows, NaN), the fallback warning pointing at
the caller, the pool's threads, arguments forwarded through the dispatchers (backend, output_probs,
softmax_dtype, islands_cpu), a dominating global key in the banded softmax, and the head-mask check."""
import threading
import warnings

import numpy as np
import pytest

from refimpl import accel, ops
from refimpl import banded_attention as ba
from refimpl import relative_attention as ra
from refimpl.layers import check_head_mask
from refimpl.longformer import longformer_self_attention
from refimpl.torch_softmax import expf_sleef, float32_softmax_as_torch

BACKENDS = ["reference", "numpy"] + (["numba"] if accel.HAVE_NUMBA else [])


class no_warnings(warnings.catch_warnings):
    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("error")
        return self


def test_fallback_warning_names_the_caller_once(monkeypatch):
    """numba installed but unusable: one RuntimeWarning, attributed to the code that asked for a backend."""
    monkeypatch.delenv(accel.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(accel, "_WARN_FALLBACK", True)
    monkeypatch.setattr(accel, "NUMBA_MISSING", "scipy is not installed (pip install 'refimpl[numba]')")
    with pytest.warns(RuntimeWarning, match=r"^numba is installed but its kernels cannot run: scipy is not installed") as rec:
        accel.choose_backend(np.float32)
    assert len(rec) == 1 and rec[0].filename == __file__
    with no_warnings():
        accel.choose_backend(np.float32)  # only once
    monkeypatch.setattr(accel, "_WARN_FALLBACK", True)
    with no_warnings():
        accel.choose_backend(np.float64)  # float64 never runs a kernel: nothing to say


def test_pool_threads_are_named_and_each_part_runs_once():
    names = {}

    def kernel(first, step):
        names[first] = threading.current_thread().name

    accel.on_threads(kernel, (), 3)
    assert sorted(names) == [0, 1, 2]
    assert names[0] == threading.current_thread().name  # part 0 on the calling thread
    assert all(names[i].startswith("refimpl") for i in (1, 2)), names


def test_logsumexp_keeps_size_one_axes():
    x = np.array([[[0.0, np.log(3.0)]]])  # [1, 1, 2]
    got = ops.logsumexp(x)
    assert got.shape == (1, 1)
    np.testing.assert_allclose(got, [[np.log(4.0)]], rtol=1e-15)
    assert ops.logsumexp(np.zeros((1, 3)), axis=0).shape == (3,)


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="Numba is not installed")
def test_layer_norm_numba_of_a_constant_row_without_eps_is_nan_as_numpy():
    """0 / sqrt(0): NaN in both twins (torch too), not an exception."""
    x = np.ones((3, 4), np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = ops.layer_norm_numpy(x, None, None, 0.0)
    assert np.isnan(expected).all()
    assert np.isnan(ops.layer_norm_numba(x, None, None, 0.0)).all()


def test_silenced_floating_point_warnings_stay_silent():
    low64 = np.finfo(np.float64).min
    with no_warnings():
        assert np.isnan(ops._erf(np.array([np.nan, 1.0]))[0])
        assert np.isnan(ops._erf(np.array([np.nan], np.float32))[0])
        assert np.isnan(ops.cross_entropy(np.zeros((2, 3)), np.full(2, -100)))  # every row ignored: 0/0
        x = np.array([-np.inf, np.inf, np.nan, 1e30, -1e30, 0.0], np.float32)
        got = expf_sleef(x)
        assert got[0] == 0 and np.isinf(got[1]) and np.isnan(got[2]) and np.isinf(got[3]) and got[4] == 0
        rows = np.array([[low64, low64, low64], [0.0, low64, 1.0]])  # float64 min: -inf in float32
        p = float32_softmax_as_torch(rows)
        assert np.isnan(p[0]).all() and p[1, 1] == 0
        p = ba._softmax_rows(rows, np.dtype(np.float32))
        assert np.isnan(p[0]).all() and p[1, 1] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_banded_attention_with_float32_softmax_warns_nothing(backend):
    """A float64 run with upstream's float32 softmax: removed keys (float64 finfo.min) overflow to -inf in
    float32, fully masked queries give NaN rows that are then zeroed; all without a warning."""
    rng = np.random.default_rng(0)
    B, H, T, d, w = 2, 2, 6, 3, 2
    q, k, v = (rng.normal(size=(B, H, T, d)) for _ in range(3))
    removed = np.zeros((B, T), bool)
    removed[1, 1:] = True  # query 0 of row 1 then sees only keys 0 (itself)...
    removed[0, :3] = True  # ...and queries 0, 1 of row 0 see no key at all
    key_bias = ba.key_bias_from_mask(removed, np.float64)
    query_masked = np.zeros((B, T), bool)
    query_masked[0, :2] = True
    query_masked[1, 3:] = True  # (their keys, 1 .. 5, are all removed too: NaN rows, zeroed)
    with no_warnings():
        ctx, probs = ba.banded_attention(q, k, v, w, key_bias, query_masked, output_probs=True, backend=backend,
                                         softmax_dtype=np.float32)
    assert np.isfinite(ctx).all() and not probs[0, :, :2].any()
    np.testing.assert_allclose(probs[1, :, 0, w], 1.0)  # the one key left: its own


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_dominating_global_key(backend, dtype):
    """A global key scoring ~200 above every band key: the softmax's shift must be the maximum over the
    global columns too (exp(200) overflows float32), so that key takes all the weight."""
    rng = np.random.default_rng(1)
    B, H, T, d, w = 1, 1, 5, 2, 1
    q = np.zeros((B, H, T, d), dtype)
    q[..., 0] = 1
    k, v = rng.normal(size=(B, H, T, d)).astype(dtype) * 0.1, rng.normal(size=(B, H, T, d)).astype(dtype)
    gk = np.zeros((B, H, 1, d), dtype)
    gk[..., 0] = 200
    gv = np.ones((B, H, 1, d), dtype) * 7
    for sm in (np.float32, None):
        ctx, probs = ba.banded_attention(q, k, v, w, None, None, gk, gv, None, output_probs=True, backend=backend,
                                         softmax_dtype=sm, block_size=2)
        np.testing.assert_allclose(ctx, 7.0, rtol=1e-6, err_msg=f"{backend} {sm}")
        np.testing.assert_allclose(probs[..., 0], 1.0, rtol=1e-6)


@pytest.mark.parametrize("blocked", ["numpy"] + (["numba"] if accel.HAVE_NUMBA else []))
def test_blocked_backends_hand_torch_softmax_to_upstreams_layout(blocked):
    rng = np.random.default_rng(2)
    B, H, T, d, w = 2, 2, 30, 3, 9  # rows of X + 2w + 1 = 21 scores: AVX2's 8 lanes and AVX-512's 16 sum apart
    q, k, v = (rng.normal(size=(B, H, T, d)) for _ in range(3))
    gk, gv = rng.normal(size=(B, H, 2, d)), rng.normal(size=(B, H, 2, d))
    gb = np.array([[0.0, 0.0], [0.0, np.finfo(np.float64).min]])
    masked = np.zeros((B, T), bool)
    masked[1, -1] = True
    bits = {}
    for cpu in ("avx2", "avx512"):
        sm = ba.torch_float32(cpu)
        want = ba.banded_attention_torch_layout(q, k, v, w, None, masked, gk, gv, gb, output_probs=True, softmax_dtype=sm)
        run = {"numpy": ba.banded_attention_numpy, "numba": ba.banded_attention_numba}[blocked]
        got = run(q, k, v, w, None, masked, gk, gv, gb, output_probs=True, softmax_dtype=sm)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        got = ba.banded_attention(q, k, v, w, None, masked, gk, gv, gb, output_probs=True, softmax_dtype=sm,
                                  backend=blocked)
        np.testing.assert_array_equal(got[1], want[1])
        # the float32 softmax's values: every probability is a float32 number
        assert np.array_equal(got[1].astype(np.float32).astype(np.float64), got[1])
        bits[cpu] = got[1]
    assert not np.array_equal(bits["avx2"], bits["avx512"])  # the kernel's name reaches the softmax
    exact = ba.banded_attention(q, k, v, w, None, masked, gk, gv, gb, output_probs=True, softmax_dtype=None,
                                backend=blocked)
    ref = ba.banded_attention_reference(q, k, v, w, None, masked, gk, gv, gb, output_probs=True, softmax_dtype=None)
    np.testing.assert_allclose(exact[1], ref[1], rtol=1e-13, atol=1e-15)
    assert not np.array_equal(exact[1].astype(np.float32).astype(np.float64), exact[1])  # float64 softmax


def longformer_layer(rng, D, dtype):
    return {f"{n}.{kind}": (rng.normal(size=(D, D)) / np.sqrt(D) if kind == "weight" else rng.normal(size=D) * 0.1
                            ).astype(dtype)
            for n in ("query", "key", "value", "query_global", "key_global", "value_global") for kind in ("weight", "bias")}


def test_longformer_forwards_backend_and_islands(monkeypatch):
    rng = np.random.default_rng(3)
    B, T, H, D = 2, 8, 2, 6
    p = longformer_layer(rng, D, np.float64)
    x = rng.normal(size=(B, T, D))
    pad = np.zeros((B, T), bool)
    pad[1, 6:] = True
    is_global = np.zeros((B, T), bool)
    is_global[0, [1, 4]] = is_global[1, 0] = True
    calls = []
    real = ba.banded_attention_reference

    def spy(*args, **kwargs):
        calls.append(kwargs.get("softmax_dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ba, "banded_attention_reference", spy)
    out, probs, gprobs = longformer_self_attention(p, x, 4, H, pad, is_global, True, output_attentions=True,
                                                   backend="reference", islands_cpu="avx2")
    assert calls == [ba.torch_float32("avx2")]
    as32 = lambda a: np.array_equal(a.astype(np.float32).astype(np.float64), a, equal_nan=True)  # noqa: E731
    assert as32(probs) and as32(gprobs)  # both softmaxes: torch's float32 (upstream's island)
    calls.clear()
    out, probs, gprobs = longformer_self_attention(p, x, 4, H, pad, is_global, True, output_attentions=True,
                                                   backend="reference")
    assert calls == [None] and not as32(gprobs) and not as32(probs)
    assert probs.shape == (B, H, T, 2 + 4 + 1) and gprobs.shape == (B, H, 2, T)
    _, none, _ = longformer_self_attention(p, x, 4, H, pad, is_global, True, backend="reference")
    assert none is None


def test_check_head_mask_shapes():
    one = np.array([1.0, 0.0, 0.5])
    got = check_head_mask(one, 2, 3)
    np.testing.assert_array_equal(got, [one, one])
    full = np.arange(6.0).reshape(2, 3)
    assert check_head_mask(full, 2, 3) is full
    assert check_head_mask(None, 2, 3) is None
    with pytest.raises(ValueError, match=r"^cross_attn_head_mask must have shape \(2, 3\) or \(3,\), got \(3, 2\)$"):
        check_head_mask(full.T, 2, 3, "cross_attn_head_mask")
    with pytest.raises(ValueError, match=r"^head_mask must have shape \(2, 3\) or \(3,\), got \(2, 4\)$"):
        check_head_mask(np.ones(4), 2, 3)


def test_relative_attention_dispatch_forwards_output_probs():
    rng = np.random.default_rng(4)
    q, k, v = (rng.normal(size=(1, 2, 4, 3)) for _ in range(3))
    table = rng.normal(size=(3, 3))
    for backend in BACKENDS:
        with accel.set_backend(backend):
            ctx, none = ra.relative_attention(q, k, v, None, None, table, output_probs=False)
            assert none is None, backend
            ctx2, probs = ra.relative_attention(q, k, v, None, None, table)
            assert probs.shape == (1, 2, 4, 4), backend
            np.testing.assert_allclose(ctx, ctx2, rtol=1e-12)


# ---------------------------------------------------------------- layers: the stack runner and the decoder layer


def test_run_stack_keeps_what_was_asked_and_none_for_kinds_never_returned():
    from refimpl.inputs import OutputFlags
    from refimpl.layers import LayerOutput, run_stack

    def layer(i, x):  # self-attention only (a decoder-only model): no cross or global probabilities
        return LayerOutput(x + 1, attention=np.full(1, i), present=(i,))

    for cache in (False, True):
        for attn in (False, True):
            for hidden in (False, True):
                out = run_stack(3, np.zeros(2), layer, OutputFlags(cache, attn, hidden), {}, "layers")
                np.testing.assert_array_equal(out.last_hidden_state, [3, 3])
                assert out.cross_attentions is None and out.global_attentions is None
                assert (out.attentions is None) != attn
                if attn:
                    assert [a[0] for a in out.attentions] == [0, 1, 2]
                assert out.past_key_values == (((0,), (1,), (2,)) if cache else None)
                if hidden:
                    assert [h[0] for h in out.hidden_states] == [0, 1, 2]
                    assert len(out.with_final(np.zeros(2))) == 4
                else:
                    assert out.hidden_states is None and out.with_final(np.zeros(2)) is None


def decoder_params(rng, D, dtype=np.float64):
    p = {}
    for m in ("self_attn", "encoder_attn"):
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            p[f"{m}.{n}.weight"] = (rng.normal(size=(D, D)) / np.sqrt(D)).astype(dtype)
            p[f"{m}.{n}.bias"] = (rng.normal(size=D) * 0.1).astype(dtype)
    for n in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
        p[f"{n}.weight"], p[f"{n}.bias"] = np.ones(D, dtype), np.zeros(D, dtype)
    p["fc1.weight"], p["fc1.bias"] = (rng.normal(size=(2 * D, D)) / np.sqrt(D)).astype(dtype), np.zeros(2 * D, dtype)
    p["fc2.weight"], p["fc2.bias"] = (rng.normal(size=(D, 2 * D)) / np.sqrt(D)).astype(dtype), np.zeros(D, dtype)
    return p


def test_decoder_layer_forwards_clamp_to_min():
    """Scores of -inf everywhere (q . k = -2e40 in float32): OPT/XGLM's clamp at finfo.min makes the rows
    uniform, so the layer's output is finite (NaN without the clamp)."""
    from refimpl.layers import Params, decoder_layer

    rng = np.random.default_rng(5)
    D, T = 2, 3
    p = decoder_params(rng, D, np.float32)
    for m in ("self_attn", "encoder_attn"):
        p[f"{m}.q_proj.weight"][:] = 0
        p[f"{m}.k_proj.weight"][:] = 0
        p[f"{m}.q_proj.bias"][:] = 1e20
        p[f"{m}.k_proj.bias"][:] = -1e20
    x = rng.normal(size=(1, T, D)).astype(np.float32)
    enc = rng.normal(size=(1, 4, D)).astype(np.float32)
    zero_self, zero_enc = np.zeros((1, 1, T, T), np.float32), np.zeros((1, 1, 1, 4), np.float32)
    for cross in (False, True):
        kw = dict(encoder_states=enc, encoder_mask=zero_enc) if cross else {}
        with np.errstate(over="ignore", invalid="ignore"):
            out = decoder_layer(Params(p), x, 1, ops.relu, zero_self, norm_first=True, clamp_to_min=True, **kw)
            raw = decoder_layer(Params(p), x, 1, ops.relu, zero_self, norm_first=True, clamp_to_min=False, **kw)
        assert np.isfinite(out.hidden).all(), cross
        assert np.isnan(raw.hidden).all(), cross
        np.testing.assert_allclose(out.attention[0, 0], np.full((T, T), 1 / T), rtol=1e-6)
        if cross:
            np.testing.assert_allclose(out.cross_attention[0, 0], np.full((T, 4), 0.25), rtol=1e-6)


def test_decoder_layer_head_masks_and_cross_cache():
    """head_mask = 0 silences a head exactly as zero values would; the cross-attention keys and values come
    from the cache when it holds them (not from the encoder states passed again)."""
    from refimpl.layers import Params, decoder_layer

    rng = np.random.default_rng(6)
    D, H, T = 4, 2, 3
    p = decoder_params(rng, D)
    x, enc, other = rng.normal(size=(1, T, D)), rng.normal(size=(1, 5, D)), rng.normal(size=(1, 5, D))
    mask = np.zeros((1, 1, T, T))
    for m, key in (("self_attn", "head_mask"), ("encoder_attn", "cross_head_mask")):
        silent = dict(p)
        silent[f"{m}.v_proj.weight"] = np.zeros((D, D))
        silent[f"{m}.v_proj.bias"] = np.zeros(D)
        for norm_first in (True, False):
            got = decoder_layer(Params(p), x, H, ops.gelu, mask, norm_first=norm_first, encoder_states=enc,
                                **{key: np.zeros(H)})
            want = decoder_layer(Params(silent), x, H, ops.gelu, mask, norm_first=norm_first, encoder_states=enc)
            np.testing.assert_allclose(got.hidden, want.hidden, rtol=1e-13, atol=1e-14, err_msg=key)
    first = decoder_layer(Params(p), x, H, ops.gelu, mask, norm_first=True, encoder_states=other)
    assert len(first.present) == 4 and first.cross_attention.shape == (1, H, T, 5)
    past = (np.zeros((1, H, 0, D // H)),) * 2 + first.present[2:]  # an empty self cache, other's cross k/v
    again = decoder_layer(Params(p), x, H, ops.gelu, mask, norm_first=True, encoder_states=enc, past=past)
    np.testing.assert_allclose(again.hidden, first.hidden, rtol=1e-13)
    np.testing.assert_allclose(again.cross_attention, first.cross_attention, rtol=1e-13)


# ---------------------------------------------------------------- accel: Numba found; kernels' documented arithmetic


def test_numba_is_usable_when_numba_and_scipy_import():
    try:
        import numba  # noqa: F401
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        assert not accel.HAVE_NUMBA and accel.NUMBA_MISSING
        return
    assert accel.HAVE_NUMBA and accel.NUMBA_MISSING is None
    assert accel.backend_info()["numba_usable"] is True


def test_on_threads_with_two_parts():
    seen = []
    accel.on_threads(lambda first, step: seen.append((first, step)), (), 2)
    assert sorted(seen) == [(0, 2), (1, 2)]


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="Numba is not installed")
@pytest.mark.parametrize("n", [1, 3, 4, 7, 64, 1001])
def test_kernel_sums_and_exp_follow_their_documented_order_bit_for_bit(n):
    """sum_4_lanes: 4 strided float32 partial sums, (s0 + s1) + (s2 + s3), then the tail left to right;
    exp_f32_inplace: Cephes expf's steps in float32 (no fused multiply-add, no reassociation:
    fastmath=False). Both written here with NumPy float32 scalars."""
    f = np.float32
    rng = np.random.default_rng(n)
    buf = (rng.normal(size=n) * 100).astype(f)
    lanes = [f(0)] * 4
    n4 = n - n % 4
    for t in range(0, n4, 4):
        lanes = [lanes[j] + buf[t + j] for j in range(4)]
    total = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    for t in range(n4, n):
        total = total + buf[t]
    got = ops.sum_4_lanes(buf, n, f(0))
    assert f(got) == total, (got, total)
    x = (-np.abs(rng.normal(size=n)) * 30).astype(f)
    x[0] = f(-87.33654)  # the cut-off itself: still computed (exp = 1.1755e-38, the smallest normal float32)
    with np.errstate(over="ignore", under="ignore"):
        fx = np.floor(x * f(1.44269504088896341) + f(0.5))
        r = x - fx * f(0.693359375) - fx * f(-2.12194440e-4)
        y = ((((f(1.9875691500e-4) * r + f(1.3981999507e-3)) * r + f(8.3334519073e-3)) * r
              + f(4.1665795894e-2)) * r + f(1.6666665459e-1)) * r + f(5.0000001201e-1)
        y = y * (r * r) + r + f(1.0)
        two_n = (np.maximum(fx.astype(np.int32) + 127, 1) << 23).astype(np.int32).view(f)
        want = np.where(x < f(-87.33654), f(0), y * two_n)
    got = x.copy()
    ops.exp_f32_inplace(got, n, f(0))
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("backend", ["numpy"] + (["numba"] if accel.HAVE_NUMBA else []))
def test_add_of_large_float32_in_every_layout(backend):
    """ops.add on work large enough for the Numba rows: a broadcast [B, 1, D] operand, a transposed
    (non-contiguous) one, a non-contiguous out, mixed dtypes: a + b by NumPy's broadcasting every time."""
    rng = np.random.default_rng(8)
    B, T, D = 4, accel.SMALL_WORK // 256, 64
    a = rng.normal(size=(B, T, D)).astype(np.float32)
    cases = {"per batch row": (a, rng.normal(size=(B, 1, D)).astype(np.float32)),
             "transposed": (a, np.swapaxes(rng.normal(size=(B, D, T)).astype(np.float32), 1, 2)),
             "a transposed": (np.swapaxes(a, 1, 2).copy().swapaxes(1, 2), rng.normal(size=D).astype(np.float32)),
             "mixed dtypes": (a, rng.normal(size=D)),
             "rows": (a, rng.normal(size=(B, T, D)).astype(np.float32))}
    with accel.set_backend(backend):
        for name, (x, y) in cases.items():
            np.testing.assert_array_equal(ops.add(x, y), x + y, err_msg=name)
        out = np.empty((B, D, T), np.float32).swapaxes(1, 2)
        assert ops.add(a, a, out=out) is out
        np.testing.assert_array_equal(out, a + a)


def test_global_attention_reassociates_exactly_when_it_is_cheaper(monkeypatch):
    """Documented: the reassociated form (no key/value projection of every token) runs by default when
    X * H < D, the direct form otherwise, and `reassociate=` forces either; both give the same numbers."""
    import refimpl.longformer as lf

    rng = np.random.default_rng(9)
    B, T, H, D = 2, 8, 2, 6
    p = longformer_layer(rng, D, np.float64)
    x = rng.normal(size=(B, T, D))
    masked = np.zeros((B, T), bool)
    masked[1, -2:] = True
    projected = []
    real = lf.linear

    def spy(inputs, weight, bias=None):
        projected.extend(name for name in ("key_global", "value_global") if weight is p[name + ".weight"])
        return real(inputs, weight, bias)

    monkeypatch.setattr(lf, "linear", spy)
    results = {}
    for n_global, option in ((1, None), (2, None), (3, None), (1, False), (3, True)):  # X * H: 2, 4, 6 vs D = 6
        is_global = np.zeros((B, T), bool)
        is_global[0, :n_global] = is_global[1, 1] = True
        projected.clear()
        out, probs = lf.global_attention(p, x, is_global, masked, H, reassociate=option)
        direct = bool(projected)
        assert direct == (option is False or (option is None and n_global * H >= D)), (n_global, option, projected)
        results.setdefault(n_global, []).append(out)
    for n_global, outs in results.items():
        for other in outs[1:]:
            np.testing.assert_allclose(other, outs[0], rtol=1e-12, atol=1e-14)
    is_global = np.zeros((B, T), bool)
    is_global[0, 0] = is_global[1, 1] = True
    a, _ = lf.global_attention(p, x, is_global, masked, H, reassociate=True)
    b, _ = lf.global_attention(p, x, is_global, masked, H, reassociate=False)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_set_backend_block_lets_exceptions_through_and_restores():
    with pytest.raises(KeyError, match="inside"):
        with accel.set_backend("numpy"):
            raise KeyError("inside")
    assert accel.backend_info()["forced"] is None
    with accel.set_backend("reference"):
        with accel.set_backend(None):
            assert accel.backend_info()["forced"] is None
        assert accel.backend_info()["forced"] == "reference"
