"""Banded (Longformer / LED encoder) self-attention: the local-attention core of one layer.

Upstream: transformers 4.37.2 `modeling_led.py LEDEncoderSelfAttention.forward`, the local part
(`_sliding_chunks_query_key_matmul`, `_mask_invalid_locations`, `_concat_with_global_key_attn_probs`,
softmax, `_compute_attn_output_with_global_indices` / `_sliding_chunks_matmul_attn_probs_value`).

What it computes, per batch row b, head h and query i (w = one_sided_window = attention_window // 2):

    band slots   s = 0 .. 2w, key j = i - w + s
                 score = q_i . k_j + key_bias[b, j]          (0, or finfo.min for a removed key)
                 score = -inf                                  if j < 0 or j >= T
    global cols  x = 0 .. X-1
                 score = q_i . gk_x + global_bias[b, x]        (0, or finfo.min for a spare slot)
    p = softmax([global cols | band slots])                    (upstream: dtype=torch.float32)
    p = 0                                                      if query_masked[b, i]
    context_i = sum_x p_x gv_x + sum_s p_s v_j(s)

q is expected already divided by sqrt(head_dim) (upstream divides `query_vectors` before the matmul).
The softmax (`softmax_dtype`):
  np.float32 (default)  upstream's `softmax(..., dtype=torch.float32)`: the scores are rounded to float32,
                        the softmax runs in float32, the probabilities are cast back (`.type_as`). In
                        float64, finfo.min becomes -inf in float32, so a row with no finite score gives
                        NaN (upstream does the same); such rows are the masked rows, then set to 0.
  None                  the input dtype (float64 end to end: the exact mathematics, not upstream).
  torch_float32(cpu)    float32 as torch's CPU kernel ("avx2": TORCH_FLOAT32, or "avx512") computes it, bit
                        for bit, on upstream's row layout (refimpl/torch_softmax.py): upstream's float64
                        island, for models loaded with islands="upstream".

Implementations with one signature, and `banded_attention`, which dispatches (refimpl/accel.py):
  banded_attention_reference     the definition, one query at a time (slow; for reading and tests)
  banded_attention_numpy         vectorised, blocked by query blocks (GEMM-shaped, never T x T)
  banded_attention_numba         the same blocks as Numba kernels (float32 accelerator)
  banded_attention_torch_layout  upstream's [X | 2w + 1] rows, for softmax_dtype=torch_float32(cpu)
"""

import functools

import numpy as np

from . import accel
from .ops import exp_shifted_sum
from .torch_softmax import LANES, float32_softmax_as_torch

def torch_float32(cpu="avx2"):  # -> the softmax_dtype for torch's float32 softmax on its `cpu` kernel, bit for bit
    if cpu not in LANES:
        raise ValueError(f"torch's {cpu!r} softmax kernel is not reproduced; choose one of {sorted(LANES)}")
    return f"torch-float32-{cpu}"


TORCH_FLOAT32 = torch_float32("avx2")  # upstream's float64 island as torch's AVX2 kernel computes it


def _is_torch(softmax_dtype):
    return isinstance(softmax_dtype, str) and softmax_dtype.startswith("torch-float32-")


def _torch_cpu(softmax_dtype):  # "torch-float32-avx512" -> "avx512"
    return softmax_dtype.rsplit("-", 1)[1]

# Upstream's `nn.functional.softmax(attn_scores, dim=-1, dtype=torch.float32)` (modeling_led.py
# LEDEncoderSelfAttention.forward): the softmax always runs in float32.
UPSTREAM_SOFTMAX_DTYPE = np.float32


# ----------------------------------------------------------------------------------------------
# Input checking and mask helpers
# ----------------------------------------------------------------------------------------------

def _per_position(a, name, shape, letters, dtype):
    """An optional per-position array: zeros of `shape` when None, else checked against `shape`, as `dtype`."""
    if a is None:
        return np.zeros(shape, dtype)
    a = np.asarray(a)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {letters} = {shape}, got {a.shape}")
    return a.astype(dtype, copy=False)


