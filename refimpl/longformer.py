"""Longformer self-attention as the LED encoder uses it (transformers 4.37.2 `modeling_led.py
LEDEncoderSelfAttention`, copied there from `modeling_longformer.py LongformerSelfAttention`).

One layer, for x [B, T, D] with T a multiple of the layer's window (LEDEncoder pads it):

    local   every query sees window/2 keys on each side (band); padding and global tokens leave
            the band; the global tokens come back as X extra leading columns; softmax over
            [global | band] in float32; rows of padding queries are 0.
    global  each global token attends to all keys with its own projections (query_global,
            key_global, value_global); its output row overwrites the local one.

The local part is the banded core, `refimpl.banded_attention.banded_attention` (its definition is
`banded_attention_reference`). Upstream runs both softmaxes with `dtype=torch.float32`, also in a float64
run (an "island"). `softmax_dtype_for` picks refimpl's: float32 models a float32 softmax; float64 models
a float64 one (the exact mathematics; fully masked rows are uniform, where upstream's float32 island
gives NaN), or, for models loaded with islands="upstream", torch's float32 softmax bit for bit as its
AVX2 or AVX-512 kernel sums (`torch_float32(cpu)`, refimpl/torch_softmax.py).
"""
from __future__ import annotations

import math

import numpy as np

from .attention import merge_heads, split_heads
from .banded_attention import banded_attention, gather_global_keys, key_bias_from_mask, torch_float32
from .ops import linear, mask_min, softmax
from .torch_softmax import float32_softmax_as_torch
from .trace import internals_active, record, record_computed, record_internal


def softmax_dtype_for(dtype, islands_cpu=None):  # -> the softmax_dtype of both LED attention softmaxes
    """modeling_led.py: `softmax(scores, dim=-1, dtype=torch.float32)`. float32 models: float32. float64
    models: float64, or torch's float32 on the `islands_cpu` kernel when reproducing upstream's islands."""
    if np.dtype(dtype) == np.float32:
        return np.float32
    return None if islands_cpu is None else torch_float32(islands_cpu)


def _global_softmax(scores, islands_cpu=None):  # scores [B, H, X, T] -> probabilities, in scores.dtype
    if scores.dtype == np.float64 and islands_cpu is None:  # float64 end to end: a row of finfo.min is uniform
        return softmax(scores)
    return float32_softmax_as_torch(scores, islands_cpu or "avx2")  # upstream's float32 softmax, bit for bit

# ---------------------------------------------------------------- one layer


def global_attention(p, x, is_global, is_masked, num_heads, head_mask=None, reassociate=None, islands_cpu=None):
    """LEDEncoderSelfAttention._compute_global_attn_output_from_hidden.

    x [B, T, D] -> (out [B, X, H, d] for the global slots, probs [B, H, X, T]), X = max #global per row.
    Each global token attends to every key with its own projections. Spare slots of rows with fewer
    global tokens get a whole row of finfo.min: a uniform softmax, except in upstream's float64 island
    (float64's finfo.min is -inf in float32: NaN), which upstream returns as it is. islands_cpu: see
    longformer_self_attention.

    Upstream projects every token with key_global and value_global (2 T D^2 multiply-adds) for a few
    global queries. The same numbers, reassociated, cost 2 X H T D:
        scores = q_h (x Wk_h^T + bk_h)^T = (q_h Wk_h) x^T + q_h . bk_h
        out_h  = P_h (x Wv_h^T + bv_h)   = (P_h x) Wv_h^T + bv_h sum(P_h)
    `reassociate` (default: whenever it is cheaper, X H < D) picks the second form.
    """
    B, T, D = x.shape
    d, dtype = D // num_heads, x.dtype
    counts = is_global.sum(axis=1)  # [B]
    X = int(counts.max())
    slot_used = np.arange(X)[None, :] < counts[:, None]  # [B, X]
    hidden = np.zeros((B, X, D), dtype)  # upstream: global_attn_hidden_states = new_zeros(...)
    hidden[slot_used] = x[is_global]  # the global tokens of each row, in sequence order
    q = linear(hidden, p["query_global.weight"], p["query_global.bias"])  # [B, X, D]
    record(p, "query_global", q.transpose(1, 0, 2))  # upstream's layout: [X, B, D]
    for name in ("key_global", "value_global"):  # upstream projects every token (traced only)
        record_computed(p, name, lambda name=name: linear(x, p[name + ".weight"], p[name + ".bias"]).transpose(1, 0, 2))
    q = q / dtype.type(math.sqrt(d))
    q = split_heads(q, num_heads)  # [B, H, X, d]
    if reassociate is None:
        reassociate = X * num_heads < D
    wk = p["key_global.weight"].reshape(num_heads, d, D)  # [H, d, D]: head h's rows of W
    wv = p["value_global.weight"].reshape(num_heads, d, D)
    bk = p["key_global.bias"].reshape(num_heads, d)  # [H, d]
    bv = p["value_global.bias"].reshape(num_heads, d)
    if reassociate:
        q_in = np.einsum("bhxd,hde->bhxe", q, wk)  # [B, H, X, D] the queries seen from the hidden states
        # every head's queries in one product per row, so x (all T hidden states) is read once, not H times
        scores = (q_in.reshape(B, num_heads * X, D) @ x.transpose(0, 2, 1)).reshape(B, num_heads, X, T)
        scores += np.einsum("bhxd,hd->bhx", q, bk)[..., None]  # [B, H, X, T]
    else:
        k = split_heads(linear(x, p["key_global.weight"], p["key_global.bias"]), num_heads)  # [B, H, T, d]
        scores = q @ k.transpose(0, 1, 3, 2)  # [B, H, X, T]
    scores = np.where(slot_used[:, None, :, None], scores, mask_min(dtype))  # spare slots: the whole row
    scores = np.where(is_masked[:, None, None, :], mask_min(dtype), scores)  # padding keys
    probs = _global_softmax(scores, islands_cpu)  # [B, H, X, T]
    if head_mask is not None:
        probs = probs * head_mask[None, :, None, None]
    if reassociate:
        mixed = (probs.reshape(B, num_heads * X, T) @ x).reshape(B, num_heads, X, D)  # [B, H, X, D], x read once
        out = np.einsum("bhxe,hde->bhxd", mixed, wv) + bv[None, :, None, :] * probs.sum(-1, keepdims=True)
    else:
        v = split_heads(linear(x, p["value_global.weight"], p["value_global.bias"]), num_heads)  # [B, H, T, d]
        out = probs @ v  # [B, H, X, d]
    return out.transpose(0, 2, 1, 3), probs  # [B, H, X, d] -> [B, X, H, d]


