"""The language-model head fused with log_softmax at the target tokens: what scoring needs.

    logprob[n] = logits[n, target[n]] - logsumexp(logits[n, :]),   logits = hidden @ head.T (+ bias)

(bias [V]: LED's final_logits_bias.)
The [N, V] logits (200 MB for 8 x 128 tokens of OPT, 130 MB for one 128-token XGLM line) are never held
at once. Two twins, dispatched by refimpl.accel:

- `target_logprobs_numpy` (float64, or no Numba): logits for blocks of ROWS positions at a time, the
  textbook max-shifted logsumexp on each block (numpy's float sums).
- `target_logprobs_numba` (float32 with Numba): one pass over the vocabulary in chunks of VOCAB columns.
  Each chunk's logits (a BLAS product, [rows, VOCAB]: a few MB that stay in cache) update a running
  maximum and a running float64 sum of exp(logit - maximum) per row (the "online" logsumexp), on every
  core; the target's logit is picked up in the chunk that holds it. Within a float32 rounding or two of
  the exact result, like the twin.
"""
from __future__ import annotations

import math

import numpy as np

from . import accel
from .ops import add, exp_f32_inplace, logsumexp, max_4_lanes, sum_4_lanes

ROWS = 256  # numpy twin: positions per block of logits ([256, V] at a time)
VOCAB = 4096  # numba twin: vocabulary columns per chunk ([rows, 4096] float32 logits at a time)


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
def _online_logsumexp_rows(logits, column0, targets, top, total, picked, first, step):
    """Folds one vocabulary chunk into the running (max, sum) of the rows of part `first` of `step`.

    logits [n, c] float32, columns column0 .. column0 + c - 1 of the vocabulary (overwritten: scratch);
    targets [n]; top [n] float64 running maximum; total [n] float64 running sum of exp(logit - top);
    picked [n] float64 the target's logit, set by the chunk that holds it.
    """
    n, c = logits.shape
    part = (n + step - 1) // step
    for r in range(first * part, min(n, (first + 1) * part)):
        row = logits[r]                                          # [c]
        t = targets[r] - column0
        if 0 <= t < c:
            picked[r] = row[t]
        m = max_4_lanes(row, c)
        if m > top[r]:                                           # a new maximum rescales the sum so far
            total[r] *= math.exp(top[r] - m)
            top[r] = m
        shift = np.float32(top[r])                               # exact: top holds a float32 value
        for j in range(c):
            row[j] = row[j] - shift
        exp_f32_inplace(row, c)                                  # row <- exp(row), every value in (0, 1]
        total[r] += sum_4_lanes(row, c, 0.0)                     # float64 sums, a fixed order


def target_logprobs_numba(hidden, head, targets, bias=None, vocab_chunk=None):  # hidden [N, E] float32, head [V, E], targets [N] -> [N]
    chunk_width = vocab_chunk or VOCAB
    N, V = hidden.shape[0], head.shape[0]
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    top = np.full(N, -np.inf)                                    # [N] float64
    total = np.zeros(N)                                          # [N]
    picked = np.zeros(N)                                         # [N]
    n_threads = min(accel.threads_for(N * chunk_width), max(N, 1))
    logits = np.empty((N, chunk_width), dtype=np.float32)              # [N, chunk_width] scratch, reused by every chunk
    for column0 in range(0, V, chunk_width):
        c = min(chunk_width, V - column0)
        chunk = logits[:, :c] if c == chunk_width else np.empty((N, c), dtype=np.float32)
        np.matmul(hidden, head[column0:column0 + c].T, out=chunk)  # [N, c]
        if bias is not None:
            add(chunk, bias[column0:column0 + c], out=chunk)
        accel.on_threads(_online_logsumexp_rows, (chunk, column0, targets, top, total, picked), n_threads)
    return (picked - (top + np.log(total))).astype(np.float32)
