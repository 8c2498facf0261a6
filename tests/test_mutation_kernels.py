"""The kernels and primitives (ops, accel, attention, relative_attention, lm_head) held to what they
promise: each twin (NumPy, Numba) against a formulation written here from the mathematics, on shapes that
reach every branch (ragged query blocks, several threads, per-row and shared masks, head masks, clamping),
inputs left untouched unless the function promises to overwrite them, and outputs where promised."""
import math

import numpy as np
import pytest

from refimpl import accel, attention, lm_head, ops
from refimpl import relative_attention as ra
from refimpl.torch_softmax import expf_sleef

NUMBA = pytest.mark.skipif(not accel.HAVE_NUMBA, reason="Numba is not installed")


def close(got, expected, tol, what):  # tol: a number or an array broadcast against the values
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    if not got.size:
        return
    err = np.abs(got - expected)
    err = np.where(np.isnan(got) & np.isnan(expected), 0.0, np.where(np.isnan(err), np.inf, err))
    excess = err - np.broadcast_to(tol, err.shape)
    worst = np.unravel_index(int(np.argmax(excess)), err.shape)
    assert excess[worst] <= 0, f"{what}: |diff| {err[worst]:.3g} at {worst} over the bound (got {got[worst]!r}, expected {expected[worst]!r})"


# ---------------------------------------------------------------- ops: softmax family, inputs and outputs


def test_logsumexp_overwrites_its_input_only_when_asked():
    """overwrite_input=True uses x as scratch: x then holds exp(x - row max); without it x is untouched."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 9)) * 5
    keep = x.copy()
    expected = np.array([math.log(sum(math.exp(v) for v in row)) for row in keep])
    np.testing.assert_allclose(ops.logsumexp(x), expected, rtol=1e-14)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_allclose(ops.logsumexp(x, overwrite_input=True), expected, rtol=1e-14)
    np.testing.assert_allclose(x, np.exp(keep - keep.max(axis=-1, keepdims=True)), rtol=1e-15)
    y = keep.copy()
    np.testing.assert_allclose(ops.logsumexp(y, axis=0), [math.log(sum(math.exp(v) for v in col)) for col in keep.T],
                               rtol=1e-14)
    np.testing.assert_array_equal(y, keep)


def test_softmax_and_log_softmax_along_each_axis_leave_the_input_alone():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5)) * 4
    keep = x.copy()
    for axis in (0, 1, -1):
        e = np.exp(keep)
        expected = e / e.sum(axis=axis, keepdims=True)
        np.testing.assert_allclose(ops.softmax(x, axis=axis), expected, rtol=1e-14)
        np.testing.assert_allclose(ops.log_softmax(x, axis=axis), np.log(expected), rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(x, keep)


def test_cross_entropy_on_batched_labels_names_the_first_bad_label():
    """labels [B, T] and logits [B, T, C] are flattened together; a non-ignored label outside 0..C-1 is
    named (the first one), with the ignore_index in force."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 4))
    labels = np.array([[3, 0, -1], [2, 1, 3]])
    flat, rows = labels.reshape(-1), logits.reshape(-1, 4)
    terms = [math.log(np.exp(rows[i]).sum()) - rows[i, flat[i]] for i in range(6) if flat[i] != -1]
    assert ops.cross_entropy(logits, labels, ignore_index=-1) == pytest.approx(np.mean(terms), rel=1e-14)
    all_terms = [math.log(np.exp(rows[i]).sum()) - rows[i, flat[i]] for i in range(6) if flat[i] >= 0]
    with pytest.raises(ValueError, match=r"^label -1 is outside 0\.\.3 \(and is not ignore_index=-100\)$"):
        ops.cross_entropy(logits, labels)
    with pytest.raises(ValueError, match=r"^label 4 is outside 0\.\.3 \(and is not ignore_index=-100\)$"):
        ops.cross_entropy(logits, np.array([[0, 4, 9], [-3, 1, 1]]))
    with pytest.raises(ValueError, match=r"^label -7 is outside 0\.\.3 \(and is not ignore_index=9\)$"):
        ops.cross_entropy(logits, np.array([[0, 3, 9], [-7, 5, 1]]), ignore_index=9)
    assert len(all_terms) == 5
    # the largest valid label is C - 1
    assert ops.cross_entropy(logits[:1, :1], np.array([[3]])) == pytest.approx(
        math.log(np.exp(rows[0]).sum()) - rows[0, 3], rel=1e-14)


def test_embedding_checks_both_ends_of_the_table():
    table = np.arange(8.0).reshape(4, 2)
    np.testing.assert_array_equal(ops.embedding(np.array([[0, 3]]), table), [[[0, 1], [6, 7]]])
    with pytest.raises(ValueError, match=r"^input_ids holds id 4 outside the table of 4 rows \(valid ids are 0\.\.3\)$"):
        ops.embedding(np.array([0, 3, 4, 0]), table)
    with pytest.raises(ValueError, match=r"^token ids holds id 9 outside"):
        ops.embedding(np.array([1, 0, 9, -2]), table, "token ids")  # the first bad id in order: 9
    assert ops.embedding(np.zeros((0,), np.int64), table).shape == (0, 2)