def check_inputs(q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias,
                  softmax_dtype):
    """Validate shapes/dtypes; return filled-in (key_bias, query_masked, gk, gv, global_bias, sm_dtype)."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        if not isinstance(a, np.ndarray) or a.ndim != 4:
            raise ValueError(f"{name} must be a 4-D numpy array [B, H, T, d], got "
                             f"{type(a).__name__} with shape {getattr(a, 'shape', None)}")
    dtype = q.dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"q must be float32 or float64, got {dtype}")
    if k.dtype != dtype or v.dtype != dtype:
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must have the same shape [B, H, T, d], got {q.shape}, {k.shape}, {v.shape}")
    B, H, T, d = q.shape
    if T < 1 or d < 1:
        raise ValueError(f"q must have T >= 1 and d >= 1, got shape {q.shape}")
    if int(one_sided_window) != one_sided_window or one_sided_window < 0:
        raise ValueError(f"one_sided_window must be an integer >= 0 (attention_window // 2), got {one_sided_window!r}")

    key_bias = _per_position(key_bias, "key_bias", (B, T), "[B, T]", dtype)
    query_masked = _per_position(query_masked, "query_masked", (B, T), "[B, T]", bool)

    if (global_k is None) != (global_v is None):
        raise ValueError("global_k and global_v must be given together (or both omitted)")
    if global_k is None:
        if global_bias is not None:
            raise ValueError("global_bias given without global_k / global_v")
        global_k = np.zeros((B, H, 0, d), dtype)
        global_v = np.zeros((B, H, 0, d), dtype)
        global_bias = np.zeros((B, 0), dtype)
    else:
        X = global_k.shape[2] if global_k.ndim == 4 else -1
        if global_k.shape != (B, H, X, d) or global_v.shape != (B, H, X, d):
            raise ValueError(f"global_k and global_v must have shape [B, H, X, d] = [{B}, {H}, X, {d}], "
                             f"got {global_k.shape} and {global_v.shape}")
        if global_k.dtype != dtype or global_v.dtype != dtype:
            raise ValueError(f"global_k / global_v must have dtype {dtype}, got {global_k.dtype}, {global_v.dtype}")
        global_bias = _per_position(global_bias, "global_bias", (B, X), "[B, X]", dtype)

    if _is_torch(softmax_dtype):
        torch_float32(_torch_cpu(softmax_dtype))  # checks the kernel's name
        return key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype
    sm_dtype = dtype if softmax_dtype is None else np.dtype(softmax_dtype)
    if sm_dtype not in (np.float32, np.float64):
        raise ValueError(f"softmax_dtype must be None, float32, float64 or torch_float32(cpu), got {softmax_dtype!r}")
    return key_bias, query_masked, global_k, global_v, global_bias, np.dtype(sm_dtype)


def key_bias_from_mask(removed, dtype=np.float32):
    """removed [B, T] bool (padding or global token) -> additive key bias [B, T]: 0 or finfo(dtype).min.

    Upstream: `remove_from_windowed_attention_mask = attention_mask != 0` (padding AND global tokens
    leave the band), then `masked_fill(..., finfo.min)` added through `_sliding_chunks_query_key_matmul`.
    """
    removed = np.asarray(removed, bool)
    return np.where(removed, np.finfo(dtype).min, 0).astype(dtype)


def gather_global_keys(k, v, is_global):
    """k, v [B, H, T, d], is_global [B, T] -> gk, gv [B, H, X, d], global_bias [B, X], X = max #global.

    Global tokens of row b go first, in sequence order; rows with fewer than X global tokens get zero
    keys/values and bias finfo.min in their spare slots (modeling_led.py `_get_global_attn_indices`,
    `_concat_with_global_key_attn_probs`: `key_vectors_only_global = new_zeros(...)`, spare slots
    set to finfo.min). The keys/values are the *local* projections (`self.key`, `self.value`).
    """
    is_global = np.asarray(is_global, bool)
    B, H, T, d = k.shape
    if is_global.shape != (B, T):
        raise ValueError(f"is_global must have shape [B, T] = {(B, T)}, got {is_global.shape}")
    counts = is_global.sum(axis=1)                                   # [B]
    X = int(counts.max()) if B else 0
    gk = np.zeros((B, H, X, d), k.dtype)
    gv = np.zeros((B, H, X, d), v.dtype)
    global_bias = np.full((B, X), np.finfo(k.dtype).min, k.dtype)
    for b in range(B):
        idx = np.flatnonzero(is_global[b])                          # [n_b] positions, ascending
        gk[b, :, : idx.size] = k[b][:, idx]                          # [H, n_b, d]
        gv[b, :, : idx.size] = v[b][:, idx]
        global_bias[b, : idx.size] = 0
    return gk, gv, global_bias


def _softmax_rows(scores, sm_dtype):
    """scores [..., n] -> probabilities [..., n] in the scores' dtype, computed in the softmax dtype.

    max-subtract, exp, sum, multiply by the reciprocal of the sum (as torch's CPU softmax kernel does).
    A row whose entries are all -inf gives NaN, as upstream does; callers zero masked rows afterwards.
    """
    if _is_torch(sm_dtype):
        return float32_softmax_as_torch(scores, _torch_cpu(sm_dtype))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # float64 finfo.min -> -inf in float32
        e = scores.astype(sm_dtype)
        e -= e.max(axis=-1, keepdims=True)
        np.exp(e, out=e)
        e *= (1 / e.sum(axis=-1, keepdims=True))
    return e.astype(scores.dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# 1. The definition: one query at a time
# ----------------------------------------------------------------------------------------------

def banded_attention_reference(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                               global_k=None, global_v=None, global_bias=None, *,
                               output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE):
    """q, k, v [B, H, T, d] -> context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None.

    The definition, written for reading: for each query, its 2w+1 band keys and X global keys,
    a softmax over [global | band], then the weighted sum of values. Slow (Python loop over B*H*T).
    """
    key_bias, query_masked, gk, gv, global_bias, sm_dtype = check_inputs(
        q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype)
    w = int(one_sided_window)
    B, H, T, d = q.shape
    X = gk.shape[2]
    dtype = q.dtype
    context = np.zeros((B, H, T, d), dtype)
    probs = np.zeros((B, H, T, X + 2 * w + 1), dtype) if output_probs else None
    for b in range(B):
        for h in range(H):
            for i in range(T):
                scores = np.full(X + 2 * w + 1, -np.inf, dtype)      # [X + 2w + 1]
                # global columns first (upstream: torch.cat((global_key_attn_scores, attn_scores), -1))
                for x in range(X):
                    scores[x] = q[b, h, i] @ gk[b, h, x] + global_bias[b, x]
                # band slot s <-> key j = i - w + s; out-of-sequence slots stay -inf
                # (upstream _mask_invalid_locations)
                for s in range(2 * w + 1):
                    j = i - w + s
                    if 0 <= j < T:
                        scores[X + s] = q[b, h, i] @ k[b, h, j] + key_bias[b, j]
                p = _softmax_rows(scores, sm_dtype)                  # [X + 2w + 1]
                if query_masked[b, i]:
                    p = np.zeros_like(p)                             # upstream masked_fill(is_index_masked, 0)
                ctx = np.zeros(d, dtype)
                for x in range(X):
                    ctx += p[x] * gv[b, h, x]
                for s in range(2 * w + 1):
                    j = i - w + s
                    if 0 <= j < T:
                        ctx += p[X + s] * v[b, h, j]
                context[b, h, i] = ctx
                if output_probs:
                    probs[b, h, i] = p
    return context, probs


# ----------------------------------------------------------------------------------------------
# 2. Vectorised and blocked: one GEMM per query block, never anything T x T
# ----------------------------------------------------------------------------------------------

def default_block_size(T, one_sided_window):
    """Query-block size: small enough that the wasted corners (block x block) stay small against
    the band (2w+1), large enough that each GEMM is big. At w=512 (LED-base), 2 cores: block 128
    0.87 s, 256 1.16 s, 512 1.54 s (Numba path, T=16384, H=12, d=64)."""
    w = int(one_sided_window)
    return int(min(T, max(32, min(128, w // 4))))


def block_size_for(T, one_sided_window, block_size):
    """The query block size the blocked backends use: `block_size`, or default_block_size(T, w)."""
    bs = default_block_size(T, int(one_sided_window)) if block_size is None else int(block_size)
    if bs < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return bs


def _blocked_inputs(q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias,
                    softmax_dtype, block_size):
    """check_inputs, plus the one-sided window w and the query block size both blocked backends use."""
    checked = check_inputs(q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias,
                           softmax_dtype)
    w = int(one_sided_window)
    return (*checked, w, block_size_for(q.shape[2], w, block_size))


def _band_slot_index(n_rows, row0, key0, w):
    """Block rows row0..row0+n_rows-1, keys starting at key0 -> column index [n_rows, 2w+1] of each
    band slot inside the block's key window (may fall outside the window: caller masks it)."""
    rows = row0 + np.arange(n_rows)                                  # [n]
    return rows[:, None] - w + np.arange(2 * w + 1)[None, :] - key0   # [n, 2w+1]


def _numpy_block(q, k, v, gkT, gv, key_bias, global_bias, query_masked, w, s0, e0, sm_dtype,
                 context, probs):
    """Query block [s0, e0): writes context[:, :, s0:e0] (and probs[:, :, s0:e0] if probs is not None).

    The block sees keys [s0 - w, e0 + w) clipped to the sequence: one matmul
    [B, H, nb, d] @ [B, H, d, nk], out-of-band entries -inf, key bias added, softmax over
    [global | block keys] in sm_dtype, one matmul with the block's values.
    """
    T = q.shape[2]
    X = gkT.shape[-1]
    dtype = q.dtype
    k0, k1 = max(0, s0 - w), min(T, e0 + w)
    nb, nk = e0 - s0, k1 - k0
    # band test inside the block: |i - j| <= w with i = s0 + r, j = k0 + c
    rel = (k0 + np.arange(nk))[None, :] - (s0 + np.arange(nb))[:, None]       # [nb, nk]
    add = np.where((np.abs(rel) <= w)[None], key_bias[:, None, k0:k1], dtype.type(-np.inf))  # [B, nb, nk]
    scores = q[:, :, s0:e0] @ np.swapaxes(k[:, :, k0:k1], -1, -2)               # [B, H, nb, nk]
    scores += add[:, None]                                                      # [B, 1, nb, nk] bcast
    g_scores = q[:, :, s0:e0] @ gkT                                             # [B, H, nb, X]
    g_scores += global_bias[:, None, None, :]
    # one softmax over [global | block keys], in the softmax dtype (upstream: float32), in place,
    # without concatenating the two parts (saves a copy of the block per step)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 finfo.min -> -inf in float32, as upstream
        g_scores = g_scores.astype(sm_dtype, copy=False)
        scores = scores.astype(sm_dtype, copy=False)
        mx = scores.max(axis=-1, keepdims=True)                                 # [B, H, nb, 1]
        if X:
            np.maximum(mx, g_scores.max(axis=-1, keepdims=True), out=mx)
        np.subtract(scores, mx, out=scores)
        np.exp(scores, out=scores)
        np.subtract(g_scores, mx, out=g_scores)
        np.exp(g_scores, out=g_scores)
        inv = 1 / (scores.sum(axis=-1, keepdims=True) + g_scores.sum(axis=-1, keepdims=True))
        scores *= inv
        g_scores *= inv
    p_band = scores.astype(dtype, copy=False)                                   # [B, H, nb, nk]
    p_glob = g_scores.astype(dtype, copy=False)                                 # [B, H, nb, X]
    masked = query_masked[:, s0:e0]                                             # [B, nb]
    if masked.any():                                 # upstream masked_fill(is_index_masked, 0)
        rows = np.broadcast_to(masked[:, None, :, None], p_band.shape[:3] + (1,))
        p_band[np.broadcast_to(rows, p_band.shape)] = 0                         # also clears NaN rows
        p_glob[np.broadcast_to(rows, p_glob.shape)] = 0
    ctx = p_band @ v[:, :, k0:k1]                                               # [B, H, nb, d]
    if X:
        ctx += p_glob @ gv
    context[:, :, s0:e0] = ctx
    if probs is not None:
        probs[:, :, s0:e0, :X] = p_glob
        col = _band_slot_index(nb, s0, k0, w)                                   # [nb, 2w+1]
        ok = (col >= 0) & (col < nk)
        band = np.take_along_axis(p_band, np.clip(col, 0, nk - 1)[None, None], axis=-1)
        probs[:, :, s0:e0, X:] = np.where(ok, band, 0)


def _torch_softmax_on_upstream_layout(blocked):
    """The blocked backends cannot sum a row in torch's order: with softmax_dtype=torch_float32(cpu) they hand the
    call to banded_attention_torch_layout (the same arguments and result layout)."""
    @functools.wraps(blocked)
    def run(q, k, v, one_sided_window, key_bias=None, query_masked=None, global_k=None, global_v=None,
            global_bias=None, *, output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, **options):
        args = (q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias)
        if _is_torch(softmax_dtype):
            return banded_attention_torch_layout(*args, output_probs=output_probs, softmax_dtype=softmax_dtype)
        return blocked(*args, output_probs=output_probs, softmax_dtype=softmax_dtype, **options)
    return run


@_torch_softmax_on_upstream_layout
def banded_attention_numpy(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                           global_k=None, global_v=None, global_bias=None, *,
                           output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, block_size=None,
                           n_threads=None):
    """q, k, v [B, H, T, d] -> context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None.

    Query blocks of `block_size` rows, each one GEMM-shaped step (`_numpy_block`); temporaries are
    O(B * H * block * (block + 2w)), never T x T; probabilities for the whole sequence are stored
    only when output_probs. Blocks are independent: they run on `n_threads` threads (default:
    accel.threads_for), each with single-threaded BLAS.
    """
    key_bias, query_masked, gk, gv, global_bias, sm_dtype, w, bs = _blocked_inputs(
        q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype, block_size)
    B, H, T, d = q.shape
    X = gk.shape[2]
    gkT = np.swapaxes(gk, -1, -2)                                              # [B, H, d, X]
    context = np.empty((B, H, T, d), q.dtype)
    probs = np.zeros((B, H, T, X + 2 * w + 1), q.dtype) if output_probs else None
    n_blocks = (T + bs - 1) // bs

    def blocks(first, step):                # one thread's share of the query blocks
        for s0 in range(first * bs, T, step * bs):
            _numpy_block(q, k, v, gkT, gv, key_bias, global_bias, query_masked, w, s0, min(s0 + bs, T),
                         sm_dtype, context, probs)

    if n_threads is None:
        n_threads = accel.threads_for(B * H * T * (2 * w + 1))
    accel.on_threads(blocks, (), min(n_threads, n_blocks), blas="numpy")
    return context, probs


# ----------------------------------------------------------------------------------------------
# 3. The same blocks as Numba kernels (float32 accelerator; twin of banded_attention_numpy)
# ----------------------------------------------------------------------------------------------

@accel.jit()
def _softmax_block_rows(S, G, key_bias_b, global_bias_b, masked_b, s0, k0, w, sm_proto, fast_exp,
                        P, PG):
    """One query block: scores S [nb, nk], G [nb, X] -> probabilities P [nb, nk], PG [nb, X].

    Row r is query i = s0 + r; column c is key j = k0 + c; band: |i - j| <= w, else p = 0.
    Scores get the key bias (input dtype), are cast to the softmax dtype (sm_proto.dtype;
    upstream: float32), then max-subtract, exp, sum, times 1/sum, cast back into P.
    fast_exp: use _exp_f32_inplace (only when the softmax dtype is float32), else np.exp.
    """
    nb, nk = S.shape
    X = G.shape[1]
    buf = np.empty(X + 2 * w + 1, sm_proto.dtype)                 # [X + 2w + 1] one row
    one = np.ones(1, sm_proto.dtype)[0]
    for r in range(nb):
        i = s0 + r
        lo = max(0, i - w - k0)                                   # first band column
        hi = min(nk, i + w + 1 - k0)                              # one past the last
        n = X + hi - lo
        if masked_b[i]:                                           # upstream masked_fill(..., 0)
            P[r, :] = 0
            PG[r, :] = 0
            continue
        # 1-D slices indexed from 0 by the loop variable alone: numba then emits no negative-index
        # wraparound checks and LLVM vectorises the loops (S[r, c] or buf[X + t] indexing: 2x slower)
        s_band = S[r, lo:hi]                                      # [hi - lo]
        b_band = key_bias_b[k0 + lo:k0 + hi]                      # [hi - lo]
        buf_band = buf[X:n]                                       # [hi - lo]
        g_row = G[r]                                              # [X]
        for x in range(X):
            buf[x] = g_row[x] + global_bias_b[x]
        for t in range(hi - lo):
            buf_band[t] = s_band[t] + b_band[t]
        inv = one / exp_shifted_sum(buf, n, fast_exp)
        pg_row = PG[r]                                            # [X]
        for x in range(X):
            pg_row[x] = buf[x] * inv
        P[r, :lo] = 0                                             # outside the band
        P[r, hi:] = 0
        p_band = P[r, lo:hi]                                      # [hi - lo]
        for t in range(hi - lo):
            p_band[t] = buf_band[t] * inv

@accel.jit()
def _attention_block(q, k, v, gk, gv, key_bias, global_bias, query_masked, w, b, h, s0, e0,
                     sm_proto, fast_exp, want_probs, context, probs):
    """Batch row b, head h, query block [s0, e0): writes context[b, h, s0:e0] (and probs).

    S = Q_blk K_win^T (BLAS), the masked softmax row by row, context = P V_win + PG V_global.
    """
    T = q.shape[2]
    X = gk.shape[2]
    k0 = max(0, s0 - w)
    k1 = min(T, e0 + w)
    qb = q[b, h, s0:e0]                                           # [nb, d]
    S = np.dot(qb, k[b, h, k0:k1].T)                               # [nb, nk]
    G = np.dot(qb, gk[b, h].T)                                     # [nb, X]
    P = S                                                         # in place: each row is read into a buffer first
    PG = G
    _softmax_block_rows(S, G, key_bias[b], global_bias[b], query_masked[b], s0, k0, w,
                        sm_proto, fast_exp, P, PG)
    ctx = np.dot(P, v[b, h, k0:k1])                                # [nb, d]
    if X > 0:
        ctx += np.dot(PG, gv[b, h])
    context[b, h, s0:e0] = ctx
    if want_probs:
        for r in range(e0 - s0):
            i = s0 + r
            for x in range(X):
                probs[b, h, i, x] = PG[r, x]
            for s in range(2 * w + 1):
                c = i - w + s - k0                                 # band slot s <-> key i - w + s
                if c >= 0 and c < k1 - k0:
                    probs[b, h, i, X + s] = P[r, c]

@accel.jit()
def _attention_blocks(q, k, v, gk, gv, key_bias, global_bias, query_masked, w, bs,
                      sm_proto, fast_exp, want_probs, context, probs, first, step):
    """Work items first, first + step, ... of (batch x head x query block); releases the GIL.

    One call per thread (see banded_attention_numba). Python threads instead of `prange`:
    the same speed here, and `parallel=True` tripled the compile time (3 x 8 s more CPU for
    the three dtype combinations), which every fresh checkout and CI run pays.
    """
    B, H, T, d = q.shape
    n_blocks = (T + bs - 1) // bs
    for item in range(first, B * H * n_blocks, step):
        bh = item // n_blocks
        s0 = (item % n_blocks) * bs
        _attention_block(q, k, v, gk, gv, key_bias, global_bias, query_masked, w, bh // H, bh % H,
                         s0, min(s0 + bs, T), sm_proto, fast_exp, want_probs, context, probs)


@_torch_softmax_on_upstream_layout
def banded_attention_numba(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                           global_k=None, global_v=None, global_bias=None, *,
                           output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, block_size=None,
                           n_threads=None):
    """q, k, v [B, H, T, d] -> context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None.

    Numba twin of banded_attention_numpy (same arguments, same result within float rounding). Blocks
    are spread over `n_threads` Python threads (default: accel.threads_for); the kernel releases the
    GIL and each thread runs single-threaded BLAS.
    """
    key_bias, query_masked, gk, gv, global_bias, sm_dtype, w, bs = _blocked_inputs(
        q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype, block_size)
    B, H, T, d = q.shape
    X = gk.shape[2]
    q, k, v, gk, gv = (np.ascontiguousarray(a) for a in (q, k, v, gk, gv))
    key_bias, global_bias = np.ascontiguousarray(key_bias), np.ascontiguousarray(global_bias)
    query_masked = np.ascontiguousarray(query_masked)
    context = np.empty((B, H, T, d), q.dtype)
    # probs are written only when asked; otherwise a 1-element dummy keeps the kernel's types fixed
    probs = np.zeros((B, H, T, X + 2 * w + 1) if output_probs else (1, 1, 1, 1), q.dtype)
    sm_proto = np.zeros(1, sm_dtype)
    if n_threads is None:
        n_threads = accel.threads_for(B * H * T * (2 * w + 1))
    args = (q, k, v, gk, gv, key_bias, global_bias, query_masked, w, bs, sm_proto,
            sm_dtype == np.float32, bool(output_probs), context, probs)

    accel.on_threads(_attention_blocks, args, n_threads, blas="scipy")
    return context, (probs if output_probs else None)


# ----------------------------------------------------------------------------------------------
# 4. Upstream's row layout with torch's float32 softmax, bit for bit (softmax_dtype=torch_float32(cpu))
# ----------------------------------------------------------------------------------------------

def band_windows(x, w):  # x [B, H, T, d] -> [B, H, T, 2w+1, d] view: row i holds positions i-w .. i+w (0 outside)
    padded = np.pad(x, ((0, 0), (0, 0), (w, w), (0, 0)))  # [B, H, T + 2w, d]
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1, axis=2)  # [B, H, T, d, 2w+1]
    return view.transpose(0, 1, 2, 4, 3)


