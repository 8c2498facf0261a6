"""Longformer self-attention as the LED encoder uses it (transformers 4.37.2 `modeling_led.py
LEDEncoderSelfAttention`, copied there from `modeling_longformer.py LongformerSelfAttention`).

One layer, for x [B, T, D] with T a multiple of the layer's window (LEDEncoder pads it):

    local   every query sees window/2 keys on each side (band); padding and global tokens leave
            the band; the global tokens come back as X extra leading columns; softmax over
            [global | band] in float32; rows of padding queries are 0.
    global  each global token attends to all keys with its own projections (query_global,
            key_global, value_global); its output row overwrites the local one.

Two ways to run the local part, one result:
  - `refimpl.banded_attention.banded_attention` (the banded core: blocked NumPy or Numba): fast,
    O(T * window) memory. Used for float32.
  - `band_attention_as_upstream`: the band as upstream lays it out, one row of X + window + 1
    scores per query, with upstream's float32 softmax reproduced bit for bit
    (`float32_softmax_as_torch`). Used for float64, where upstream still rounds the scores to
    float32 for the softmax: any other float32 softmax differs from upstream by ~1e-7, far
    above the 1e-10 a float64 oracle is held to.
"""
from __future__ import annotations

import math

import numpy as np

from .attention import merge_heads, split_heads
from .banded_attention import BACKENDS, banded_attention, gather_global_keys, key_bias_from_mask
from .ops import linear, mask_min

LOCAL_BACKENDS = BACKENDS + ("upstream",)

# ---------------------------------------------------------------- torch's float32 softmax, bit for bit
# torch (CPU, ATen/native/cpu/SoftMaxKernel.cpp `_vec_softmax_lastdim`, AVX2 build as on these
# machines) computes a softmax over the last axis as: m = max(row); e = exp(row - m) with SLEEF's
# expf_u10; s = vec::reduce_all(+, e) (8 lanes accumulated in order, then a butterfly over the
# lanes; rows shorter than 8 are summed left to right); e * (1 / s).
# Checked against torch.softmax on float32 rows of 1 to 1025 entries with -inf and finfo.min
# entries: identical bits. (An AVX-512 build of torch sums 16 lanes: a different last bit.)

_F = np.float32
_R_LN2 = _F(1.442695040888963407359924681001892137426645954152985934135449406931)
_L2U, _L2L = _F(0.693145751953125), _F(1.428606765330187045e-06)
_EXP_POLY = [_F(c) for c in (0.000198527617612853646278381, 0.00139304355252534151077271,
                             0.00833336077630519866943359, 0.0416664853692054748535156,
                             0.166666671633720397949219, 0.5)]


def _fma32(a, b, c):  # float32 a * b + c with one rounding (a * b is exact in float64)
    return (a.astype(np.float64) * b + c).astype(_F)


def _pow2(n):  # int32 n [...] -> float32 2**n (n in the normal range), built from the exponent bits
    return ((n + 127).astype(np.int32) << 23).view(_F)


def expf_sleef(d):  # float32 [...] -> exp(d) float32, SLEEF's xexpf (u10), as torch's vectorised exp()
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.rint(d * _R_LN2)
        qi = np.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0).astype(np.int32)
        qf = qi.astype(_F)
        s = _fma32(qf, -_L2U, d)  # d - q * ln2 in two parts (Cody-Waite)
        s = _fma32(qf, -_L2L, s)
        u = np.full_like(s, _EXP_POLY[0])
        for c in _EXP_POLY[1:]:
            u = _fma32(u, s, c)
        u = _F(1) + _fma32(s * s, u, s)
        half = qi >> 1  # ldexp2k: 2**q as 2**(q>>1) * 2**(q - (q>>1)), no overflow on the way
        u = u * _pow2(half) * _pow2(qi - half)
        u = np.where(d < _F(-104), _F(0), u)
        u = np.where(_F(100) < d, _F(np.inf), u)
        return np.where(np.isnan(d), _F(np.nan), u).astype(_F)


def _sum_lanes_as_torch(e):  # float32 [..., n] -> [...]: vec::reduce_all(+) with 8-lane vectors
    n = e.shape[-1]
    if n < 8:  # vec_reduce_all(fun, loadu(data, n), n): left to right
        total = e[..., 0].copy()
        for i in range(1, n):
            total = total + e[..., i]
        return total
    full = n - n % 8
    lanes = e[..., :8].copy()  # [..., 8]
    for start in range(8, full, 8):
        lanes = lanes + e[..., start:start + 8]
    if n > full:  # Vec::set(acc, acc + tail, n - full): only the first lanes take the tail
        lanes[..., :n - full] = lanes[..., :n - full] + e[..., full:]
    for swap in ([4, 5, 6, 7, 0, 1, 2, 3], [2, 3, 0, 1, 6, 7, 4, 5], [1, 0, 3, 2, 5, 4, 7, 6]):  # butterfly
        lanes = lanes + lanes[..., swap]
    return lanes[..., 0]