def test_classification_loss_picks_the_problem_type_as_upstream():
    """modeling_opt.py OPTForSequenceClassification: 1 label -> regression (MSE on squeezed values);
    integer labels and several labels -> cross-entropy; otherwise multi-label BCE with logits."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 3))
    ints = np.array([0, 2, 1, 2])
    loss, kind = ops.classification_loss(logits, ints, 3)
    ce = np.mean([math.log(np.exp(logits[i]).sum()) - logits[i, ints[i]] for i in range(4)])
    assert kind == "single_label_classification" and loss == pytest.approx(ce, rel=1e-14)
    multi = (rng.random((4, 3)) > 0.5).astype(np.float64)
    loss, kind = ops.classification_loss(logits, multi, 3)
    s = 1 / (1 + np.exp(-logits))
    assert kind == "multi_label_classification"
    assert loss == pytest.approx(np.mean(-(multi * np.log(s) + (1 - multi) * np.log(1 - s))), rel=1e-12)
    one = rng.normal(size=(4, 1))
    target = np.array([0.5, -1.0, 2.0, 0.0])
    loss, kind = ops.classification_loss(one, target, 1)
    assert kind == "regression" and loss == pytest.approx(np.mean((one[:, 0] - target) ** 2), rel=1e-14)
    loss, kind = ops.classification_loss(logits, logits * 2, 3, problem_type="regression")
    assert kind == "regression" and loss == pytest.approx(np.mean(logits ** 2), rel=1e-14)
    # integer labels with a single label are still a regression
    loss, kind = ops.classification_loss(one, np.array([1, 0, 2, 1]), 1)
    assert kind == "regression" and loss == pytest.approx(np.mean((one[:, 0] - [1, 0, 2, 1]) ** 2), rel=1e-14)
    with pytest.raises(ValueError, match=r"^problem_type 'ranking' is not one of"):
        ops.classification_loss(logits, ints, 3, problem_type="ranking")


def test_span_loss_clamps_positions_and_ignores_the_end():
    """modeling_opt.py OPTForQuestionAnswering: positions clamped to [0, T], T ignored, (start + end) / 2."""
    rng = np.random.default_rng(4)
    start, end = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))

    def ce(logits, pos):
        terms = [math.log(np.exp(logits[i]).sum()) - logits[i, p] for i, p in enumerate(pos) if p != 5]
        return np.mean(terms)

    got = ops.span_loss(start, end, np.array([1, -4, 9]), np.array([4, 0, 2]))
    assert got == pytest.approx((ce(start, [1, 0, 5]) + ce(end, [4, 0, 2])) / 2, rel=1e-14)


def test_masks_as_upstream_builds_them():
    low = np.finfo(np.float32).min
    pad = ops.padding_mask(np.array([[1, 0, 1]]), np.dtype(np.float32))
    assert pad.shape == (1, 1, 1, 3) and pad.dtype == np.float32
    np.testing.assert_array_equal(pad[0, 0, 0], [0, low, 0])
    m = ops.causal_padding_mask(np.array([[1, 1, 1, 1], [0, 1, 1, 1]]), 3, np.dtype(np.float32))  # past 1
    assert m.shape == (2, 1, 3, 4)
    allowed = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(m[0, 0], np.where(allowed, 0, low))
    np.testing.assert_array_equal(m[1, 0], np.where(allowed & [False, True, True, True], 0, low))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_against_their_definitions(dtype):
    """Each ACT2FN entry against its formula written here in float64 (transformers.activations)."""
    x64 = np.concatenate([np.linspace(-12, 12, 97), [0.0, -0.5, 0.5, 6.0, -6.0, 7.5]])
    x = x64.astype(dtype)
    xx = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    gelu = 0.5 * xx * (1 + erf(xx / math.sqrt(2)))
    tanh_gelu = 0.5 * xx * (1 + np.tanh(math.sqrt(2 / math.pi) * (xx + 0.044715 * xx ** 3)))
    sig = 1 / (1 + np.exp(-xx))
    expected = {
        "relu": np.maximum(xx, 0), "gelu": gelu, "gelu_python": gelu, "gelu_new": tanh_gelu,
        "gelu_accurate": tanh_gelu, "gelu_pytorch_tanh": tanh_gelu,
        "gelu_fast": 0.5 * xx * (1 + np.tanh(xx * 0.7978845608 * (1 + 0.044715 * xx * xx))),
        "quick_gelu": xx / (1 + np.exp(-1.702 * xx)), "sigmoid": sig, "silu": xx * sig, "swish": xx * sig,
        "tanh": np.tanh(xx), "gelu_10": np.clip(gelu, -10, 10),
        "laplace": 0.5 * (1 + erf((xx - 0.707107) / (0.282095 * math.sqrt(2)))),
        "leaky_relu": np.where(xx >= 0, xx, 0.01 * xx), "linear": xx,
        "mish": xx * np.tanh(np.log1p(np.exp(xx))), "relu2": np.maximum(xx, 0) ** 2,
        "relu6": np.clip(xx, 0, 6),
    }
    assert set(expected) == set(ops.ACTIVATIONS)
    tol = 1e-13 if dtype == np.float64 else 2e-5
    for name, want in expected.items():
        got = ops.activation(name)(x.copy())
        assert got.dtype == dtype, name
        close(got, want, tol * (1 + np.abs(want)), f"{name} {np.dtype(dtype).name}")
    with pytest.raises(ValueError, match=r"^activation_function 'gelu_42' is not supported; expected one of \["):
        ops.activation("gelu_42")


def test_activations_do_not_modify_their_input():
    x = np.linspace(-3, 3, 1 << 10).astype(np.float32)
    keep = x.copy()
    for name, f in ops.ACTIVATIONS.items():
        f(x)
        np.testing.assert_array_equal(x, keep, err_msg=name)


# ---------------------------------------------------------------- ops: the Numba twins of the elementwise passes


BIG = accel.STREAMING_WORK + 4 * 384  # above both thresholds: several threads on a multi-core machine


@NUMBA
@pytest.mark.parametrize("rows, width", [(1, 8), (3, 5), (BIG // 384, 384)])
@pytest.mark.parametrize("shape_b", ["row", "full"])
def test_add_numba_in_place_separate_and_returned(rows, width, shape_b):
    """a + b by the definition; a and b untouched unless out is a; `out` is filled and returned."""
    rng = np.random.default_rng(rows)
    a = rng.normal(size=(rows, width)).astype(np.float32)
    b = rng.normal(size=(width,) if shape_b == "row" else (rows, width)).astype(np.float32)
    expected = a + b  # float32 + float32: one rounding, the same in any order
    keep_a, keep_b = a.copy(), b.copy()
    for threads in (1, 3):
        accel.set_max_threads(threads)
        try:
            got = ops.add_numba(a, b)
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(a, keep_a)
            out = np.full_like(a, np.nan)
            assert ops.add_numba(a, b, out) is out
            np.testing.assert_array_equal(out, expected)
            inplace = a.copy()
            assert ops.add_numba(inplace, b, inplace) is inplace
            np.testing.assert_array_equal(inplace, expected)
            np.testing.assert_array_equal(b, keep_b)
            np.testing.assert_array_equal(a, keep_a)
        finally:
            accel.set_max_threads(None)


@NUMBA
def test_add_dispatch_writes_out_and_keeps_inputs():
    a = np.random.default_rng(5).normal(size=(BIG // 256, 256)).astype(np.float32)
    b = np.linspace(-1, 1, 256, dtype=np.float32)
    keep = a.copy()
    with accel.set_backend("numba"):
        out = np.empty_like(a)
        assert ops.add(a, b, out=out) is out
        np.testing.assert_array_equal(out, keep + b)
        np.testing.assert_array_equal(a, keep)
        y = ops.linear(a, np.eye(256, dtype=np.float32), b)
        np.testing.assert_allclose(y, keep + b, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(a, keep)


@NUMBA
@pytest.mark.parametrize("n", [7, BIG + 3])
def test_relu_and_gelu_twins_across_threads(n):
    """relu_numba: max(x, 0) with NaN kept; gelu_numba: x Phi(x) within 4e-7 (its documented bound); every
    part of the split written, the input untouched."""
    rng = np.random.default_rng(n)
    x = (rng.normal(size=n) * 4).astype(np.float32)
    x[:3] = [np.nan, -0.0, 0.0]
    x[-3:] = [-50.0, 50.0, np.nan]
    keep = x.copy()
    xx = keep.astype(np.float64)
    gelu = ops.gelu_numpy(xx)  # float64: erf exact to rounding (tests/test_ops.py holds it to math.erf)
    for threads in (1, 2, 5):
        accel.set_max_threads(threads)
        try:
            r = ops.relu_numba(x)
            assert r.dtype == np.float32 and r.shape == x.shape
            np.testing.assert_array_equal(r, np.where(np.isnan(xx), np.nan, np.maximum(xx, 0)))
            same = (r.view(np.int32) == ops.relu_numpy(keep).view(np.int32)) | np.isnan(r)
            assert same.all(), f"relu_numba's bits differ from its NumPy twin at {np.flatnonzero(~same)[:5]} (-0.0 -> +0.0)"
            g = ops.gelu_numba(x)
            close(g, gelu, 4e-7 * np.nanmax(1 + np.abs(gelu)), f"gelu_numba threads {threads}")
            np.testing.assert_array_equal(x, keep)
        finally:
            accel.set_max_threads(None)
    # dispatch: small float32 work or float64 takes NumPy, the same values
    with accel.set_backend("numba"):
        np.testing.assert_array_equal(ops.relu(x), ops.relu_numpy(x))
        np.testing.assert_array_equal(ops.relu2(x), np.where(np.isnan(xx), np.nan, np.maximum(xx, 0) ** 2).astype(np.float32))


@NUMBA
@pytest.mark.parametrize("rows, width", [(1, 1), (5, 3), (9, 13), (BIG // 512 + 1, 512)])
def test_layer_norm_numba_rows_and_threads(rows, width):
    rng = np.random.default_rng(rows * width)
    x = (rng.normal(size=(rows, width)) * 3 + 2).astype(np.float32)
    w = rng.normal(size=width).astype(np.float32)
    b = rng.normal(size=width).astype(np.float32)
    keep = x.copy()
    xx = x.astype(np.float64)
    centred = xx - xx.mean(-1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-3)
    for threads in (1, 4):
        accel.set_max_threads(threads)
        try:
            close(ops.layer_norm_numba(x, w, b, 1e-3), normed * w + b, 2e-6 * (1 + np.abs(normed * w + b)).max(), "affine")
            close(ops.layer_norm_numba(x, None, None, 1e-3), normed, 2e-6 * (1 + np.abs(normed)).max(), "plain")
            close(ops.layer_norm_numba(x[None], w, None, 1e-3)[0], normed * w, 2e-6 * (1 + np.abs(normed * w)).max(), "3-D")
            np.testing.assert_array_equal(x, keep)
        finally:
            accel.set_max_threads(None)


@NUMBA
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 11])
def test_softmax_row_building_blocks(n):
    """max_4_lanes / sum_4_lanes over every length (the 4-lane body and the tail), exp_f32_inplace within
    1 ulp of exp, exp_shifted_sum = sum(exp(x - max))."""
    rng = np.random.default_rng(n)
    for position in range(n):  # the maximum in every lane and in the tail
        buf = rng.normal(size=n + 3).astype(np.float32)
        buf[position] = 10.0
        assert ops.max_4_lanes(buf, n) == 10.0
        buf[position] = -10.0
        assert ops.max_4_lanes(buf, n) == buf[:n].max()
    ints = np.arange(1, n + 4, dtype=np.float64)
    assert ops.sum_4_lanes(ints, n, 0.0) == n * (n + 1) / 2  # exact: every entry counted once, none past n
    x = -np.abs(rng.normal(size=n) * 30).astype(np.float32)
    x[0] = 0.0
    got = x.copy()
    ops.exp_f32_inplace(got, n, np.float32(0))
    expected = np.exp(x.astype(np.float64))
    assert np.all(np.abs(got - expected) <= np.spacing(expected.astype(np.float32)) * 1.0 + 1e-45)
    # the shift is subtracted in float32 first: the same bits as exponentiating (y - shift) rounded
    shift = np.float32(2.75)
    y = (x + shift).astype(np.float32)
    shifted, unshifted = y.copy(), (y - shift).astype(np.float32)
    ops.exp_f32_inplace(shifted, n, shift)
    ops.exp_f32_inplace(unshifted, n, np.float32(0))
    np.testing.assert_array_equal(shifted.view(np.int32), unshifted.view(np.int32))
    row = (rng.normal(size=n) * 5).astype(np.float32)
    for fast in (True, False):
        buf = row.copy()
        total = ops.exp_shifted_sum(buf, n, fast)
        e = np.exp(row.astype(np.float64) - row.max())
        close(buf, e, 2e-7, f"exp_shifted_sum fast={fast}")
        assert total == pytest.approx(e.sum(), rel=1e-6)


@NUMBA
def test_exp_f32_special_values():
    x = np.array([0.0, -87.0, -87.4, -88.0, -200.0, -np.inf, np.nan, -1e-8, -0.5], np.float32)
    got = x.copy()
    ops.exp_f32_inplace(got, x.size, np.float32(0))
    assert got[0] == 1.0 and got[3] == 0.0 and got[4] == 0.0 and got[5] == 0.0 and np.isnan(got[6])
    for i in (1, 7, 8):
        assert abs(got[i] - math.exp(float(x[i]))) <= np.spacing(np.float32(math.exp(float(x[i])))), i
    # below 2^-126 the result flushes to 0 (documented); just above it is still the exact value
    assert got[2] == 0.0 or abs(got[2] - math.exp(-87.4)) <= 1e-44


# ---------------------------------------------------------------- accel: the policy and the threads


def test_on_threads_runs_every_part_once():
    seen = []

    def kernel(tag, first, step):
        seen.append((tag, first, step))

    accel.on_threads(kernel, ("k",), 3)
    assert sorted(seen) == [("k", 0, 3), ("k", 1, 3), ("k", 2, 3)]
    seen.clear()
    accel.on_threads(kernel, ("k",), 0)  # at least one part
    assert seen == [("k", 0, 1)]
    with pytest.raises(ValueError, match=r"^this kernel needs Numba, which cannot run: "):
        accel.on_threads(None, (), 2)


@pytest.mark.parametrize("slow_part", [0, 1])
def test_on_threads_restores_a_process_wide_blas_thread_count(monkeypatch, slow_part):
    """NumPy's OpenBLAS (pthreads) keeps one thread count for the process: setting it from each part and
    restoring it per part left the count of whichever part ended last (1) to every later product. Modelled
    here with one shared count: every part runs single-threaded, and the caller's count comes back."""
    import threading
    import time

    count = {"threads": 4}
    lock = threading.Lock()

    def setter(n):  # openblas_set_num_threads_local as the pthreads build behaves: returns the previous count
        with lock:
            previous, count["threads"] = count["threads"], n
        return previous

    monkeypatch.setattr(accel, "blas_thread_setter", lambda library: setter)
    during = []
    both_started = threading.Barrier(2)

    def kernel(first, step):
        if step == 2:
            both_started.wait(timeout=10)  # the parts overlap: both have set the count before either ends
        during.append(count["threads"])
        if first == slow_part:
            time.sleep(0.01)  # this part ends last

    accel.on_threads(kernel, (), 2, blas="numpy")
    assert during == [1, 1] and count["threads"] == 4, (during, count)
    accel.on_threads(kernel, (), 1, blas="numpy")
    assert during[-1] == 1 and count["threads"] == 4


