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
Upstream's float32 softmax is reproduced by `softmax_dtype=np.float32` (the default): in a float64 run
the scores are rounded to float32, the softmax runs in float32, and the probabilities are cast back to
float64 (`softmax(..., dtype=torch.float32)` then `.type_as(attn_scores)`). Note what this means for
masks in float64: float64's finfo.min becomes -inf in float32, so a row with no finite score gives NaN
(upstream does the same); such rows are the masked (padding) rows, which are then set to 0.
Pass `softmax_dtype=None` for a softmax in the input dtype (a true float64 oracle; not upstream).

Three implementations with one signature:
  banded_attention_reference  the definition, one query at a time (slow; for reading and tests)
  banded_attention_numpy      vectorised, blocked by query blocks (GEMM-shaped, never T x T)
  refimpl.kernels.banded_attention_numba   the same blocks as Numba kernels (when numba is installed)
and `banded_attention`, which dispatches (Numba when available, else NumPy).
"""

import numpy as np

BACKENDS = ("numba", "numpy", "reference")

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


def _check_inputs(q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias,
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

    sm_dtype = dtype if softmax_dtype is None else np.dtype(softmax_dtype)
    if sm_dtype not in (np.float32, np.float64):
        raise ValueError(f"softmax_dtype must be None, float32 or float64, got {softmax_dtype!r}")
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


def _softmax_rows(scores, out_dtype):
    """scores [..., n] (already in the softmax dtype) -> probabilities [..., n] in out_dtype.

    max-subtract, exp, sum, multiply by the reciprocal of the sum (as torch's CPU softmax kernel does).
    A row whose entries are all -inf gives NaN, as upstream does; callers zero masked rows afterwards.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = scores - scores.max(axis=-1, keepdims=True)
        np.exp(e, out=e)
        e *= (1 / e.sum(axis=-1, keepdims=True))
    return e.astype(out_dtype, copy=False)


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
    key_bias, query_masked, gk, gv, global_bias, sm_dtype = _check_inputs(
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
                with np.errstate(over="ignore"):  # float64 finfo.min -> -inf in float32, as upstream
                    sm_scores = scores.astype(sm_dtype)
                p = _softmax_rows(sm_scores, dtype)    # [X + 2w + 1]
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


def _block_size(T, one_sided_window, block_size):
    """The query block size the blocked backends use: `block_size`, or default_block_size(T, w)."""
    bs = default_block_size(T, int(one_sided_window)) if block_size is None else int(block_size)
    if bs < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return bs


def _band_slot_index(n_rows, row0, key0, w):
    """Block rows row0..row0+n_rows-1, keys starting at key0 -> column index [n_rows, 2w+1] of each
    band slot inside the block's key window (may fall outside the window: caller masks it)."""
    rows = row0 + np.arange(n_rows)                                  # [n]
    return rows[:, None] - w + np.arange(2 * w + 1)[None, :] - key0   # [n, 2w+1]


def openblas_local_threads(package_file, libs_dir):
    """-> ctypes `openblas_set_num_threads_local` of the OpenBLAS bundled in `<site-packages>/<libs_dir>`
    (numpy.libs, scipy.libs), or None.

    Thread-local (OpenBLAS >= 0.3.27): lets each worker thread below run single-threaded BLAS
    without touching the process-wide setting. Small GEMMs (128 x 64 x 1152) on a multi-threaded
    OpenBLAS are ~8x slower than single-threaded ones here, so the blocks are spread over threads
    instead. Without it (other BLAS vendors) the blocks run one after the other.
    """
    import ctypes
    import glob
    import os
    libdir = os.path.join(os.path.dirname(os.path.dirname(package_file)), libs_dir)
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


_SET_BLAS_THREADS_LOCAL = openblas_local_threads(np.__file__, "numpy.libs")


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


def banded_attention_numpy(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                           global_k=None, global_v=None, global_bias=None, *,
                           output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, block_size=None,
                           n_threads=None):
    """q, k, v [B, H, T, d] -> context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None.

    Query blocks of `block_size` rows, each one GEMM-shaped step (`_numpy_block`); temporaries are
    O(B * H * block * (block + 2w)), never T x T; probabilities for the whole sequence are stored
    only when output_probs. Blocks are independent: with numpy's bundled OpenBLAS they run on
    `n_threads` threads (default: all cpus, one for tiny inputs), each with single-threaded BLAS.
    """
    key_bias, query_masked, gk, gv, global_bias, sm_dtype = _check_inputs(
        q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype)
    w = int(one_sided_window)
    B, H, T, d = q.shape
    X = gk.shape[2]
    bs = _block_size(T, w, block_size)
    gkT = np.swapaxes(gk, -1, -2)                                              # [B, H, d, X]
    context = np.empty((B, H, T, d), q.dtype)
    probs = np.zeros((B, H, T, X + 2 * w + 1), q.dtype) if output_probs else None
    starts = list(range(0, T, bs))

    def one_block(s0):
        _numpy_block(q, k, v, gkT, gv, key_bias, global_bias, query_masked, w, s0, min(s0 + bs, T),
                     sm_dtype, context, probs)

    import os
    if n_threads is None:                   # tiny inputs: a thread pool costs more than it saves
        n_threads = 1 if B * H * T * (2 * w + 1) < 1 << 18 else (os.cpu_count() or 1)
    n_threads = int(n_threads)

    def worker(chunk):                      # one thread: single-threaded BLAS, a share of the blocks
        previous = _SET_BLAS_THREADS_LOCAL(1) if _SET_BLAS_THREADS_LOCAL is not None else None
        try:
            for s0 in chunk:
                one_block(s0)
        finally:
            if previous is not None:
                _SET_BLAS_THREADS_LOCAL(previous)

    if _SET_BLAS_THREADS_LOCAL is None:     # unknown BLAS: let it thread, run the blocks in order
        for s0 in starts:
            one_block(s0)
        return context, probs
    if n_threads <= 1 or len(starts) == 1:
        worker(starts)
        return context, probs

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(worker, [starts[t::n_threads] for t in range(n_threads)]))
    return context, probs


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------

def banded_attention(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                     global_k=None, global_v=None, global_bias=None, *,
                     output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, backend=None,
                     block_size=None):
    """q, k, v [B, H, T, d] -> (context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None).

    backend: None (Numba when installed, else NumPy), "numba", "numpy" or "reference".
    """
    from refimpl import kernels  # local import: kernels imports this module for its checks

    if backend is None:
        backend = "numba" if kernels.HAVE_NUMBA else "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    args = (q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias)
    if backend == "reference":
        return banded_attention_reference(*args, output_probs=output_probs, softmax_dtype=softmax_dtype)
    if backend == "numpy":
        return banded_attention_numpy(*args, output_probs=output_probs, softmax_dtype=softmax_dtype,
                                      block_size=block_size)  # n_threads: all cpus
    if not kernels.HAVE_NUMBA:
        raise ValueError("backend='numba' requested but numba is not installed (pip install numba), "
                         "use backend='numpy' or None")
    return kernels.banded_attention_numba(*args, output_probs=output_probs, softmax_dtype=softmax_dtype,
                                          block_size=block_size)
