"""The language-model head fused with log_softmax at the target tokens: what scoring needs.

    logprob[n] = logits[n, target[n]] - logsumexp(logits[n, :]),   logits = hidden @ head.T (+ bias)

(bias [V]: LED's final_logits_bias.)
The [N, V] logits (200 MB for 8 x 128 tokens of OPT, 130 MB for one 128-token XGLM line) are never held
at once. Two twins, dispatched by refimpl.accel:

- `target_logprobs_numpy` (float64, or no Numba): logits for blocks of ROWS positions at a time, the
  textbook max-shifted logsumexp on each block (numpy's float sums).
- `target_logprobs_numba` (float32 with Numba): one pass over the vocabulary in chunks of VOCAB columns
  (WIDE_VOCAB from WIDE_FROM_ROWS rows on), the chunks dealt out to every core in turn. On its core, a
  chunk's logits (np.dot inside the kernel: scipy's BLAS, single-threaded there) update that core's
  running maximum and running float64 sum of exp(logit - maximum) per row (the "online" logsumexp),
  chunk by chunk; the target's logit is picked up in the chunk that holds it. The cores' (maximum, sum)
  pairs are merged at the end. Each core streams its own share of the head, with no hand-over between a
  multi-threaded product and the kernel after every chunk: XGLM-564M scoring 1 x 128 went from 1.58 to 1.47 s (median of 5
  alternating runs), the OPT-125m head over 1016 rows from 0.61 to 0.56 s. (The same streams calling
  NumPy's BLAS from the worker threads were slower overall: NumPy's next multi-threaded products, the
  next forward's layers, ran ~40% slower after them.) Within a float32 rounding or two of the exact
  result, like the twin.
"""
from __future__ import annotations

import math

import numpy as np

from . import accel
from .ops import exp_f32_inplace, logsumexp, max_4_lanes, sum_4_lanes

ROWS = 256  # numpy twin: positions per block of logits ([256, V] at a time)
VOCAB = 1024  # numba twin: vocabulary columns per chunk ([rows, 1024] float32 logits per core at a time) ...
WIDE_VOCAB, WIDE_FROM_ROWS = 4096, 512  # ... or 4096 from 512 rows on: one core, opt-125m's head, GFLOP/s
# (medians of 4 alternating calls): 1700 rows 96.8 -> 99.4, 600 rows 97.7 -> 99.0, 300 rows 95.6 -> 95.4,
# 128 rows 87.8 -> 86.5. Fewer, larger products; the [rows, 4096] chunk (up to 32 MB at 2048 rows)
# leaves the cache, but reading it back for the logsumexp costs little beside its product.


def target_logprobs(hidden, head, targets, bias=None):  # hidden [N, E], head [V, E], targets [N], bias [V] -> [N]
    """log_softmax(hidden @ head.T + bias)[n, targets[n]] for every row n, in hidden's dtype."""
    return accel.dispatch({"numpy": target_logprobs_numpy, "numba": target_logprobs_numba}, hidden.dtype)(
        hidden, head, targets, bias)


def target_logprobs_numpy(hidden, head, targets, bias=None, rows=None):  # -> [N]
    rows = rows or ROWS
    out = np.empty(hidden.shape[0], dtype=hidden.dtype)
    for start in range(0, hidden.shape[0], rows):
        logits = hidden[start:start + rows] @ head.T                                  # [n, V]
        if bias is not None:
            logits += bias
        picked = logits[np.arange(logits.shape[0]), targets[start:start + rows]]     # [n]
        out[start:start + rows] = picked - logsumexp(logits, overwrite_input=True)   # log_softmax at the targets
    return out


@accel.jit(error_model="numpy")
def _online_logsumexp_rows(logits, column0, targets, top, total, picked):
    """Folds one vocabulary chunk into the running (max, sum) of every row.

    logits [n, c] float32, columns column0 .. column0 + c - 1 of the vocabulary (overwritten: scratch);
    targets [n]; top [n] float64 running maximum; total [n] float64 running sum of exp(logit - top);
    picked [n] float64 the target's logit, set by the chunk that holds it.
    """
    n, c = logits.shape
    for r in range(n):
        row = logits[r]                                          # [c]
        t = targets[r] - column0
        if 0 <= t < c:
            picked[r] = row[t]
        m = max_4_lanes(row, c)
        if m > top[r]:                                           # a new maximum rescales the sum so far
            total[r] *= math.exp(top[r] - m)
            top[r] = m
        shift = np.float32(top[r])                               # exact: top holds a float32 value
        exp_f32_inplace(row, c, shift)                           # row <- exp(row - shift), each in (0, 1]
        total[r] += sum_4_lanes(row, c, 0.0)                     # float64 sums, a fixed order


@accel.jit()
def _stream_chunks(hidden, head, bias, targets, width, top, total, picked, first, step):
    """Vocabulary chunks first, first + step, ... of `width` columns, on one core: each chunk's logits
    ([N, c], np.dot: scipy's BLAS, single-threaded here) folded into this core's running (max, sum)."""
    V = head.shape[0]
    for column0 in range(first * width, V, step * width):
        c = min(width, V - column0)
        logits = np.dot(hidden, head[column0:column0 + c].T)     # [N, c]
        if bias.shape[0] > 0:
            logits += bias[column0:column0 + c]
        _online_logsumexp_rows(logits, column0, targets, top[first], total[first], picked[first])


def target_logprobs_numba(hidden, head, targets, bias=None, vocab_chunk=None):  # hidden [N, E] float32, head [V, E], targets [N] -> [N]
    N, V = hidden.shape[0], head.shape[0]
    width = vocab_chunk or (WIDE_VOCAB if N >= WIDE_FROM_ROWS else VOCAB)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    hidden, head = np.ascontiguousarray(hidden, np.float32), np.ascontiguousarray(head, np.float32)
    bias = np.zeros(0, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    n_threads = min(accel.threads_for(N * V), -(-V // width))
    top = np.full((n_threads, N), -np.inf)                       # [threads, N] float64: each core's running max,
    total = np.zeros((n_threads, N))                             # its running sum of exp(logit - max),
    picked = np.zeros((n_threads, N))                            # the targets' logits it met (0 elsewhere)
    accel.on_threads(_stream_chunks, (hidden, head, bias, targets, width, top, total, picked), n_threads,
                     blas="scipy")
    overall = top.max(axis=0)                                    # [N]: merge the cores' (max, sum) pairs
    merged = (total * np.exp(top - overall)).sum(axis=0)         # every core met at least one chunk
    return (picked.sum(axis=0) - (overall + np.log(merged))).astype(np.float32)