def test_on_threads_leaves_numpys_blas_threads_as_they_were():
    """The same with the real library: after a kernel whose parts call NumPy's BLAS, the count is unchanged."""
    import threading
    import time

    setter = accel.blas_thread_setter("numpy")
    if setter is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS with a thread setter")
    before = setter(2)
    setter(before)
    for slow_part in (0, 1):
        both_started = threading.Barrier(2)

        def kernel(a, first, step):
            both_started.wait(timeout=10)
            a @ a
            if first == slow_part:
                time.sleep(0.01)

        accel.on_threads(kernel, (np.ones((64, 64), np.float32),), 2, blas="numpy")
        after = setter(before)
        assert after == before, (slow_part, before, after)


def test_on_threads_falls_back_to_one_part_without_a_thread_local_blas(monkeypatch):
    monkeypatch.setattr(accel, "blas_thread_setter", lambda library: None)
    seen = []
    accel.on_threads(lambda first, step: seen.append((first, step)), (), 4, blas="numpy")
    assert seen == [(0, 1)]


def test_blas_thread_setter_and_single_threaded_blas():
    from pathlib import Path

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    if not any("openblas" in p.name for p in libs.glob("*")):
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    setter = accel.blas_thread_setter("numpy")
    assert callable(setter)
    before = setter(3)
    try:
        with accel.single_threaded_blas("numpy"):
            assert setter(1) == 1  # inside: one thread
        assert setter(3) == 3  # restored afterwards
    finally:
        setter(before)


