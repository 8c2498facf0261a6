"""Dense multi-head attention, written once for every family.

OPT, XGLM and the LED decoder (self- and cross-attention) all use the BART-style attention of
`modeling_bart.py BartAttention` (q/k/v/out projections named `q_proj`, `k_proj`, `v_proj`,
`out_proj`). NEZHA reuses `split_heads`, `merge_heads` and `attend`. Longformer's banded
attention lives in `banded_attention.py`.
"""
from __future__ import annotations

import numpy as np

from .ops import linear, mask_min, softmax
from .trace import record, record_internal


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


def project_kv(p, source, num_heads):  # source [B, S, D] -> k, v [B, H, S, d]
    k = record(p, "k_proj", linear(source, p["k_proj.weight"], p.get("k_proj.bias")))  # [B, S, D]
    v = record(p, "v_proj", linear(source, p["v_proj.weight"], p.get("v_proj.bias")))
    return split_heads(k, num_heads), split_heads(v, num_heads)


def multi_head_attention(p, x, num_heads, mask=None, *, past=None, key_value_states=None, head_mask=None,
                         clamp_to_min=False):
    """BartAttention-style multi-head attention. x [B, T, D] -> (out [B, T, D], probs [B, H, T, S], present).

    p holds `q_proj.*`, `k_proj.*`, `v_proj.*`, `out_proj.*` (biases optional: OPT's enable_bias=False).
    Self-attention: keys/values from x, appended to `past` = (k, v) [B, H, S_past, d] when given.
    Cross-attention (`key_value_states` [B, S, D]): keys/values from the encoder states, or reused
    from `past` when given (they do not change between decoding steps).
    `present` is the (k, v) pair to cache for the next step.
    """
    head_dim = x.shape[-1] // num_heads
    scaling = x.dtype.type(head_dim ** -0.5)
    q = record(p, "q_proj", linear(x, p["q_proj.weight"], p.get("q_proj.bias")))  # [B, T, D]
    q = split_heads(q * scaling, num_heads)  # [B, H, T, d]
    if key_value_states is not None:  # cross-attention
        k, v = past if past is not None else project_kv(p, key_value_states, num_heads)
    else:
        k, v = project_kv(p, x, num_heads)  # [B, H, T, d]
        if past is not None:
            k = np.concatenate([past[0], k], axis=2)  # [B, H, S_past + T, d]
            v = np.concatenate([past[1], v], axis=2)
    context, probs = attend(q, k, v, mask, head_mask, clamp_to_min, params=p)
    out = record(p, "out_proj", linear(merge_heads(context), p["out_proj.weight"], p.get("out_proj.bias")))  # [B, T, D]
    return out, probs, (k, v)
