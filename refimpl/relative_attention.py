"""NEZHA's relative-position attention: the hot loop of every NEZHA layer, three ways, one signature.

For queries already scaled by 1/sqrt(d) (q [B, H, T, d]), keys and values k, v [B, H, S, d], an additive
mask [B, 1, T or 1, S], head_mask [H] or None and the sinusoid table [2K+1, d]:

    R_ij       = table[clip(j - i, -K, K) + K]                 (the same row for keys and values)
    P_ij       = softmax_j(q_i . k_j + q_i . R_ij + mask_ij) * head_mask
    context_i  = sum_j P_ij v_j + sum_j P_ij R_ij

Upstream (modeling_nezha.py NezhaSelfAttention.forward) materialises R_ij as a (512, 512, d) float32 buffer
per layer; only 2K+1 distinct rows exist, so no function here builds anything [T, T, d].

    relative_attention_reference   the formula, pair by pair (slow; for reading and tests)
    relative_attention_numpy       q meets the 2K+1 rows once (q @ table^T), gathered by distance;
                                   the value side sums P per distance bucket, then meets the table
    relative_attention_numba       attention over S + 2K+1 keys ([k; table], values [v; table]) in
                                   query blocks on both cores (float32 accelerator)
    relative_attention             dispatches (refimpl/accel.py)

Each returns context [B, T, H*d] (heads merged, as NezhaSelfAttention returns it) and the probabilities
[B, H, T, S], or None for them when output_probs is False.
"""
from __future__ import annotations

import numpy as np

from . import accel
from .attention import attend, kernel_operands, merge_heads
from .ops import exp_shifted_sum, softmax, sum_4_lanes


# ---------------------------------------------------------------- 1. the definition, pair by pair