def test_threads_for_thresholds_and_cap():
    assert accel.threads_for(accel.SMALL_WORK - 1) == 1
    assert accel.threads_for(accel.SMALL_WORK) == accel.CPUS
    assert accel.threads_for(accel.STREAMING_WORK - 1, accel.STREAMING_WORK) == 1
    assert accel.threads_for(accel.STREAMING_WORK, accel.STREAMING_WORK) == accel.CPUS
    accel.set_max_threads(1)
    try:
        assert accel.threads_for(10 ** 9) == 1
    finally:
        accel.set_max_threads(None)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"^the thread cap must be a whole number >= 1 or None, got " + repr(bad)):
            accel.set_max_threads(bad)


def test_backend_policy(monkeypatch):
    monkeypatch.delenv(accel.ENVIRONMENT_VARIABLE, raising=False)
    auto = "numba" if accel.HAVE_NUMBA else "numpy"
    assert accel.choose_backend(np.float32) == auto
    assert accel.choose_backend(np.float64) == "numpy"
    assert accel.choose_backend("float32", "reference") == "reference"
    monkeypatch.setenv(accel.ENVIRONMENT_VARIABLE, "reference")
    assert accel.choose_backend(np.float32) == "reference"
    assert accel.choose_backend(np.float32, "numpy") == "numpy"
    with accel.set_backend("numpy") as forced:
        assert isinstance(forced, accel.set_backend)
        assert accel.choose_backend(np.float32) == "numpy"
        assert accel.backend_info()["forced"] == "numpy"
        assert accel.backend_info()["float32"] == "numpy"
    assert accel.backend_info()["forced"] is None
    assert accel.backend_info()[accel.ENVIRONMENT_VARIABLE] == "reference"
    monkeypatch.setenv(accel.ENVIRONMENT_VARIABLE, "fast")
    with pytest.raises(ValueError, match=r"^REFIMPL_BACKEND: backend must be one of \('reference', 'numpy', 'numba'\) "
                                         r"or None, got 'fast'$"):
        accel.choose_backend(np.float32)
    monkeypatch.setenv(accel.ENVIRONMENT_VARIABLE, "")
    assert accel.choose_backend(np.float32) == auto
    with pytest.raises(ValueError, match=r"^set_backend: backend must be one of .* got 'gpu'$"):
        accel.set_backend("gpu")
    impl = {"numpy": "N", "numba": "B"}
    assert accel.dispatch(impl, np.float32, "reference") == "N"
    assert accel.dispatch(dict(impl, reference="R"), np.float32, "reference") == "R"
    assert accel.dispatch(impl, np.float64, "numba" if accel.HAVE_NUMBA else "numpy") == "N"