def float32_softmax_as_torch(scores):  # [..., N] any float -> [..., N] in scores.dtype
    """nn.functional.softmax(scores, dim=-1, dtype=torch.float32).type_as(scores), bit for bit.

    Rows with no finite entry after the cast to float32 (float64's finfo.min is -inf there) give NaN,
    as upstream does.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        s = scores.astype(_F)
        e = expf_sleef(s - s.max(axis=-1, keepdims=True))
        total = _sum_lanes_as_torch(e)
        e *= (_F(1) / total)[..., None]
    return e.astype(scores.dtype)


# ---------------------------------------------------------------- the local band as upstream lays it out


def band_windows(x, w):  # x [B, H, T, d] -> [B, H, T, 2w+1, d] view: row i holds positions i-w .. i+w (0 outside)
    padded = np.pad(x, ((0, 0), (0, 0), (w, w), (0, 0)))  # [B, H, T + 2w, d]
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1, axis=2)  # [B, H, T, d, 2w+1]
    return view.transpose(0, 1, 2, 4, 3)


UPSTREAM_BAND_ROWS = 256  # queries per block in band_attention_as_upstream: bounds its memory


def band_attention_as_upstream(q, k, v, w, key_bias, query_masked, global_k=None, global_v=None,
                               global_bias=None, output_probs=False, rows=UPSTREAM_BAND_ROWS):
    """Same arguments and result as `banded_attention` (q [B, H, T, d] already scaled -> context
    [B, H, T, d], probs [B, H, T, X + 2w + 1] or None), computed on upstream's own layout: one row
    of [X global | 2w + 1 band slots] scores per query, `float32_softmax_as_torch` over it.

    Query blocks of `rows`: memory O(B * H * rows * (X + 2w + 1)) besides the outputs. Slower than
    the banded core (the emulated float32 softmax dominates): meant for the float64 oracle.
    """
    B, H, T, d = q.shape
    dtype = q.dtype
    X = 0 if global_k is None else global_k.shape[2]
    k_band, v_band = band_windows(k, w), band_windows(v, w)  # [B, H, T, 2w+1, d] views
    key = np.arange(T)[:, None] - w + np.arange(2 * w + 1)[None, :]  # [T, 2w+1]: slot s <-> key i - w + s
    # out of sequence: -inf (_mask_invalid_locations); removed keys (padding, global): + finfo.min
    bias = np.where((key >= 0) & (key < T), key_bias[:, np.clip(key, 0, T - 1)], -np.inf).astype(dtype)  # [B, T, 2w+1]
    context = np.empty_like(q)
    probs = np.empty((B, H, T, X + 2 * w + 1), dtype) if output_probs else None
    for s0 in range(0, T, rows):
        s1 = min(s0 + rows, T)
        scores = np.einsum("bhtd,bhtsd->bhts", q[:, :, s0:s1], k_band[:, :, s0:s1])  # [B, H, n, 2w+1]
        scores += bias[:, None, s0:s1]
        if X:
            g_scores = q[:, :, s0:s1] @ global_k.transpose(0, 1, 3, 2) + global_bias[:, None, None, :]  # [B, H, n, X]
            scores = np.concatenate([g_scores, scores], axis=-1)  # [B, H, n, X + 2w + 1]
        p = float32_softmax_as_torch(scores)
        p[np.broadcast_to(query_masked[:, None, s0:s1, None], p.shape)] = 0  # masked_fill(is_index_masked, 0)
        ctx = np.einsum("bhts,bhtsd->bhtd", p[..., X:], v_band[:, :, s0:s1])  # [B, H, n, d]
        if X:
            ctx += p[..., :X] @ global_v
        context[:, :, s0:s1] = ctx
        if output_probs:
            probs[:, :, s0:s1] = p
    return context, probs


# ---------------------------------------------------------------- one layer


def global_attention(p, x, is_global, is_masked, num_heads, head_mask=None, reassociate=None):
    """LEDEncoderSelfAttention._compute_global_attn_output_from_hidden.

    x [B, T, D] -> (out [B, X, H, d] for the global slots, probs [B, H, X, T]), X = max #global per row.
    Each global token attends to every key with its own projections. Spare slots of rows with fewer
    global tokens get a whole row of finfo.min (a uniform softmax in float32; NaN in float64, because
    float64's finfo.min is -inf in float32): upstream returns those rows as they are.

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
    q = linear(hidden, p["query_global.weight"], p["query_global.bias"]) / dtype.type(math.sqrt(d))  # [B, X, D]
    q = split_heads(q, num_heads)  # [B, H, X, d]
    if reassociate is None:
        reassociate = X * num_heads < D
    wk = p["key_global.weight"].reshape(num_heads, d, D)  # [H, d, D]: head h's rows of W
    wv = p["value_global.weight"].reshape(num_heads, d, D)
    bk = p["key_global.bias"].reshape(num_heads, d)  # [H, d]
    bv = p["value_global.bias"].reshape(num_heads, d)
    if reassociate:
        q_in = np.einsum("bhxd,hde->bhxe", q, wk)  # [B, H, X, D] the queries seen from the hidden states
        scores = q_in @ x[:, None].transpose(0, 1, 3, 2) + np.einsum("bhxd,hd->bhx", q, bk)[..., None]  # [B, H, X, T]
    else:
        k = split_heads(linear(x, p["key_global.weight"], p["key_global.bias"]), num_heads)  # [B, H, T, d]
        scores = q @ k.transpose(0, 1, 3, 2)  # [B, H, X, T]
    scores = np.where(slot_used[:, None, :, None], scores, mask_min(dtype))  # spare slots: the whole row
    scores = np.where(is_masked[:, None, None, :], mask_min(dtype), scores)  # padding keys
    probs = float32_softmax_as_torch(scores)  # [B, H, X, T]
    if head_mask is not None:
        probs = probs * head_mask[None, :, None, None]
    if reassociate:
        mixed = probs @ x[:, None]  # [B, H, X, D]
        out = np.einsum("bhxe,hde->bhxd", mixed, wv) + bv[None, :, None, :] * probs.sum(-1, keepdims=True)
    else:
        v = split_heads(linear(x, p["value_global.weight"], p["value_global.bias"]), num_heads)  # [B, H, T, d]
        out = probs @ v  # [B, H, X, d]
    return out.transpose(0, 2, 1, 3), probs  # [B, H, X, d] -> [B, X, H, d]


def longformer_self_attention(p, x, window, num_heads, is_masked, is_global, any_global, head_mask=None,
                              output_attentions=False, backend=None):
    """LEDEncoderSelfAttention.forward. x [B, T, D] (T a multiple of `window`) -> (context [B, T, D],
    local probs [B, H, T, X + window + 1] or None, global probs [B, H, X, T] or None).

    p holds query/key/value and query_global/key_global/value_global (weight, bias).
    is_masked, is_global [B, T] bool (padding; global tokens); any_global: whether global attention
    runs at all (upstream decides once per batch). backend: "upstream" (`band_attention_as_upstream`),
    or one of the banded core's ("numba", "numpy", "reference"); None: "upstream" for float64, the
    fastest core for float32.
    """
    B, T, D = x.shape
    d, dtype = D // num_heads, x.dtype
    if backend is None:
        backend = "upstream" if dtype == np.float64 else None
    elif backend not in LOCAL_BACKENDS:
        raise ValueError(f"backend must be one of {LOCAL_BACKENDS} or None, got {backend!r}")
    # upstream: query_vectors /= math.sqrt(self.head_dim)
    q = split_heads(linear(x, p["query.weight"], p["query.bias"]) / dtype.type(math.sqrt(d)), num_heads)  # [B, H, T, d]
    k = split_heads(linear(x, p["key.weight"], p["key.bias"]), num_heads)  # [B, H, T, d]
    v = split_heads(linear(x, p["value.weight"], p["value.bias"]), num_heads)  # [B, H, T, d]
    # remove_from_windowed_attention_mask = attention_mask != 0: padding and global keys leave the band
    key_bias = key_bias_from_mask(is_masked | is_global, dtype)  # [B, T]
    gk = gv = global_bias = None
    if any_global:
        gk, gv, global_bias = gather_global_keys(k, v, is_global)  # [B, H, X, d] x2, [B, X]
    if backend == "upstream":
        context, probs = band_attention_as_upstream(q, k, v, window // 2, key_bias, is_masked, gk, gv, global_bias,
                                                    output_probs=output_attentions)
    else:
        context, probs = banded_attention(q, k, v, window // 2, key_bias, is_masked, gk, gv, global_bias,
                                          output_probs=output_attentions, backend=backend)  # [B, H, T, d]
    if head_mask is not None:  # upstream scales the probabilities: (m * P) V = m * (P V)
        context *= head_mask[None, :, None, None]
        if probs is not None:
            probs *= head_mask[None, :, None, None]
    out = merge_heads(context)  # [B, T, D]
    global_probs = None
    if any_global:
        global_out, global_probs = global_attention(p, x, is_global, is_masked, num_heads, head_mask)
        slot_used = np.arange(global_out.shape[1])[None, :] < is_global.sum(axis=1)[:, None]  # [B, X]
        out[is_global] = global_out[slot_used].reshape(-1, D)  # [n_global, H, d] -> [n_global, D]
        if probs is not None:  # "filler values, never used": upstream zeroes the global rows
            probs[np.broadcast_to(is_global[:, None, :], probs.shape[:3])] = 0
    return out, probs, global_probs
