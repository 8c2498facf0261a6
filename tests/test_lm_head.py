"""The LM head fused with log_softmax at the targets (refimpl/lm_head.py): both twins against the full
logits' log_softmax computed in float64 by NumPy (an independent formulation), with chunks small enough
that a row's maximum moves between chunks and the last chunk is ragged."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refimpl import accel, lm_head

TWINS = ["numpy"] + (["numba"] if accel.HAVE_NUMBA else [])


def exact_target_logprobs(hidden, head, targets, bias=None):  # float64 throughout
    logits = hidden.astype(np.float64) @ head.astype(np.float64).T  # [N, V]
    if bias is not None:
        logits += bias
    top = logits.max(axis=1, keepdims=True)
    logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return logits[np.arange(len(targets)), targets] - logz


@pytest.mark.parametrize("twin", TWINS)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), v=st.integers(1, 40), e=st.integers(1, 12), vocab_chunk=st.integers(1, 9),
       scale=st.sampled_from([0.1, 3.0, 30.0]), with_bias=st.booleans(), seed=st.integers(0, 2**31))
def test_twins_match_exact_log_softmax(twin, n, v, e, vocab_chunk, scale, with_bias, seed):
    rng = np.random.default_rng(seed)
    hidden = (rng.standard_normal((n, e)) * scale).astype(np.float32)
    head = rng.standard_normal((v, e)).astype(np.float32)
    targets = rng.integers(0, v, size=n)
    bias = (rng.standard_normal(v) * scale).astype(np.float32) if with_bias else None
    expected = exact_target_logprobs(hidden, head, targets, bias)
    if twin == "numpy":
        got = lm_head.target_logprobs_numpy(hidden, head, targets, bias, rows=max(1, vocab_chunk // 2))
    else:
        got = lm_head.target_logprobs_numba(hidden, head, targets, bias, vocab_chunk=vocab_chunk)
    assert got.dtype == np.float32 and got.shape == (n,)
    err = np.abs(got - expected)
    worst = int(err.argmax())
    # a few float32 roundings of values up to |logit| ~ scale * sqrt(e) * 4
    bound = 4e-6 * (1 + np.abs(expected).max() + scale * (np.sqrt(e) * 4 + with_bias * 4))
    assert err[worst] <= bound, f"{twin} n={n} v={v} e={e}: max |diff| {err[worst]:.3g} at row {worst} > {bound:.3g}"


def test_float64_runs_the_numpy_twin_exactly():
    rng = np.random.default_rng(1)
    hidden, head = rng.standard_normal((5, 8)), rng.standard_normal((300, 8))
    targets = rng.integers(0, 300, size=5)
    got = lm_head.target_logprobs(hidden, head, targets)
    np.testing.assert_allclose(got, exact_target_logprobs(hidden, head, targets), rtol=0, atol=1e-12)


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="the chunk width is the Numba twin's")
@pytest.mark.parametrize("rows, width", [(lm_head.WIDE_FROM_ROWS - 1, lm_head.VOCAB),
                                         (lm_head.WIDE_FROM_ROWS, lm_head.WIDE_VOCAB)])
def test_many_rows_take_wide_chunks_and_the_same_numbers(monkeypatch, rows, width):
    """Below WIDE_FROM_ROWS rows the vocabulary goes in chunks of VOCAB columns, from it on of WIDE_VOCAB; both
    against the exact float64 log_softmax, over a vocabulary of two wide chunks and a ragged third."""
    widths = []
    on_threads = accel.on_threads
    monkeypatch.setattr(accel, "on_threads", lambda fn, args, *rest, **kw: (widths.append(args[4]),
                                                                           on_threads(fn, args, *rest, **kw))[1])
    rng = np.random.default_rng(rows)
    hidden = rng.standard_normal((rows, 6)).astype(np.float32)
    head = rng.standard_normal((2 * lm_head.WIDE_VOCAB + 5, 6)).astype(np.float32)
    targets = rng.integers(0, head.shape[0], size=rows)
    got = lm_head.target_logprobs_numba(hidden, head, targets)
    assert widths == [width]
    expected = exact_target_logprobs(hidden, head, targets)
    err = np.abs(got - expected)
    assert err.max() <= 4e-6 * (1 + np.abs(expected).max()), f"rows={rows}: max |diff| {err.max():.3g} at {err.argmax()}"