UPSTREAM_BAND_ROWS = 256  # queries per block in banded_attention_torch_layout: bounds its memory


def banded_attention_torch_layout(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                                  global_k=None, global_v=None, global_bias=None, *, output_probs=False,
                                  softmax_dtype=TORCH_FLOAT32, rows=UPSTREAM_BAND_ROWS):
    """q, k, v [B, H, T, d] -> context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None.

    Computed on upstream's own layout: one row of [X global | 2w + 1 band slots] scores per query,
    `float32_softmax_as_torch` over it, so the softmax sums run in torch's order.
    Query blocks of `rows`: memory O(B * H * rows * (X + 2w + 1)) besides the outputs. Slower than
    the banded core (the emulated float32 softmax dominates): meant for reproducing upstream's float64.
    """
    key_bias, query_masked, global_k, global_v, global_bias, sm_dtype = check_inputs(
        q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype)
    if not _is_torch(sm_dtype):
        raise ValueError(f"banded_attention_torch_layout computes torch's float32 softmax; softmax_dtype must be "
                         f"torch_float32(cpu), got {softmax_dtype!r}")
    w = int(one_sided_window)
    B, H, T, d = q.shape
    dtype = q.dtype
    X = global_k.shape[2]
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
        p = float32_softmax_as_torch(scores, _torch_cpu(sm_dtype))
        p[np.broadcast_to(query_masked[:, None, s0:s1, None], p.shape)] = 0  # masked_fill(is_index_masked, 0)
        ctx = np.einsum("bhts,bhtsd->bhtd", p[..., X:], v_band[:, :, s0:s1])  # [B, H, n, d]
        if X:
            ctx += p[..., :X] @ global_v
        context[:, :, s0:s1] = ctx
        if output_probs:
            probs[:, :, s0:s1] = p
    return context, probs


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------

def banded_attention(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                     global_k=None, global_v=None, global_bias=None, *,
                     output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, backend=None, block_size=None):
    """q, k, v [B, H, T, d] -> (context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None).

    backend: None (refimpl.accel's policy), "reference", "numpy" or "numba". With
    softmax_dtype=torch_float32(cpu) the NumPy and Numba backends both run banded_attention_torch_layout.
    """
    run = accel.dispatch({"reference": banded_attention_reference, "numpy": banded_attention_numpy,
                          "numba": banded_attention_numba}, getattr(q, "dtype", None), backend)
    options = {} if run is banded_attention_reference else {"block_size": block_size}
    return run(q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias,
               output_probs=output_probs, softmax_dtype=softmax_dtype, **options)