# ---------------------------------------------------------------- the fused LM head


@pytest.mark.parametrize("twin", ["numpy"] + (["numba"] if accel.HAVE_NUMBA else []))
def test_lm_head_twins_on_many_rows_and_a_vocabulary_spread_over_threads(twin):
    """More rows than a block (numpy) / more columns than a chunk, on several threads (numba); a target
    in the first and last column; inputs untouched."""
    rng = np.random.default_rng(7)
    N, V, E = 300, 2500, 16
    hidden = rng.normal(size=(N, E)).astype(np.float32)
    head = rng.normal(size=(V, E)).astype(np.float32)
    bias = rng.normal(size=V).astype(np.float32)
    targets = rng.integers(0, V, size=N)
    targets[:4] = [0, V - 1, 1024, 2048]  # the first and last column, the first column of a later chunk
    logits = hidden.astype(np.float64) @ head.astype(np.float64).T + bias
    top = logits.max(1, keepdims=True)
    expected = logits[np.arange(N), targets] - (top[:, 0] + np.log(np.exp(logits - top).sum(1)))
    keep = hidden.copy(), head.copy(), bias.copy()
    for threads in (1, 2, 3):
        accel.set_max_threads(threads)
        try:
            if twin == "numpy":
                got = lm_head.target_logprobs_numpy(hidden, head, targets, bias)
            else:
                got = lm_head.target_logprobs_numba(hidden, head, targets, bias)
        finally:
            accel.set_max_threads(None)
        assert got.dtype == np.float32
        close(got, expected, 5e-5, f"{twin} threads {threads}")
    for a, b in zip((hidden, head, bias), keep):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- dense attention: both twins against the formula


