"""Numba twins of refimpl's hot loops. Optional: `HAVE_NUMBA` is False when numba is missing.

Each kernel mirrors one NumPy function (same signature, same result within rounding):
  banded_attention_numba    <->  refimpl.banded_attention.banded_attention_numpy
  relative_attention_numba  <->  refimpl.models.nezha.relative_attention_numpy
  gelu_float32              <->  refimpl.ops.gelu (float32; a rational erf, within 4e-7)
  layer_norm_float32        <->  refimpl.ops.layer_norm_numpy (float32; float64 sums)

Rules for the kernels here: `cache=True` (compiled once per machine, stored in __pycache__),
`fastmath=False` (no reassociation: results stay a fixed, documented sum order), float32 stays
float32 (scalars are made from arrays of the right dtype, never from Python float literals), loops
run over 1-D slices from index 0 (no wraparound checks), and elementwise kernels with a division use
`error_model="numpy"` (Python's model adds a zero test that stops LLVM from vectorising the loop).
Parallel work runs on Python threads from one persistent pool (`_on_threads`), never Numba's
`parallel=True`: its OpenMP threads keep spinning after a parallel region and take cores from
OpenBLAS (measured: the feed-forward product after a `prange` GELU ran 15% slower).

Matrix products inside the kernels are `np.dot` on contiguous 2-D blocks, which Numba maps to
BLAS through `scipy.linalg.cython_blas`; so the Numba path needs scipy too (numba's own
requirement for np.dot). The blocks run on several threads at once, so the BLAS called from
inside must be single-threaded: a multi-threaded OpenBLAS called from two worker threads on two
cores runs ~10x slower (measured: 5 vs 65 GFLOP/s). Each worker sets scipy's OpenBLAS to one
thread for itself (`openblas_set_num_threads_local`) and restores it afterwards.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from refimpl.banded_attention import (UPSTREAM_SOFTMAX_DTYPE, _block_size, _check_inputs,
                                      openblas_local_threads)

try:  # numba, and scipy's BLAS which numba's np.dot calls
    import numba
    from numba import njit, types
    from numba.extending import intrinsic
    from llvmlite import ir as llvm_ir
    import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot needs it)
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised by monkeypatching HAVE_NUMBA in the tests
    numba = None
    HAVE_NUMBA = False


# ----------------------------------------------------------------------------------------------
# BLAS threads
# ----------------------------------------------------------------------------------------------

def _scipy_openblas_local_threads():
    """The thread-local BLAS setter of scipy's OpenBLAS, the BLAS behind numba's np.dot (or None)."""
    try:
        import scipy
    except ImportError:
        return None
    return openblas_local_threads(scipy.__file__, "scipy.libs")


_SCIPY_BLAS_THREADS_LOCAL = _scipy_openblas_local_threads() if HAVE_NUMBA else None


_POOL = None  # one pool of worker threads for the process, created on first use


def _on_threads(kernel, args, n_threads):
    """kernel(*args, first, n_threads) on `n_threads` threads (first = 0 .. n_threads - 1).

    Part 0 runs on the calling thread, the others on a persistent thread pool (its idle threads sleep:
    starting threads afresh cost ~0.4 ms per call). The kernels release the GIL and take work items
    first, first + n_threads, ...; each thread runs single-threaded BLAS (see the module docstring)
    and restores its setting afterwards.
    """
    global _POOL

    def worker(first):
        previous = _SCIPY_BLAS_THREADS_LOCAL(1) if _SCIPY_BLAS_THREADS_LOCAL is not None else None
        try:
            kernel(*args, first, n_threads)
        finally:
            if previous is not None:
                _SCIPY_BLAS_THREADS_LOCAL(previous)

    if n_threads > 1 and _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="refimpl-kernels")
    others = [_POOL.submit(worker, first) for first in range(1, n_threads)]
    try:
        worker(0)
    finally:
        for future in others:
            future.result()


# ----------------------------------------------------------------------------------------------
# Banded attention
# ----------------------------------------------------------------------------------------------

if HAVE_NUMBA:

    @intrinsic
    def _i32_as_f32(typingctx, x):
        """int32 bits -> float32 with the same bits (a register bitcast; keeps loops vectorisable)."""
        sig = types.float32(types.int32)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_ir.FloatType())
        return sig, codegen

    @njit(cache=True, fastmath=False, nogil=True)
    def _exp_f32_inplace(buf, n):
        """buf[:n] <- exp(buf[:n]) in float32, for x <= 0 (softmax after max-subtraction).

        Cephes `expf` (range reduction x = n ln2 + r, degree-6 polynomial, 2^n built from its bits):
        max error 0.97 ulp on [-100, 0] (numpy's float32 exp here: 2.5 ulp), exp(-inf) = 0,
        NaN stays NaN, results below 2^-126 flush to 0. Pure arithmetic, so LLVM vectorises it
        without fastmath; the libm call `np.exp` is scalar (5-6x slower on this loop).
        """
        for t in range(n):
            x = buf[t]
            fx = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
            r = x - fx * np.float32(0.693359375) - fx * np.float32(-2.12194440e-4)
            y = ((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r
                   + np.float32(8.3334519073e-3)) * r + np.float32(4.1665795894e-2)) * r
                 + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)
            y = y * (r * r) + r + np.float32(1.0)
            two_n = _i32_as_f32(max(np.int32(fx) + np.int32(127), np.int32(1)) << np.int32(23))
            buf[t] = np.float32(0.0) if x < np.float32(-87.33654) else y * two_n

    @njit(cache=True, fastmath=False, nogil=True)
    def _max_4_lanes(buf, n):
        """max(buf[:n]), n >= 1, from 4 running maxima (independent chains; max itself is exact)."""
        m0 = m1 = m2 = m3 = buf[0]
        n4 = n - n % 4
        for t in range(0, n4, 4):
            m0 = buf[t] if buf[t] > m0 else m0
            m1 = buf[t + 1] if buf[t + 1] > m1 else m1
            m2 = buf[t + 2] if buf[t + 2] > m2 else m2
            m3 = buf[t + 3] if buf[t + 3] > m3 else m3
        for t in range(n4, n):
            m0 = buf[t] if buf[t] > m0 else m0
        m0 = m1 if m1 > m0 else m0
        m2 = m3 if m3 > m2 else m2
        return m2 if m2 > m0 else m0

    @njit(cache=True, fastmath=False, nogil=True)
    def _sum_4_lanes(buf, n):
        """sum(buf[:n]) as 4 strided partial sums, combined (s0 + s1) + (s2 + s3), plus the tail:
        a fixed summation order (fastmath=False forbids LLVM to reorder it)."""
        s0 = s1 = s2 = s3 = buf[0] - buf[0]
        n4 = n - n % 4
        for t in range(0, n4, 4):
            s0 += buf[t]
            s1 += buf[t + 1]
            s2 += buf[t + 2]
            s3 += buf[t + 3]
        tot = (s0 + s1) + (s2 + s3)
        for t in range(n4, n):
            tot += buf[t]
        return tot

    @njit(cache=True, fastmath=False, nogil=True)
    def _exp_shifted_sum(buf, n, fast_exp):
        """buf[:n] <- exp(buf[:n] - max(buf[:n])); returns their sum (a softmax row, before the division).
        fast_exp: _exp_f32_inplace (float32 rows only), else np.exp."""
        mx = _max_4_lanes(buf, n)
        for t in range(n):
            buf[t] = buf[t] - mx
        if fast_exp:
            _exp_f32_inplace(buf, n)
        else:
            for t in range(n):
                buf[t] = np.exp(buf[t])
        return _sum_4_lanes(buf, n)

    @njit(cache=True, fastmath=False, nogil=True)
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
            # 1-D slices with non-negative loop indices: numba then emits no negative-index
            # wraparound checks and LLVM vectorises the loops (2x faster than S[r, c] indexing)
            s_band = S[r, lo:hi]                                      # [hi - lo]
            b_band = key_bias_b[k0 + lo:k0 + hi]                      # [hi - lo]
            g_row = G[r]                                              # [X]
            for x in range(X):
                buf[x] = g_row[x] + global_bias_b[x]
            for t in range(hi - lo):
                buf[X + t] = s_band[t] + b_band[t]
            inv = one / _exp_shifted_sum(buf, n, fast_exp)
            pg_row = PG[r]                                            # [X]
            for x in range(X):
                pg_row[x] = buf[x] * inv
            P[r, :lo] = 0                                             # outside the band
            P[r, hi:] = 0
            p_band = P[r, lo:hi]                                      # [hi - lo]
            for t in range(hi - lo):
                p_band[t] = buf[X + t] * inv

    @njit(cache=True, fastmath=False, nogil=True)
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
        P = np.empty_like(S)
        PG = np.empty_like(G)
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

    @njit(cache=True, fastmath=False, nogil=True)
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


# below this many band scores (B * H * T * (2w + 1)) one thread does the work
SMALL_WORK = 1 << 18


def banded_attention_numba(q, k, v, one_sided_window, key_bias=None, query_masked=None,
                           global_k=None, global_v=None, global_bias=None, *,
                           output_probs=False, softmax_dtype=UPSTREAM_SOFTMAX_DTYPE, block_size=None,
                           n_threads=None):
    """q, k, v [B, H, T, d] -> context [B, H, T, d], probs [B, H, T, X + 2w + 1] or None.

    Numba twin of refimpl.banded_attention.banded_attention_numpy (same arguments, same result
    within float rounding). Blocks are spread over `n_threads` Python threads (default: all cpus);
    the kernel releases the GIL and each thread runs single-threaded BLAS.
    """
    if not HAVE_NUMBA:
        raise ValueError("banded_attention_numba needs numba and scipy (pip install numba scipy)")
    key_bias, query_masked, gk, gv, global_bias, sm_dtype = _check_inputs(
        q, k, v, one_sided_window, key_bias, query_masked, global_k, global_v, global_bias, softmax_dtype)
    w = int(one_sided_window)
    B, H, T, d = q.shape
    X = gk.shape[2]
    bs = _block_size(T, w, block_size)
    q, k, v, gk, gv = (np.ascontiguousarray(a) for a in (q, k, v, gk, gv))
    key_bias, global_bias = np.ascontiguousarray(key_bias), np.ascontiguousarray(global_bias)
    query_masked = np.ascontiguousarray(query_masked)
    context = np.empty((B, H, T, d), q.dtype)
    # probs are written only when asked; otherwise a 1-element dummy keeps the kernel's types fixed
    probs = np.zeros((B, H, T, X + 2 * w + 1) if output_probs else (1, 1, 1, 1), q.dtype)
    sm_proto = np.zeros(1, sm_dtype)
    if n_threads is None:                   # tiny inputs: a thread pool costs more than it saves
        n_threads = 1 if B * H * T * (2 * w + 1) < SMALL_WORK else (os.cpu_count() or 1)
    n_threads = max(1, int(n_threads))
    args = (q, k, v, gk, gv, key_bias, global_bias, query_masked, w, bs, sm_proto,
            sm_dtype == np.float32, bool(output_probs), context, probs)

    _on_threads(_attention_blocks, args, n_threads)
    return context, (probs if output_probs else None)


# ----------------------------------------------------------------------------------------------
# NEZHA's relative attention (twin of refimpl.models.nezha.relative_attention_numpy)
# ----------------------------------------------------------------------------------------------

if HAVE_NUMBA:

    @njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
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
            factor = (one / _exp_shifted_sum(buf, S, fast_exp)) * scale
            p = P[row]
            for j in range(S):
                p[j] = buf[j] * factor
            bucket = buckets[row]
            bucket[:] = 0
            bucket[lo - i + K:hi - i + K] = p[lo:hi]
            bucket[0] += _sum_4_lanes(p, lo) if lo > 0 else 0
            bucket[R - 1] += _sum_4_lanes(p[hi:], S - hi) if hi < S else 0

    @njit(cache=True, fastmath=False, nogil=True)
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
            _relative_softmax_rows(scores[:, :S], scores[:, S:], mask[b, 0], i0, head_mask[h], fast_exp,
                                   w[:, :S], w[:, S:])
            context[b, i0:i1, h * d:(h + 1) * d] = np.dot(w, values)  # [n, d]
            if want_probs:
                probs[b, h, i0:i1] = w[:, :S]


def relative_attention_numba(q, k, v, mask, head_mask, table, *, output_probs=False, block=256, n_threads=None):
    """q [B, H, T, d], k, v [B, H, S, d] -> context [B, T, H*d], probs [B, H, T, S] or None.

    Numba twin of refimpl.models.nezha.relative_attention_numpy (same arguments, same result within
    float rounding): q already scaled, mask [B, 1, T or 1, S] additive, head_mask [H] or None,
    table [2K+1, d]. The (batch row, head, query block) items are spread over `n_threads` Python
    threads (default: all cpus), each with single-threaded BLAS.
    """
    if not HAVE_NUMBA:
        raise ValueError("relative_attention_numba needs numba and scipy (pip install numba scipy)")
    B, H, T, d = q.shape
    S = k.shape[2]
    dtype = q.dtype
    q, k, v, table = (np.ascontiguousarray(a, dtype) for a in (q, k, v, table))
    mask = np.zeros((B, 1, 1, S), dtype) if mask is None else np.ascontiguousarray(
        np.broadcast_to(mask, (B, 1, mask.shape[2], S)), dtype)
    head_mask = np.ones(H, dtype) if head_mask is None else np.ascontiguousarray(head_mask, dtype)
    context = np.empty((B, T, H * d), dtype)
    probs = np.empty((B, H, T, S) if output_probs else (1, 1, 1, 1), dtype)  # a dummy keeps the types fixed
    if n_threads is None:  # tiny inputs: a thread pool costs more than it saves
        n_threads = 1 if B * H * T * S < SMALL_WORK else (os.cpu_count() or 1)
    block = max(1, min(int(block), T))
    args = (q, k, v, mask, head_mask, table, block, dtype == np.float32, bool(output_probs), context, probs)
    _on_threads(_relative_attention_items, args, max(1, int(n_threads)))
    return context, (probs if output_probs else None)


# ---------------------------------------------------------------- GELU, float32 (twin of ops.gelu)
# ops.gelu evaluates erf to float rounding with a table; this kernel uses a float32-accurate rational
# erf (within 4e-7 of the exact GELU) on both cores, about 5x faster on the LED encoder's activations.

# Eigen's float32 erf (generic_fast_erf_float): erf(z) = z P(z^2) / Q(z^2) on [-4, 4], error ~1 ulp of float32
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)

if HAVE_NUMBA:
    @njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
    def _gelu_float32_items(x, out, first, step):  # x, out [N] float32; out = x/2 (1 + erf(x / sqrt 2))
        """Part `first` of `step` equal parts of x (one per thread); releases the GIL.

        error_model="numpy": a float division by zero gives inf/NaN instead of raising; Python's model
        puts a zero test (and an exception path) in the loop and LLVM then does not vectorise it (5x slower).
        """
        p0, p1, p2, p3, p4, p5, p6 = _ERF_P
        q0, q1, q2, q3, q4 = _ERF_Q
        part = (x.size + step - 1) // step
        xs = x[first * part:(first + 1) * part]  # a slice and indices from 0: no wraparound checks, vectorised
        outs = out[first * part:(first + 1) * part]
        for i in range(xs.size):
            v = np.float64(xs[i])
            z = min(max(v * 0.7071067811865476, -4.0), 4.0)
            z2 = z * z
            p = ((((((p0 * z2 + p1) * z2 + p2) * z2 + p3) * z2 + p4) * z2 + p5) * z2 + p6)
            q = ((((q0 * z2 + q1) * z2 + q2) * z2 + q3) * z2 + q4)
            outs[i] = 0.5 * v * (1.0 + z * p / q)

    def gelu_float32(x):  # x [...] float32 -> [...] float32
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        n_threads = 1 if flat.size < SMALL_WORK else (os.cpu_count() or 1)
        _on_threads(_gelu_float32_items, (flat, out), n_threads)
        return out.reshape(x.shape)
else:  # pragma: no cover
    gelu_float32 = None


# ---------------------------------------------------------------- LayerNorm, float32 (twin of ops.layer_norm)

if HAVE_NUMBA:
    @njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
    def _layer_norm_float32_items(x, weight, bias, eps, out, first, step):
        """Rows of part `first` of `step` (one part per thread): out = (x - mean) / sqrt(var + eps) * w + b.

        x, out [N, D] float32. Each row is widened to float64 once; mean and biased variance are 4-lane
        float64 sums (a fixed order), and the row is rounded to float32 once at the end.
        """
        N, D = x.shape
        part = (N + step - 1) // step
        row64 = np.empty(D, np.float64)                                 # [D] one row, centred
        squares = np.empty(D, np.float64)
        for r in range(first * part, min(N, (first + 1) * part)):
            xr, o = x[r], out[r]
            for j in range(D):
                row64[j] = xr[j]
            mean = _sum_4_lanes(row64, D) / D
            for j in range(D):
                row64[j] = row64[j] - mean
                squares[j] = row64[j] * row64[j]
            inv = 1.0 / np.sqrt(_sum_4_lanes(squares, D) / D + eps)
            for j in range(D):
                o[j] = (row64[j] * inv) * weight[j] + bias[j]

    def layer_norm_float32(x, weight=None, bias=None, eps=1e-5):  # x [..., D] float32 -> [..., D] float32
        """ops.layer_norm for float32 with float64 sums: within a float32 rounding of the exact result
        (ops.layer_norm's float32 sums: a few roundings), about 2x faster, on both cores for large inputs."""
        D = x.shape[-1]
        rows = np.ascontiguousarray(x).reshape(-1, D)
        weight = np.ones(D, np.float32) if weight is None else np.ascontiguousarray(weight, np.float32)
        bias = np.zeros(D, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        out = np.empty_like(rows)
        n_threads = 1 if rows.size < SMALL_WORK else min(os.cpu_count() or 1, rows.shape[0])
        _on_threads(_layer_norm_float32_items, (rows, weight, bias, float(eps), out), max(1, n_threads))
        return out.reshape(x.shape)
else:  # pragma: no cover
    layer_norm_float32 = None


def fast_activation(name, dtype):
    """ops.activation(name), except float32 "gelu" when Numba is installed: `gelu_float32` (within 4e-7 of
    the exact GELU, both cores; ops.gelu's table erf is several times slower). Used by the encoder and
    decoder feed-forward layers; float64 always takes the exact ops.gelu."""
    from .ops import activation

    if name == "gelu" and np.dtype(dtype) == np.float32 and HAVE_NUMBA:
        return gelu_float32
    return activation(name)
