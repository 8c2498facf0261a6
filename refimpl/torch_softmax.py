"""torch's float32 softmax, bit for bit: the one place refimpl imitates torch's arithmetic.

Upstream computes some softmaxes in float32 even when the model runs in float64 (an "island": LED's
local and global attention, `nn.functional.softmax(attn_scores, dim=-1, dtype=torch.float32)` in
modeling_led.py LEDEncoderSelfAttention). To reproduce such a run to 1e-10 rather than ~1e-7, the
float32 softmax must round exactly as torch's does:

torch (CPU, ATen/native/cpu/SoftMaxKernel.cpp `_vec_softmax_lastdim`, AVX2 build as on these machines)
computes a softmax over the last axis as: m = max(row); e = exp(row - m) with SLEEF's expf_u10;
s = vec::reduce_all(+, e) (8 lanes accumulated in order, then a butterfly over the lanes; rows shorter
than 8 are summed left to right); e * (1 / s). Checked against torch.softmax on float32 rows of 1 to
1025 entries with -inf and finfo.min entries: identical bits. (An AVX-512 build of torch sums 16 lanes:
a different last bit.)
"""
from __future__ import annotations

import numpy as np

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