def attention_formula(q, k, v, mask, head_mask, clamp):  # -> context [B, T, H*d], probs [B, H, T, S]
    """softmax(q k^T + mask (clamped at finfo.min)) * head_mask, times v; scores in the input dtype, the
    rest in float64."""
    B, H, T, d = q.shape
    with np.errstate(over="ignore", invalid="ignore"):
        scores = np.einsum("bhtd,bhsd->bhts", q, k)
        if mask is not None:
            scores = scores + mask
            if clamp:
                scores = np.maximum(scores, np.finfo(q.dtype).min)
        s = scores.astype(np.float64)
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
    if head_mask is not None:
        p = p * head_mask[None, :, None, None]
    context = np.einsum("bhts,bhsd->bthd", p, v.astype(np.float64)).reshape(B, T, H * d)
    return context, p


def attention_case(seed, B, H, T, S, d, dtype, mask_kind):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(size=(B, H, n, d)).astype(dtype) for n in (T, S, S))
    low = np.finfo(dtype).min
    if mask_kind == "none":
        mask = None
    elif mask_kind in ("shared", "keys"):  # [1, 1, 1, S] or [B, 1, 1, S]
        mask = np.where(rng.random((1 if mask_kind == "shared" else B, 1, 1, S)) < 0.3, low, 0).astype(dtype)
        mask[..., 0] = 0
    else:  # per row and query: [B, 1, T, S], causal with padding
        causal = np.arange(S)[None, :] <= (S - T + np.arange(T))[:, None]
        pad = rng.random((B, S)) < 0.2
        pad[:, -1] = False
        mask = np.where(causal[None, None] & ~pad[:, None, None, :], 0, low).astype(dtype)
    return q, k, v, mask


ATTENTION_CASES = [  # B, H, T, S, d, mask
    (1, 1, 1, 1, 1, "none"), (2, 3, 5, 5, 4, "rows"), (3, 2, 7, 9, 3, "shared"), (2, 2, 6, 11, 5, "rows"),
    (1, 4, 1, 6, 2, "rows"),
]


@pytest.mark.parametrize("case", ATTENTION_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_attention_twins_against_the_formula(case, dtype):
    B, H, T, S, d, mask_kind = case
    q, k, v, mask = attention_case(sum(case[:5]), B, H, T, S, d, dtype, mask_kind)
    head_mask = np.linspace(0.25, 1.5, H).astype(dtype)
    saved = [a.copy() for a in (q, k, v)] + ([] if mask is None else [mask.copy()])
    tol = 1e-12 if dtype == np.float64 else 3e-6
    runs = [("numpy", lambda **kw: attention.attention_heads_numpy(q, k, v, mask, **kw))]
    if accel.HAVE_NUMBA:
        for block in (1, 2, 4, 256):
            for n_threads in (1, 3):
                runs.append((f"numba block {block} threads {n_threads}", lambda block=block, n_threads=n_threads, **kw:
                             attention.attention_heads_numba(q, k, v, mask, block=block, n_threads=n_threads, **kw)))
    for hm in (None, head_mask):
        want_ctx, want_p = attention_formula(q, k, v, mask, hm, False)
        for name, run in runs:
            ctx, p = run(head_mask=hm)
            close(ctx, want_ctx, tol, f"{name} head_mask={hm is not None} context")
            close(p, want_p, tol, f"{name} head_mask={hm is not None} probs")
            assert ctx.dtype == dtype and p.dtype == dtype
            ctx2, none = run(head_mask=hm, output_probs=False)
            assert (none is None) == name.startswith("numba"), name  # the NumPy twin always has them
            close(ctx2, want_ctx, tol, f"{name} without probs")
    for a, b in zip((q, k, v) + (() if mask is None else (mask,)), saved):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e25), (np.float64, 1e160)])
