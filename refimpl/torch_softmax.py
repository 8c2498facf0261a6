"""torch's float32 softmax, bit for bit: the one place refimpl imitates torch's arithmetic.

Upstream computes some softmaxes in float32 even when the model runs in float64 (an "island": LED's
local and global attention, `nn.functional.softmax(attn_scores, dim=-1, dtype=torch.float32)` in
modeling_led.py LEDEncoderSelfAttention). To reproduce such a run to 1e-10 rather than ~1e-7, the
float32 softmax must round exactly as torch's does:

torch (CPU, ATen/native/cpu/SoftMaxKernel.cpp `_vec_softmax_lastdim`) computes a softmax over the last
axis as: m = max(row); e = exp(row - m) with SLEEF's expf_u10; s = vec::reduce_all(+, e) (one vector of
`lanes` partial sums accumulated in order, the tail added to the first lanes, then a butterfly over the
lanes; rows shorter than a vector are summed left to right); e * (1 / s). The vector width is that of
the CPU kernel torch dispatches to (`torch.backends.cpu.get_cpu_capability()`; ATEN_CPU_CAPABILITY=avx2
forces AVX2): 8 lanes under AVX2, 16 under AVX-512, so the last bit of a sum differs between the two.
AVX2 is checked against torch.softmax on float32 rows of 1 to 1025 entries with -inf and finfo.min
entries: identical bits (tests/test_led_live.py). AVX-512 follows ATen's own code for it (the same kernel,
`Vectorized<float>::exp()` = Sleef_expf16_u10, and `VecReduceAllSIMD<float>`'s butterfly: swap the 256-bit
halves, the 128-bit lanes, then 64-bit and 32-bit pairs, as in torch/include/ATen/cpu/vec/functional_base.h);
identical bits on an AVX-512 CPU too (tests/test_mutation_kernels_live.py: the kernel torch runs, and AVX2).
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


def _butterfly(width):  # the lane permutations of vec_reduce_all, widest swap first
    swaps, half = [], width // 2
    while half:
        swaps.append([i ^ half for i in range(width)])  # exchange blocks of `half` lanes
        half //= 2
    return swaps


LANES = {"avx2": 8, "avx512": 16}  # torch's float32 vector width per CPU kernel (see the module docstring)


def _sum_lanes_as_torch(e, width=8):  # float32 [..., n] -> [...]: vec::reduce_all(+) with `width`-lane vectors
    n = e.shape[-1]
    if n < width:  # vec_reduce_all(fun, loadu(data, n), n): left to right
        total = e[..., 0].copy()
        for i in range(1, n):
            total = total + e[..., i]
        return total
    full = n - n % width
    lanes = e[..., :width].copy()  # [..., width]
    for start in range(width, full, width):
        lanes = lanes + e[..., start:start + width]
    if n > full:  # Vec::set(acc, acc + tail, n - full): only the first lanes take the tail
        lanes[..., :n - full] = lanes[..., :n - full] + e[..., full:]
    for swap in _butterfly(width):
        lanes = lanes + lanes[..., swap]
    return lanes[..., 0]


def float32_softmax_as_torch(scores, cpu="avx2"):  # [..., N] any float -> [..., N] in scores.dtype
    """nn.functional.softmax(scores, dim=-1, dtype=torch.float32).type_as(scores), bit for bit, as torch's
    `cpu` kernel ("avx2" or "avx512") computes it.

    Rows with no finite entry after the cast to float32 (float64's finfo.min is -inf there) give NaN,
    as upstream does.
    """
    if cpu not in LANES:
        raise ValueError(f"torch's {cpu!r} softmax kernel is not reproduced; choose one of {sorted(LANES)}")
    with np.errstate(over="ignore", invalid="ignore"):
        s = scores.astype(_F)
        e = expf_sleef(s - s.max(axis=-1, keepdims=True))
        total = _sum_lanes_as_torch(e, LANES[cpu])
        e *= (_F(1) / total)[..., None]
    return e.astype(scores.dtype)