def relative_attention_reference(q, k, v, mask, head_mask, table, *, output_probs=True):
    """-> context [B, T, H*d], probs [B, H, T, S] or None: the formula above, one query at a time."""
    B, H, T, d = q.shape
    S = k.shape[2]
    K = (table.shape[0] - 1) // 2
    mask = np.zeros((B, 1, 1, S), q.dtype) if mask is None else mask
    context = np.zeros((B, H, T, d), q.dtype)
    probs = np.zeros((B, H, T, S), q.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                R = table[np.clip(np.arange(S) - i, -K, K) + K]        # [S, d]: R_ij for every key j
                scores = k[b, h] @ q[b, h, i] + R @ q[b, h, i]         # [S]
                scores += mask[b, 0, min(i, mask.shape[2] - 1)]
                p = softmax(scores)                                     # [S]
                if head_mask is not None:
                    p = p * head_mask[h]
                probs[b, h, i] = p
                context[b, h, i] = p @ v[b, h] + p @ R                 # [d]
    return merge_heads(context), (probs if output_probs else None)


# ---------------------------------------------------------------- 2. NumPy: gathers over the 2K+1 rows


def relative_key_scores(q, table):  # q [B, H, T, d], table [R, d] -> [B, H, T, T] (a strided view)
    """q_i . R_ij for every pair: q meets the R = 2K+1 distinct rows once, then each (i, j) reads its row.

    Entry (i, j) is per_row[i, clip(j - i, -K, K) + K]. Clipping is edge replication: pad per_row's last
    axis with copies of its first column on the left and of its last column on the right, long enough
    for every distance; then (i, j) reads padded[i, E + K + j - i], a diagonal walk, i.e. a view with row
    stride L - 1 (no [T, T] index array, no gather).
    """
    batch, heads, length, _ = q.shape
    rows = table.shape[0]
    k = (rows - 1) // 2
    left = right = max(0, length - 1 - k)  # E: distances beyond -K / +K need this many replicated columns
    # one GEMM over every (token, head) pair: q arrives as a head view of a [B, T, H*d] projection
    by_token = q.transpose(0, 2, 1, 3).reshape(-1, q.shape[-1])  # [B*T*H, d] (free when q is such a view)
    per_row = (by_token @ table.T).reshape(batch, length, heads, rows).transpose(0, 2, 1, 3)  # [B, H, T, R]
    padded = np.empty((batch, heads, length, left + rows + right), q.dtype)  # [B, H, T, L]
    padded[..., :left] = per_row[..., :1]
    padded[..., left:left + rows] = per_row
    padded[..., left + rows:] = per_row[..., -1:]
    item = padded.itemsize
    width = padded.shape[-1]
    # view [B, H, T, T]: (i, j) -> padded[..., i, left + K - i + j]; each row starts one column further left
    return np.lib.stride_tricks.as_strided(
        padded[..., left + k:], shape=(batch, heads, length, length),
        strides=padded.strides[:2] + ((width - 1) * item, item), writeable=False)


def probabilities_per_distance(probs, rows):  # probs [B, H, T, T] -> [B, H, T, R]
    """sum_{j : clip(j - i) = r - K} P_ij: the transpose of the gather in `relative_key_scores`.

    Row r < 2K+1 holds the one key j = i + r - K when it exists (a diagonal walk through P padded with
    K zeros on each side: a view with row stride S + 2K + 1); the end rows 0 and 2K must also collect
    every key beyond the window (j < i - K, j > i + K): added from masked row sums.
    """
    batch, heads, length, keys = probs.shape
    k = (rows - 1) // 2
    padded = np.zeros((batch, heads, length, keys + 2 * k), probs.dtype)  # [B, H, T, S + 2K]
    padded[..., k:k + keys] = probs
    item = padded.itemsize
    window = np.lib.stride_tricks.as_strided(  # [B, H, T, R]: (i, r) -> padded[..., i, i + r] = P[i, i + r - K]
        padded, shape=(batch, heads, length, rows),
        strides=padded.strides[:2] + ((padded.shape[-1] + 1) * item, item), writeable=False).copy()
    if length - 1 > k:  # some keys lie beyond +-K: fold them into the end rows
        distance = np.arange(keys)[None, :] - np.arange(length)[:, None]  # [T, S]
        window[..., 0] += np.einsum("bhts,ts->bht", probs, (distance < -k).astype(probs.dtype))
        window[..., rows - 1] += np.einsum("bhts,ts->bht", probs, (distance > k).astype(probs.dtype))
    return window


def relative_value_context(probs, table):  # probs [B, H, T, T], table [R, d] -> [B, H, T, d]
    """sum_j P_ij R_ij = sum_r (sum_{j: clip(j - i) = r - K} P_ij) table[r]."""
    buckets = probabilities_per_distance(probs, table.shape[0])  # [B, H, T, R], contiguous
    return (buckets.reshape(-1, table.shape[0]) @ table).reshape(probs.shape[:3] + table.shape[1:])  # [B, H, T, d]


def relative_attention_numpy(q, k, v, mask, head_mask, table, *, output_probs=True):
    """-> context [B, T, H*d], probs [B, H, T, S] (always computed here, returned only when asked).

    The gathers above turn the per-pair formula into two GEMM-shaped products per term."""
    context, probs = attend(q, k, v, mask, head_mask,
                            score_bias=lambda qs: relative_key_scores(qs, table),
                            value_bias=lambda pr: relative_value_context(pr, table))
    return merge_heads(context), (probs if output_probs else None)


# ---------------------------------------------------------------- 3. Numba: attention over S + 2K+1 keys


@accel.jit(error_model="numpy")
def _relative_softmax_rows(scores, per_row, mask_rows, i0, scale, fast_exp, P, buckets):
    """Queries i0 .. i0 + n - 1 of one (batch row, head): scores [n, S], per_row [n, R], mask_rows
    [T or 1, S] -> P [n, S], buckets [n, R].

    With r(i, j) = clip(j - i, -K, K) + K, R = 2K + 1:
        P[i, j]       = softmax_j(scores[i, j] + per_row[i, r(i, j)] + mask[i, j]) * scale
        buckets[i, r] = sum of P[i, j] over the keys j with r(i, j) = r
    Keys j < i - K all read per_row[i, 0], keys j > i + K all read per_row[i, R - 1]; the keys in
    between read one entry each. Every loop runs over 1-D slices from index 0, so LLVM vectorises it.
    """
    n, S = scores.shape
    R = per_row.shape[1]
    K = (R - 1) // 2
    buf = np.empty(S, scores.dtype)                               # [S] one row of scores
    one = np.ones(1, scores.dtype)[0]
    for row in range(n):
        i = i0 + row
        m = mask_rows[i if mask_rows.shape[0] > 1 else 0]         # [S]
        lo = min(max(i - K, 0), S)                                # keys [lo, hi) lie within +-K of i
        hi = min(max(i + K + 1, lo), S)
        s, a = scores[row], per_row[row]
        left, right = a[0], a[R - 1]
        s_win, m_win, a_win, b_win = s[lo:hi], m[lo:hi], a[lo - i + K:hi - i + K], buf[lo:hi]
        s_right, m_right, b_right = s[hi:], m[hi:], buf[hi:]
        for j in range(lo):
            buf[j] = (s[j] + left) + m[j]
        for t in range(hi - lo):
            b_win[t] = (s_win[t] + a_win[t]) + m_win[t]
        for t in range(S - hi):
            b_right[t] = (s_right[t] + right) + m_right[t]
        factor = (one / exp_shifted_sum(buf, S, fast_exp)) * scale
        p = P[row]
        for j in range(S):
            p[j] = buf[j] * factor
        bucket = buckets[row]
        bucket[:] = 0
        bucket[lo - i + K:hi - i + K] = p[lo:hi]
        bucket[0] += sum_4_lanes(p, lo, one - one) if lo > 0 else 0
        bucket[R - 1] += sum_4_lanes(p[hi:], S - hi, one - one) if hi < S else 0

@accel.jit()
def _relative_attention_items(q, k, v, mask, head_mask, table, block, fast_exp, want_probs, context, probs,
                              first, step):
    """Work items first, first + step, ... of (batch row b, head h, block of `block` queries); releases the GIL.

    The relative term makes this attention over S + R keys: the S tokens and the R = 2K+1 table rows,
    keys [k; table] and values [v; table]. One product gives scores and per_row = q table^T side by
    side ([n, S + R]); the softmax rows turn them into P and the buckets, also side by side; one more
    product gives context = P v + buckets table. Blocks of queries keep [n, S + R] in the core's cache.
    """
    B, H, T, d = q.shape
    S = k.shape[2]
    R = table.shape[0]
    n_blocks = (T + block - 1) // block
    keys = np.empty((S + R, d), q.dtype)                           # [S + R, d]: k of (b, h), then the table
    values = np.empty((S + R, d), q.dtype)
    keys[S:] = table
    values[S:] = table
    weights = np.empty((block, S + R), q.dtype)                    # [n, S + R]: P, then the buckets
    last = -1
    for item in range(first, B * H * n_blocks, step):
        bh, i0 = item // n_blocks, (item % n_blocks) * block
        b, h = bh // H, bh % H
        i1 = min(i0 + block, T)
        if bh != last:
            keys[:S] = k[b, h]
            values[:S] = v[b, h]
            last = bh
        scores = np.dot(q[b, h, i0:i1], keys.T)                    # [n, S + R]
        w = weights[:i1 - i0]
        mask_rows = mask[b if mask.shape[0] > 1 else 0, 0]           # [T or 1, S]
        _relative_softmax_rows(scores[:, :S], scores[:, S:], mask_rows, i0, head_mask[h], fast_exp,
                               w[:, :S], w[:, S:])
        context[b, i0:i1, h * d:(h + 1) * d] = np.dot(w, values)  # [n, d]
        if want_probs:
            probs[b, h, i0:i1] = w[:, :S]


def relative_attention_numba(q, k, v, mask, head_mask, table, *, output_probs=True, block=256, n_threads=None):
    """q [B, H, T, d], k, v [B, H, S, d] -> context [B, T, H*d], probs [B, H, T, S] or None.

    Numba twin of relative_attention_numpy (same arguments, same result within float rounding). The
    (batch row, head, query block) items are spread over `n_threads` Python threads (default:
    accel.threads_for), each with single-threaded BLAS; the [B, H, T, S] probabilities are stored only
    when output_probs.
    """
    B, H, T, d = q.shape
    q, k, v, mask, head_mask, context, probs = kernel_operands(q, k, v, mask, head_mask, output_probs)
    table = np.ascontiguousarray(table, q.dtype)
    if n_threads is None:
        n_threads = accel.threads_for(B * H * T * k.shape[2])
    block = max(1, min(int(block), T))
    args = (q, k, v, mask, head_mask, table, block, q.dtype == np.float32, bool(output_probs), context, probs)
    accel.on_threads(_relative_attention_items, args, n_threads, blas="scipy")
    return context, (probs if output_probs else None)


# ---------------------------------------------------------------- dispatch


def relative_attention(q, k, v, mask, head_mask, table, *, output_probs=True):  # -> context [B, T, H*d], probs
    """The implementation refimpl.accel picks (Numba for float32 when installed, else NumPy)."""
    run = accel.dispatch({"reference": relative_attention_reference, "numpy": relative_attention_numpy,
                          "numba": relative_attention_numba}, q.dtype)
    return run(q, k, v, mask, head_mask, table, output_probs=output_probs)