def test_clamp_to_min_turns_a_row_of_minus_infinity_uniform(dtype, big):
    """OPT clamps scores + mask at finfo.min: a row whose every score overflows to -inf is uniform then
    (and NaN without the clamp); other rows unchanged."""
    B, H, T, S, d = 2, 2, 3, 4, 1
    q = np.ones((B, H, T, d), dtype)
    k = np.linspace(-1, 1, S).astype(dtype)[None, None, :, None] * np.ones((B, H, S, d), dtype)
    q[1, 0, 2] = big
    k[1, 0] = -big  # row (1, 0, 2): every score -big^2 = -inf in this dtype
    mask = np.zeros((B, 1, T, S), dtype)
    mask[1, 0, 2] = np.finfo(dtype).min
    v = np.arange(B * H * S * d, dtype=dtype).reshape(B, H, S, d)
    twins = [attention.attention_heads_numpy] + ([attention.attention_heads_numba] if accel.HAVE_NUMBA else [])
    for twin in twins:
        with np.errstate(over="ignore", invalid="ignore"):
            ctx, p = twin(q, k, v, mask, None, True)
            _, raw = twin(q, k, v, mask, None, False)
        np.testing.assert_allclose(p[1, 0, 2], np.full(S, 1 / S), rtol=1e-6, err_msg=twin.__name__)
        assert np.isnan(raw[1, 0, 2]).all(), twin.__name__
        want_ctx, want_p = attention_formula(q[:1], k[:1], v[:1], mask[:1], None, True)
        close(p[:1], want_p, 1e-6, f"{twin.__name__} unaffected rows")
        close(ctx[:1], want_ctx, 1e-5, f"{twin.__name__} unaffected rows")


