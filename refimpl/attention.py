"""Dense multi-head attention, written once for every family.

OPT, XGLM and the LED decoder (self- and cross-attention) all use the BART-style attention of
`modeling_bart.py BartAttention` (q/k/v/out projections named `q_proj`, `k_proj`, `v_proj`,
`out_proj`). NEZHA reuses `split_heads`, `merge_heads` and `attend`. Longformer's banded
attention lives in `banded_attention.py`.

Two twins compute the attention itself, dispatched by refimpl.accel (`attention_heads`):
- `attend` (NumPy): stacked products over [B, H, T, S], then the softmax; the definition to read.
- `attention_heads_numba` (float32 with Numba): one work item per (batch row, head, block of queries)
  on every core, each a BLAS product for the scores, the mask, clamp and softmax in one pass over the
  row (kept in cache), a BLAS product for the context, written straight into [B, T, H*d] (no head
  merge). The same numbers within float32 rounding.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import accel
from .ops import exp_shifted_sum, linear, mask_min, softmax
from .trace import internals_active, record, record_internal


class PackedRows(NamedTuple):
    """The real positions of a right- or left-padded batch, as rows of one matrix (refimpl's own, for
    scoring: `skip_padding`). Every layer but the attention works on each position alone, so those layers
    run on [N, D] (N real positions), not [B, T, D]; only the attention unpacks its q, k, v to [B, T, D]
    (zeros at padding, which its mask hides) and packs its context back.

    index [N]: positions in the flattened [B*T], in order; batch, length: B, T."""

    index: np.ndarray
    batch: int
    length: int

    @classmethod
    def of(cls, attention_mask):  # attention_mask [B, T] 0/1 -> PackedRows
        return cls(np.flatnonzero(np.asarray(attention_mask).ravel() == 1), *attention_mask.shape)

    def pack(self, x):  # x [B, T, D] -> [N, D]
        return x.reshape(-1, x.shape[-1])[self.index]

    def unpack(self, x):  # x [N, D] -> [B, T, D], zeros at padding
        out = np.zeros((self.batch * self.length, x.shape[-1]), x.dtype)
        out[self.index] = x
        return out.reshape(self.batch, self.length, -1)


def split_heads(x, num_heads):  # x [B, T, H*d] -> [B, H, T, d], contiguous
    batch, length, width = x.shape
    # contiguous per head: numpy's stacked matmul is several times faster on contiguous operands
    return np.ascontiguousarray(x.reshape(batch, length, num_heads, width // num_heads).transpose(0, 2, 1, 3))


def merge_heads(x):  # x [B, H, T, d] -> [B, T, H*d]
    batch, heads, length, head_dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim)


def attend(q, k, v, mask=None, head_mask=None, clamp_to_min=False, score_bias=None, value_bias=None, params=None):
    """Scaled scores -> softmax -> weighted values, for queries already scaled.

    q [B, H, T, d], k and v [B, H, S, d], mask [B, 1, T, S] additive (0 or finfo.min), head_mask [H].
    score_bias(q) -> [B, H, T, S] and value_bias(probs) -> [B, H, T, d] are extra terms (NEZHA's
    relative positions). Returns context [B, H, T, d] and probabilities [B, H, T, S]. params: the
    attention module's parameter view, for the traced internals #scores and #probs (refimpl.trace).
    """
    scores = q @ k.transpose(0, 1, 3, 2)  # [B, H, T, S]
    if score_bias is not None:
        scores += score_bias(q)
    if mask is not None:
        scores += mask
        if clamp_to_min:  # modeling_opt.py OPTAttention: max(scores, finfo.min) so no row reaches -inf
            np.maximum(scores, mask_min(scores.dtype), out=scores)
    record_internal(params, "scores", scores)
    probs = record_internal(params, "probs", softmax(scores))  # [B, H, T, S]
    if head_mask is not None:
        probs = probs * head_mask[None, :, None, None]
    context = probs @ v  # [B, H, T, d]
    if value_bias is not None:
        context += value_bias(probs)
    return context, probs


def attention_heads(q, k, v, mask=None, head_mask=None, clamp_to_min=False, params=None, output_probs=True):
    """q [B, H, T, d] (scaled), k, v [B, H, S, d] -> context [B, T, H*d], probabilities [B, H, T, S] or None.

    The twin refimpl.accel picks; the traced internals (#scores) need the NumPy twin."""
    if internals_active():
        return attention_heads_numpy(q, k, v, mask, head_mask, clamp_to_min, params, output_probs)
    run = accel.dispatch({"numpy": attention_heads_numpy, "numba": attention_heads_numba}, q.dtype)
    return run(q, k, v, mask, head_mask, clamp_to_min, params, output_probs)


def attention_heads_numpy(q, k, v, mask=None, head_mask=None, clamp_to_min=False, params=None, output_probs=True):
    context, probs = attend(q, k, v, mask, head_mask, clamp_to_min, params=params)  # [B, H, T, d], [B, H, T, S]
    return merge_heads(context), probs


@accel.jit(error_model="numpy")
def _masked_softmax_rows(scores, mask_rows, i0, clamp, low, scale, fast_exp):
    """Rows i0 .. i0 + n - 1 of one (batch row, head), in place: scores [n, S], mask_rows [T or 1, S] ->
    softmax(max(scores + mask, low) if clamp else scores + mask) * scale."""
    n, S = scores.shape
    one = np.ones(1, scores.dtype)[0]
    for row in range(n):
        s = scores[row]                                           # [S]
        m = mask_rows[i0 + row if mask_rows.shape[0] > 1 else 0]  # [S]
        for j in range(S):
            x = s[j] + m[j]
            s[j] = low if clamp and x < low else x
        factor = (one / exp_shifted_sum(s, S, fast_exp)) * scale
        for j in range(S):
            s[j] = s[j] * factor


@accel.jit()
def _attention_items(q, k, v, mask, head_mask, clamp, low, block, fast_exp, want_probs, context, probs, first, step):
    """Work items first, first + step, ... of (batch row b, head h, block of `block` queries); releases the GIL."""
    B, H, T, d = q.shape
    n_blocks = (T + block - 1) // block
    for item in range(first, B * H * n_blocks, step):
        bh, i0 = item // n_blocks, (item % n_blocks) * block
        b, h = bh // H, bh % H
        i1 = min(i0 + block, T)
        scores = np.dot(q[b, h, i0:i1], k[b, h].T)                               # [n, S]
        _masked_softmax_rows(scores, mask[b if mask.shape[0] > 1 else 0, 0], i0, clamp, low, head_mask[h], fast_exp)
        context[b, i0:i1, h * d:(h + 1) * d] = np.dot(scores, v[b, h])          # [n, d]
        if want_probs:
            probs[b, h, i0:i1] = scores


def kernel_operands(q, k, v, mask, head_mask, output_probs):
    """What the (batch row, head, query block) kernels take (this one and relative_attention's): q, k, v
    contiguous; mask [B or 1, 1, T or 1, S] (zeros when None); head_mask [H] (ones when None); the
    outputs context [B, T, H*d] and probs [B, H, T, S] (a 1-element dummy unless output_probs, so the
    kernel's types stay fixed)."""
    B, H, T, d = q.shape
    S, dtype = k.shape[2], q.dtype
    q, k, v = (np.ascontiguousarray(a, dtype) for a in (q, k, v))
    mask = np.zeros((1, 1, 1, S), dtype) if mask is None else np.ascontiguousarray(mask, dtype)
    head_mask = np.ones(H, dtype) if head_mask is None else np.ascontiguousarray(head_mask, dtype)
    context = np.empty((B, T, H * d), dtype)
    probs = np.empty((B, H, T, S) if output_probs else (1, 1, 1, 1), dtype)
    return q, k, v, mask, head_mask, context, probs


def attention_heads_numba(q, k, v, mask=None, head_mask=None, clamp_to_min=False, params=None, output_probs=True,
                          block=256, n_threads=None):
    """Numba twin of attention_heads_numpy (the same arguments and results within float rounding)."""
    B, H, T, d = q.shape
    q, k, v, mask, head_mask, context, probs = kernel_operands(q, k, v, mask, head_mask, output_probs)
    if n_threads is None:
        n_threads = accel.threads_for(B * H * T * k.shape[2])
    block = max(1, min(int(block), T))
    args = (q, k, v, mask, head_mask, bool(clamp_to_min), mask_min(q.dtype), block, q.dtype == np.float32,
            bool(output_probs), context, probs)
    accel.on_threads(_attention_items, args, n_threads, blas="scipy")
    return context, (probs if output_probs else None)


def project_kv(p, source, num_heads, rows=None):  # source [B, S, D] (or packed [N, D]) -> k, v [B, H, S, d]
    k = record(p, "k_proj", linear(source, p["k_proj.weight"], p.get("k_proj.bias")))  # [B, S, D]
    v = record(p, "v_proj", linear(source, p["v_proj.weight"], p.get("v_proj.bias")))
    if rows is not None:
        k, v = rows.unpack(k), rows.unpack(v)  # [N, D] -> [B, S, D]
    return split_heads(k, num_heads), split_heads(v, num_heads)


def multi_head_attention(p, x, num_heads, mask=None, *, past=None, key_value_states=None, head_mask=None,
                         clamp_to_min=False, output_probs=True, rows=None):
    """BartAttention-style multi-head attention. x [B, T, D] -> (out [B, T, D], probs [B, H, T, S], present).

    p holds `q_proj.*`, `k_proj.*`, `v_proj.*`, `out_proj.*` (biases optional: OPT's enable_bias=False).
    Self-attention: keys/values from x, appended to `past` = (k, v) [B, H, S_past, d] when given.
    Cross-attention (`key_value_states` [B, S, D]): keys/values from the encoder states, or reused
    from `past` when given (they do not change between decoding steps).
    `present` is the (k, v) pair to cache for the next step.
    rows (PackedRows, self-attention without a cache): x and out are the real positions only, [N, D].
    """
    head_dim = x.shape[-1] // num_heads
    scaling = x.dtype.type(head_dim ** -0.5)
    q = record(p, "q_proj", linear(x, p["q_proj.weight"], p.get("q_proj.bias")))  # [B, T, D]
    q = split_heads((q if rows is None else rows.unpack(q)) * scaling, num_heads)  # [B, H, T, d]
    if key_value_states is not None:  # cross-attention
        k, v = past if past is not None else project_kv(p, key_value_states, num_heads)
    else:
        k, v = project_kv(p, x, num_heads, rows)  # [B, H, T, d]
        if past is not None:
            k = np.concatenate([past[0], k], axis=2)  # [B, H, S_past + T, d]
            v = np.concatenate([past[1], v], axis=2)
    context, probs = attention_heads(q, k, v, mask, head_mask, clamp_to_min, p, output_probs)  # [B, T, D], [B, H, T, S]
    if rows is not None:
        context = rows.pack(context)  # [N, D]
    out = record(p, "out_proj", linear(context, p["out_proj.weight"], p.get("out_proj.bias")))  # [B, T, D]
    return out, probs, (k, v)