def longformer_self_attention(p, x, window, num_heads, is_masked, is_global, any_global, head_mask=None,
                              output_attentions=False, backend=None, islands_cpu=None):
    """LEDEncoderSelfAttention.forward. x [B, T, D] (T a multiple of `window`) -> (context [B, T, D],
    local probs [B, H, T, X + window + 1] or None, global probs [B, H, X, T] or None).

    p holds query/key/value and query_global/key_global/value_global (weight, bias).
    is_masked, is_global [B, T] bool (padding; global tokens); any_global: whether global attention
    runs at all (upstream decides once per batch). backend: the banded core's ("reference", "numpy",
    "numba"; None: refimpl.accel's policy). islands_cpu: None, or "avx2" / "avx512" to compute a float64
    model's softmaxes as upstream's float32 island on that torch kernel.
    """
    B, T, D = x.shape
    d, dtype = D // num_heads, x.dtype
    # upstream: query_vectors /= math.sqrt(self.head_dim)

    def project(name):  # x [B, T, D] -> [B, T, D]; upstream projects x.transpose(0, 1), so it traces [T, B, D]
        y = linear(x, p[name + ".weight"], p[name + ".bias"])
        record(p, name, y.transpose(1, 0, 2))
        return y

    q, k, v = project("query"), project("key"), project("value")  # [B, T, D] each
    q = split_heads(q / dtype.type(math.sqrt(d)), num_heads)  # [B, H, T, d]
    k, v = split_heads(k, num_heads), split_heads(v, num_heads)  # [B, H, T, d]
    # remove_from_windowed_attention_mask = attention_mask != 0: padding and global keys leave the band
    key_bias = key_bias_from_mask(is_masked | is_global, dtype)  # [B, T]
    gk = gv = global_bias = None
    if any_global:
        gk, gv, global_bias = gather_global_keys(k, v, is_global)  # [B, H, X, d] x2, [B, X]
    softmax_dtype = softmax_dtype_for(dtype, islands_cpu)
    context, probs = banded_attention(q, k, v, window // 2, key_bias, is_masked, gk, gv, global_bias,
                                      output_probs=output_attentions or internals_active(),
                                      softmax_dtype=softmax_dtype, backend=backend)  # [B, H, T, d]
    if head_mask is not None:  # upstream scales the probabilities: (m * P) V = m * (P V)
        context *= head_mask[None, :, None, None]
        if probs is not None:
            probs *= head_mask[None, :, None, None]
    out = merge_heads(context)  # [B, T, D]
    global_probs = None
    if any_global:
        global_out, global_probs = global_attention(p, x, is_global, is_masked, num_heads, head_mask,
                                                    islands_cpu=islands_cpu)
        slot_used = np.arange(global_out.shape[1])[None, :] < is_global.sum(axis=1)[:, None]  # [B, X]
        out[is_global] = global_out[slot_used].reshape(-1, D)  # [n_global, H, d] -> [n_global, D]
        if probs is not None:  # "filler values, never used": upstream zeroes the global rows
            probs[np.broadcast_to(is_global[:, None, :], probs.shape[:3])] = 0
    record_internal(p, "local_probs", probs)  # [B, H, T, X + w + 1]
    record_internal(p, "global_probs", global_probs)  # [B, H, X, T]
    return record(p, "", out), (probs if output_attentions else None), global_probs