def test_multi_head_attention_with_cache_and_cross_attention():
    """BartAttention: q scaled by d^-0.5, keys/values appended to the cache, cross-attention reusing it."""
    rng = np.random.default_rng(11)
    D, H, B = 6, 2, 2
    p = {f"{n}.weight": rng.normal(size=(D, D)) for n in ("q_proj", "k_proj", "v_proj", "out_proj")}
    p.update({f"{n}.bias": rng.normal(size=D) for n in ("q_proj", "k_proj", "v_proj", "out_proj")})
    x, past_x, enc = rng.normal(size=(B, 2, D)), rng.normal(size=(B, 3, D)), rng.normal(size=(B, 4, D))

    def heads(y):  # [B, n, D] -> [B, H, n, d]
        return y.reshape(B, y.shape[1], H, D // H).transpose(0, 2, 1, 3)

    def project(name, y):
        return y @ p[name + ".weight"].T + p[name + ".bias"]

    def expected(source, with_past):
        q = heads(project("q_proj", x)) * (D // H) ** -0.5
        k, v = heads(project("k_proj", source)), heads(project("v_proj", source))
        ctx, probs = attention_formula(q, k, v, None, None, False)
        return project("out_proj", ctx), probs, k, v

    past = (heads(project("k_proj", past_x)), heads(project("v_proj", past_x)))
    out, probs, (k, v) = attention.multi_head_attention(p, x, H, past=past)
    want_out, want_p, want_k, want_v = expected(np.concatenate([past_x, x], 1), True)
    close(out, want_out, 1e-12, "self-attention with a cache: out")
    close(probs, want_p, 1e-12, "self-attention with a cache: probs")
    close(k, want_k, 1e-12, "present keys")
    close(v, want_v, 1e-12, "present values")
    out, probs, (k, v) = attention.multi_head_attention(p, x, H, key_value_states=enc)
    want_out, want_p, want_k, _ = expected(enc, False)
    close(out, want_out, 1e-12, "cross-attention out")
    cached = attention.multi_head_attention(p, x, H, key_value_states=rng.normal(size=enc.shape), past=(k, v))
    close(cached[0], want_out, 1e-12, "cross-attention from the cache ignores the encoder states")


# ---------------------------------------------------------------- NEZHA's relative attention


def relative_formula(q, k, v, mask, head_mask, table):  # float64, pair by pair, as the module docstring writes it
    B, H, T, d = q.shape
    S = k.shape[2]
    K = (table.shape[0] - 1) // 2
    R = table[np.clip(np.arange(S)[None, :] - np.arange(T)[:, None], -K, K) + K].astype(np.float64)  # [T, S, d]
    scores = np.einsum("bhtd,bhsd->bhts", q, k) + np.einsum("bhtd,tsd->bhts", q, R)
    if mask is not None:
        scores = scores + mask
    e = np.exp(scores - scores.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    if head_mask is not None:
        p = p * head_mask[None, :, None, None]
    ctx = np.einsum("bhts,bhsd->bhtd", p, v) + np.einsum("bhts,tsd->bhtd", p, R)
    return ctx.transpose(0, 2, 1, 3).reshape(B, T, H * d), p


@pytest.mark.parametrize("T, K, mask_kind", [(1, 1, "rows"), (4, 1, "rows"), (4, 2, "keys"), (7, 2, "keys"), (9, 3, "rows"),
                                             (5, 6, "none"), (6, 2, "none")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relative_attention_twins_against_the_formula(T, K, mask_kind, dtype):
    B, H, d = 2, 2, 3
    q, k, v, mask = attention_case(T * 10 + K, B, H, T, T, d, dtype, mask_kind)
    table = np.random.default_rng(K).normal(size=(2 * K + 1, d)).astype(dtype)
    head_mask = np.array([0.5, 1.25], dtype)
    saved = [a.copy() for a in (q, k, v, table)]
    tol = 1e-12 if dtype == np.float64 else 4e-6
    runs = [("reference", ra.relative_attention_reference), ("numpy", ra.relative_attention_numpy)]
    if accel.HAVE_NUMBA:
        for block in (1, 2, 3, 256):
            for n_threads in (1, 2):
                runs.append((f"numba block {block} threads {n_threads}",
                             lambda *a, block=block, n_threads=n_threads, **kw:
                             ra.relative_attention_numba(*a, block=block, n_threads=n_threads, **kw)))
    for hm in (None, head_mask):
        want_ctx, want_p = relative_formula(q, k, v, mask, hm, table)
        for name, run in runs:
            ctx, p = run(q, k, v, mask, hm, table)
            close(ctx, want_ctx, tol, f"{name} T={T} K={K} context")
            close(p, want_p, tol, f"{name} T={T} K={K} probs")
            ctx, none = run(q, k, v, mask, hm, table, output_probs=False)
            assert none is None, name
            close(ctx, want_ctx, tol, f"{name} T={T} K={K} context without probs")
    for a, b in zip((q, k, v, table), saved):
        np.testing.assert_array_equal(a, b)
    with accel.set_backend("reference"):
        close(ra.relative_attention(q, k, v, mask, None, table)[0], relative_formula(q, k, v, mask, None, table)[0],
              tol, "dispatch")


# ---------------------------------------------------------------- torch's float32 softmax pieces


def test_expf_sleef_within_one_ulp_and_its_range_ends():
    """SLEEF's expf_u10: error below 1 ulp wherever exp(x) is a normal float32 (the 'u10'); below -104: 0;
    above 100: inf; NaN stays NaN."""
    x = np.concatenate([np.linspace(-110, 95, 4096), [-104.5, -103.9, 100.5, 0.0, -0.0, np.nan]]).astype(np.float32)
    got = expf_sleef(x)
    assert got.dtype == np.float32
    normal = (x > -87.3) & (x < 88.0)
    exact = np.exp(x[normal].astype(np.float64))
    ulps = np.abs(got[normal] - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() < 1.0, f"expf_sleef: {ulps.max():.3g} ulp at x={x[normal][ulps.argmax()]}"
    assert (got[x < -104] == 0).all() and np.isinf(got[x > 100]).all() and np.isnan(got[np.isnan(x)]).all()


def test_multi_head_attention_defaults_keep_probs_and_do_not_clamp():
    """By default multi_head_attention returns the probabilities (float32 too, where the Numba twin could
    skip them) and adds the mask without clamping (BartAttention's way): a row whose every score is pushed
    past float32's lowest value by the mask is -inf throughout, hence NaN after the softmax; with
    clamp_to_min=True (OPTAttention's way) every score stays at finfo.min and the row is uniform."""
    eye = np.eye(2, dtype=np.float32)
    p = {"q_proj.weight": 1e19 * eye, "k_proj.weight": -1e19 * eye, "v_proj.weight": eye, "out_proj.weight": eye}
    x = np.ones((1, 2, 2), np.float32)  # [B, T, D]: every score is -1e38 * 2 * 2**-0.5, about -1.4e38
    mask = np.full((1, 1, 2, 2), np.finfo(np.float32).min, np.float32)  # every key masked
    with np.errstate(all="ignore"):
        _, probs, _ = attention.multi_head_attention(p, x, 1, mask)
        _, clamped, _ = attention.multi_head_attention(p, x, 1, mask, clamp_to_min=True)
    assert probs is not None and probs.shape == (1, 1, 2, 2) and probs.dtype == np.float32
    assert np.isnan(probs).all(), "scores + mask overflow to -inf without the clamp: softmax of -inf is NaN"
    np.testing.assert_array_equal(clamped, np.full((1, 1, 2, 2), 0.5, np.float32))
