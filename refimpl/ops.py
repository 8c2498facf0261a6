"""Primitive array operations shared by every model family.

Each function is a plain NumPy expression of the operation upstream's PyTorch
module performs. dtype follows the inputs: float32 in, float32 out; float64 in,
float64 out. Nothing here promotes silently (Python float scalars do not
promote NumPy arrays).

Two primitives are hot loops with a Numba twin beside them (refimpl/accel.py decides
which runs): `layer_norm` (`layer_norm_numpy` / `layer_norm_numba`) and `gelu`
(`gelu_numpy` / `gelu_numba`). The Numba softmax-row helpers at the end are the
building blocks of the attention kernels (banded_attention, relative_attention).
"""
from __future__ import annotations

import math

import numpy as np

from . import accel

# ---------------------------------------------------------------- linear algebra


def linear(x, weight, bias=None):  # x [..., in], weight [out, in], bias [out] -> [..., out]
    """torch.nn.Linear: x @ W^T + b, with W stored [out, in] as upstream stores it."""
    # One 2-D GEMM: numpy runs a stacked [B, T, in] @ [in, out] product several times slower.
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        add(y, bias, out=y)
    return y


# ---------------------------------------------------------------- elementwise sums on every core


def add(a, b, out=None):  # a [..., D] + b [..., D] or [D] -> [..., D], into `out` when given (may be a)
    """a + b. Dispatched (refimpl.accel): float32 with Numba adds rows (on every core for large arrays:
    NumPy's ufuncs use one), otherwise `add_numpy`; other shapes and dtypes, and tiny work (a decoding
    step), take NumPy. The same bits either way."""
    rows_of_a = b.shape == a.shape or b.shape == a.shape[-1:]
    contiguous = a.flags.c_contiguous and b.flags.c_contiguous and (out is None or out.flags.c_contiguous)
    if not (a.dtype == b.dtype == np.float32 and rows_of_a and contiguous and a.size >= accel.SMALL_WORK):
        return add_numpy(a, b, out)
    return accel.dispatch({"numpy": add_numpy, "numba": add_numba}, a.dtype)(a, b, out)


def add_numpy(a, b, out=None):
    return np.add(a, b, out=out)


@accel.jit()
def _add_rows(a, b, out, first, step):  # a, out [N, D], b [N or 1, D]; the rows of part `first` of `step`
    N, D = a.shape
    part = (N + step - 1) // step
    # out is a: o[j] += b[j], which LLVM vectorises; o[j] = a[j] + b[j] with o aliasing a fails its run-time
    # overlap check and runs the scalar loop (3x slower)
    in_place = a.ctypes.data == out.ctypes.data
    for r in range(first * part, min(N, (first + 1) * part)):
        ar, br, o = a[r], b[r if b.shape[0] > 1 else 0], out[r]
        if in_place:
            for j in range(D):
                o[j] += br[j]
        else:
            for j in range(D):
                o[j] = ar[j] + br[j]


def add_numba(a, b, out=None):  # a, b, out C-contiguous float32 (see add)
    D = a.shape[-1]
    result = np.empty_like(a) if out is None else out
    rows = a.reshape(-1, D)                                            # [N, D]
    accel.on_threads(_add_rows, (rows, b.reshape(-1, D), result.reshape(-1, D)),
                     min(accel.threads_for(a.size, accel.STREAMING_WORK), rows.shape[0]))
    return result


# ---------------------------------------------------------------- activations


def embedding(ids, table, what="input_ids"):  # ids [...] int, table [V, D] -> [..., D]
    """torch.nn.Embedding lookup, with a clear error for ids outside the table."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        bad = ids[(ids < 0) | (ids >= table.shape[0])]
        raise ValueError(
            f"{what} holds id {int(bad.flat[0])} outside the table of {table.shape[0]} rows "
            f"(valid ids are 0..{table.shape[0] - 1})"
        )
    return table[ids]


def layer_norm(x, weight=None, bias=None, eps=1e-5):  # x [..., D] -> [..., D]
    """torch.nn.LayerNorm over the last axis (biased variance); affine part optional.

    Dispatched (refimpl.accel): float32 with Numba runs `layer_norm_numba`, the same formula with
    float64 sums (about 2x faster, and closer to the exact result); otherwise `layer_norm_numpy`.
    """
    if not x.size:
        return layer_norm_numpy(x, weight, bias, eps)
    return accel.dispatch({"numpy": layer_norm_numpy, "numba": layer_norm_numba}, x.dtype)(x, weight, bias, eps)


def layer_norm_numpy(x, weight=None, bias=None, eps=1e-5):  # x [..., D] -> [..., D]
    """layer_norm in NumPy, in the input's dtype: the textbook formula."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    y = centered / np.sqrt(var + x.dtype.type(eps))
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y


@accel.jit(error_model="numpy")
def _layer_norm_rows(x, weight, bias, eps, out, first, step):  # x, out [N, D] float32; rows of part `first`
    """out = (x - mean) / sqrt(var + eps) * w + b for the rows of part `first` of `step` (one part per thread).

    Each row is widened to float64 once; mean and biased variance are 4-lane float64 sums (a fixed
    order), and the row is rounded to float32 once at the end.
    """
    N, D = x.shape
    part = (N + step - 1) // step
    row64 = np.empty(D, np.float64)                                 # [D] one row, centred
    squares = np.empty(D, np.float64)
    for r in range(first * part, min(N, (first + 1) * part)):
        xr, o = x[r], out[r]
        for j in range(D):
            row64[j] = xr[j]
        mean = sum_4_lanes(row64, D, 0.0) / D
        for j in range(D):
            row64[j] = row64[j] - mean
            squares[j] = row64[j] * row64[j]
        inv = 1.0 / np.sqrt(sum_4_lanes(squares, D, 0.0) / D + eps)
        for j in range(D):
            o[j] = (row64[j] * inv) * weight[j] + bias[j]


def layer_norm_numba(x, weight=None, bias=None, eps=1e-5):  # x [..., D] float32 -> [..., D] float32
    """Numba twin of layer_norm_numpy for float32, with float64 sums: within one float32 rounding of the
    exact result (layer_norm_numpy's float32 sums: a few roundings); rows spread over both cores."""
    D = x.shape[-1]
    rows = np.ascontiguousarray(x, np.float32).reshape(-1, D)      # [N, D]
    weight = np.ones(D, np.float32) if weight is None else np.ascontiguousarray(weight, np.float32)
    bias = np.zeros(D, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    out = np.empty_like(rows)
    n_threads = min(accel.threads_for(rows.size), rows.shape[0])
    accel.on_threads(_layer_norm_rows, (rows, weight, bias, float(eps), out), n_threads)
    return out.reshape(x.shape)


# ---------------------------------------------------------------- activations


def relu(x):  # x [...] -> [...]: max(x, 0); float32 with Numba on every core (relu_numba) when worth sharing
    if x.size < accel.SMALL_WORK:
        return relu_numpy(x)
    return accel.dispatch({"numpy": relu_numpy, "numba": relu_numba}, x.dtype)(x)


def relu_numpy(x):
    return np.maximum(x, x.dtype.type(0))


@accel.jit()
def _relu_part(x, out, first, step):  # x, out [N]; part `first` of `step` equal parts (one per thread)
    part = (x.size + step - 1) // step
    xs, outs = x[first * part:(first + 1) * part], out[first * part:(first + 1) * part]
    zero = np.zeros(1, x.dtype)[0]
    for i in range(xs.size):
        outs[i] = xs[i] if xs[i] > zero or xs[i] != xs[i] else zero  # NaN stays NaN, as np.maximum


def relu_numba(x):  # x [...] float32 -> [...] float32
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.empty_like(flat)
    accel.on_threads(_relu_part, (flat, out), accel.threads_for(flat.size, accel.STREAMING_WORK))
    return out.reshape(x.shape)


def gelu(x):  # x [...] -> [...]; torch.nn.functional.gelu(approximate="none"): x * Phi(x)
    """The erf GELU, dispatched (refimpl.accel): float32 with Numba runs `gelu_numba` (a float32-accurate
    rational erf, within 4e-7 of the exact GELU, both cores); otherwise `gelu_numpy` (erf exact to rounding)."""
    return accel.dispatch({"numpy": gelu_numpy, "numba": gelu_numba}, x.dtype)(x)


def gelu_numpy(x):  # x [...] -> [...]: x/2 (1 + erf(x / sqrt 2)), erf to within float rounding
    y = _erf(x / x.dtype.type(math.sqrt(2.0)))
    y += 1  # in place: the activations of a feed-forward layer are the largest arrays of a forward
    y *= x
    y *= x.dtype.type(0.5)
    return y


def gelu_new(x):  # tanh approximation (transformers' NewGELUActivation / "gelu_new")
    c = x.dtype.type(math.sqrt(2.0 / math.pi))
    return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x ** 3)))


def gelu_fast(x):  # transformers' FastGELUActivation
    return x.dtype.type(0.5) * x * (1 + np.tanh(x * x.dtype.type(0.7978845608) * (1 + x.dtype.type(0.044715) * x * x)))


def quick_gelu(x):  # transformers' QuickGELUActivation
    return x * sigmoid(x.dtype.type(1.702) * x)


def gelu_pytorch_tanh(x):  # torch.nn.functional.gelu(approximate="tanh")
    c = x.dtype.type(math.sqrt(2.0 / math.pi))
    return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x * x * x)))


def sigmoid(x):
    return x.dtype.type(1) / (x.dtype.type(1) + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def tanh(x):
    return np.tanh(x)


# The rest of transformers.activations.ACT2CLS (4.37.2), so any `activation_function` upstream accepts works.


def gelu_10(x):  # ClippedGELUActivation(min=-10, max=10): clip(gelu(x), -10, 10)
    return np.clip(gelu(x), x.dtype.type(-10), x.dtype.type(10))


def gelu_accurate(x):  # AccurateGELUActivation: the tanh formula of gelu_new
    return gelu_new(x)


def laplace(x, mu=0.707107, sigma=0.282095):  # LaplaceActivation: 0.5 * (1 + erf((x - mu) / (sigma sqrt 2)))
    z = (x - x.dtype.type(mu)) / x.dtype.type(sigma * math.sqrt(2.0))
    return x.dtype.type(0.5) * (x.dtype.type(1) + _erf(z))


def leaky_relu(x):  # torch.nn.LeakyReLU() default negative_slope 0.01
    return np.where(x >= 0, x, x * x.dtype.type(0.01))


def identity(x):  # LinearActivation ("linear")
    return x


def mish(x):  # torch.nn.functional.mish: x * tanh(softplus(x))
    return x * np.tanh(np.logaddexp(x.dtype.type(0), x))


def relu2(x):  # ReLUSquaredActivation
    r = relu(x)
    return r * r


def relu6(x):  # torch.nn.ReLU6
    return np.clip(x, x.dtype.type(0), x.dtype.type(6))


def _erf_taylor_table(step=1.0 / 256, limit=6.0, order=6):  # -> (anchors [N], coefficients [N, order+1])
    """Taylor coefficients of erf around anchors x0 = 0, step, 2 step, ..., limit.

    erf(x0 + h) = sum_n c_n(x0) h^n, with c_0 = erf(x0) and, for n >= 1,
    c_n = 2/sqrt(pi) * (-1)^(n-1) * H_{n-1}(x0) * exp(-x0^2) / n!   (H: physicists' Hermite polynomials),
    since the n-th derivative of exp(-x^2) is (-1)^n H_n(x) exp(-x^2). With |h| <= step/2 the
    truncation error is below 1e-18, so this is exact to float64 rounding.
    """
    x0 = np.arange(0.0, limit + step / 2, step)  # [N]
    hermite = [np.ones_like(x0), 2 * x0]  # H_0, H_1
    for n in range(1, order):
        hermite.append(2 * x0 * hermite[n] - 2 * n * hermite[n - 1])
    gauss = 2.0 / math.sqrt(math.pi) * np.exp(-x0 * x0)
    coeffs = [np.array([math.erf(a) for a in x0])]
    for n in range(1, order + 1):
        coeffs.append((-1) ** (n - 1) * hermite[n - 1] * gauss / math.factorial(n))
    return step, x0, np.stack(coeffs, axis=1)  # [N, order+1]


_ERF_STEP, _ERF_ANCHORS, _ERF_COEFFS = _erf_taylor_table()
# Terms kept per dtype: with |h| <= 1/512 the next term is below 1e-11 (float32) / 1e-18 (float64).
_ERF_ORDER = {np.dtype(np.float32): 3, np.dtype(np.float64): 6}
_ERF_COLUMNS = {  # dtype -> one contiguous array per Taylor coefficient, cast once
    dt: [np.ascontiguousarray(c, dtype=dt) for c in _ERF_COEFFS.T[:order + 1]] for dt, order in _ERF_ORDER.items()
}


def _erf(x):  # x [...] float -> erf(x) [...] same dtype
    """Vectorised erf to within float rounding: a Taylor step from the nearest tabulated anchor."""
    columns = _ERF_COLUMNS[x.dtype]
    a = np.abs(x)
    np.minimum(a, x.dtype.type(_ERF_ANCHORS[-1]), out=a)  # erf(6) == 1.0 in float64: the table's end
    h = a * x.dtype.type(1 / _ERF_STEP)
    np.rint(h, out=h)
    with np.errstate(invalid="ignore"):  # NaN inputs: any index; the NaN propagates through h
        idx = h.astype(np.intp)  # take() converts any other index type on every call
    h *= x.dtype.type(_ERF_STEP)  # the anchor x0 = idx * step, exact (step is a power of two)
    np.subtract(a, h, out=h)  # |h| <= step/2 inside the table
    y, term = columns[-1].take(idx, mode="clip"), a  # `a` is reused as scratch from here on
    for column in columns[-2::-1]:  # Horner
        y *= h
        y += column.take(idx, mode="clip", out=term)
    return np.copysign(y, x, out=y)


# Eigen's float32 erf (generic_fast_erf_float): erf(z) = z P(z^2) / Q(z^2) on [-4, 4], error ~1 ulp of float32
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


@accel.jit(error_model="numpy")
def _gelu_part(x, out, first, step):  # x, out [N] float32; part `first` of `step` equal parts (one per thread)
    """out = x/2 (1 + erf(x / sqrt 2)) with the rational erf, in float64 inside, rounded once."""
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


def gelu_numba(x):  # x [...] float32 -> [...] float32
    """Numba twin of gelu_numpy for float32: within 4e-7 of the exact GELU (tested), about 5x faster."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.empty_like(flat)
    accel.on_threads(_gelu_part, (flat, out), accel.threads_for(flat.size))
    return out.reshape(x.shape)


# transformers.activations.ACT2FN names -> functions (the ones these families use).
ACTIVATIONS = {
    "relu": relu,
    "gelu": gelu,
    "gelu_new": gelu_new,
    "gelu_fast": gelu_fast,
    "gelu_pytorch_tanh": gelu_pytorch_tanh,
    "quick_gelu": quick_gelu,
    "sigmoid": sigmoid,
    "silu": silu,
    "swish": silu,
    "tanh": tanh,
    "gelu_10": gelu_10,
    "gelu_python": gelu,  # GELUActivation(use_gelu_python=True): the same erf formula
    "gelu_accurate": gelu_accurate,
    "laplace": laplace,
    "leaky_relu": leaky_relu,
    "linear": identity,
    "mish": mish,
    "relu2": relu2,
    "relu6": relu6,
}


def activation(name):
    """Look up an activation by its config name, with a clear error for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation_function {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}") from None


# ---------------------------------------------------------------- softmax and masks


def softmax(x, axis=-1):  # x [..., N] -> [..., N], rows sum to 1
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _max_and_log_sum_exp(x, axis, overwrite_input=False):  # x [..., N] -> (max [..., 1], log sum exp(x - max) [..., 1])
    top = x.max(axis=axis, keepdims=True)
    shifted = np.subtract(x, top, out=x if overwrite_input else None)
    np.exp(shifted, out=shifted)
    return top, np.log(shifted.sum(axis=axis, keepdims=True))


def log_softmax(x, axis=-1):  # x [..., N] -> [..., N]: (x - max) - log(sum(exp(x - max)))
    top, log_sum = _max_and_log_sum_exp(x, axis)
    out = x - top
    out -= log_sum
    return out


def logsumexp(x, axis=-1, overwrite_input=False):  # x [..., N] -> [...]
    """log(sum(exp(x))) along `axis`, shifted by the max so that exp never overflows.

    overwrite_input=True uses x as scratch (scoring: no second [n, V] block of logits)."""
    top, log_sum = _max_and_log_sum_exp(x, axis, overwrite_input)
    return np.squeeze(top + log_sum, axis=axis)


# Numba building blocks of a softmax row, for the attention kernels (banded_attention, relative_attention).
# Each works on a 1-D float buffer in place; the sum order is fixed (4 strided lanes), so results do not
# depend on what LLVM would like to reorder.

if accel.HAVE_NUMBA:
    from llvmlite import ir as _llvm_ir
    from numba import types as _numba_types
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def _i32_as_f32(typingctx, x):
        """int32 bits -> float32 with the same bits (a register bitcast; keeps loops vectorisable)."""
        sig = _numba_types.float32(_numba_types.int32)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _llvm_ir.FloatType())
        return sig, codegen


@accel.jit()
def exp_f32_inplace(buf, n, shift):  # buf[:n] <- exp(buf[:n] - shift), float32, for buf <= shift (softmax)
    """Cephes `expf` (range reduction x = n ln2 + r, degree-6 polynomial, 2^n built from its bits):
    max error 0.97 ulp on [-100, 0] (numpy's float32 exp here: 2.5 ulp), exp(-inf) = 0, NaN stays NaN,
    results below 2^-126 flush to 0. Pure arithmetic, so LLVM vectorises it without fastmath; the libm
    call `np.exp` is scalar (5-6x slower on this loop). The subtraction of the row's maximum `shift`
    happens here, in float32 as a separate pass would do it, so the row is read and written once."""
    for t in range(n):
        x = buf[t] - shift
        fx = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
        r = x - fx * np.float32(0.693359375) - fx * np.float32(-2.12194440e-4)
        y = ((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r
               + np.float32(8.3334519073e-3)) * r + np.float32(4.1665795894e-2)) * r
             + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)
        y = y * (r * r) + r + np.float32(1.0)
        two_n = _i32_as_f32(max(np.int32(fx) + np.int32(127), np.int32(1)) << np.int32(23))
        buf[t] = np.float32(0.0) if x < np.float32(-87.33654) else y * two_n


@accel.jit()
def max_4_lanes(buf, n):  # -> max(buf[:n]), n >= 1, from 4 running maxima (independent chains; max is exact)
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


@accel.jit()
def sum_4_lanes(buf, n, zero):  # -> sum(buf[:n]) as 4 strided partial sums, (s0 + s1) + (s2 + s3), plus the tail
    """zero: 0 in the accumulator's type (a float32 zero keeps float32 sums; 0.0 sums float32 rows in float64)."""
    s0 = s1 = s2 = s3 = zero
    n4 = n - n % 4
    for t in range(0, n4, 4):
        s0 += buf[t]
        s1 += buf[t + 1]
        s2 += buf[t + 2]
        s3 += buf[t + 3]
    total = (s0 + s1) + (s2 + s3)
    for t in range(n4, n):
        total += buf[t]
    return total


@accel.jit()
def exp_shifted_sum(buf, n, fast_exp):  # buf[:n] <- exp(buf[:n] - max(buf[:n])); returns their sum
    """A softmax row before the division. fast_exp: exp_f32_inplace (float32 rows only), else np.exp."""
    top = max_4_lanes(buf, n)
    if fast_exp:
        exp_f32_inplace(buf, n, top)
    else:
        for t in range(n):
            buf[t] = np.exp(buf[t] - top)
    return sum_4_lanes(buf, n, buf[0] - buf[0])  # a zero of buf's type (exp(x - top) is finite)


def mask_min(dtype):
    """The 'large negative' upstream puts in additive masks: finfo(dtype).min, never -inf."""
    return np.finfo(dtype).min


def padding_mask(attention_mask, dtype):  # attention_mask [B, S] of 0/1 -> [B, 1, 1, S] additive
    """modeling_attn_mask_utils.AttentionMaskConverter._expand_mask: 0 where attended, finfo.min where not."""
    keep = np.asarray(attention_mask).astype(bool)
    return np.where(keep, dtype.type(0), mask_min(dtype)).astype(dtype)[:, None, None, :]


def causal_padding_mask(attention_mask, query_length, dtype):  # [B, S] -> [B, 1, T, S] additive
    """AttentionMaskConverter.to_4d(is_causal=True) as the eager attention path uses it.

    Query t (the last `query_length` positions of S = past + T) may see key s when s <= past + t and the
    key is not padding; every other entry is finfo.min (one value, not a sum: upstream uses masked_fill).
    For a single query token upstream builds no causal part at all: it can see every past key anyway.
    """
    batch, source_length = np.shape(attention_mask)
    past = source_length - query_length
    allowed = np.asarray(attention_mask).astype(bool)[:, None, None, :]  # [B, 1, 1, S]
    if query_length > 1:
        causal = np.arange(source_length)[None, :] <= (past + np.arange(query_length))[:, None]  # [T, S]
        allowed = allowed & causal[None, None]  # [B, 1, T, S]
    allowed = np.broadcast_to(allowed, (batch, 1, query_length, source_length))
    return np.where(allowed, dtype.type(0), mask_min(dtype)).astype(dtype)


# ---------------------------------------------------------------- losses (torch.nn semantics)


def cross_entropy(logits, labels, ignore_index=-100):  # logits [N, C], labels [N] -> scalar
    """torch.nn.CrossEntropyLoss(reduction="mean", ignore_index=...): mean over non-ignored rows.

    With every row ignored torch returns nan (0/0); so does this.
    """
    labels = np.asarray(labels).reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1])
    keep = labels != ignore_index
    if np.any(keep & ((labels < 0) | (labels >= logits.shape[-1]))):
        bad = labels[keep & ((labels < 0) | (labels >= logits.shape[-1]))][0]
        raise ValueError(f"label {int(bad)} is outside 0..{logits.shape[-1] - 1} (and is not ignore_index={ignore_index})")
    logp = log_softmax(logits[keep])  # [K, C]
    picked = np.take_along_axis(logp, labels[keep][:, None], axis=-1)[:, 0]  # [K]
    with np.errstate(invalid="ignore", divide="ignore"):
        return -picked.sum() / logits.dtype.type(keep.sum())


def mse(pred, target):  # any shape -> scalar; torch.nn.MSELoss
    d = pred - target
    return np.mean(d * d)


def bce_with_logits(logits, targets):  # any shape -> scalar; torch.nn.BCEWithLogitsLoss
    # max(x, 0) - x*y + log(1 + exp(-|x|)): the stable form torch uses
    x, y = logits, targets.astype(logits.dtype)
    return np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


def classification_loss(logits, labels, num_labels, problem_type=None):  # logits [B, C] -> (scalar, problem_type)
    """The loss every *ForSequenceClassification head picks by `problem_type` (modeling_opt.py et al.).

    Unset problem_type is inferred as upstream does: 1 label -> regression; integer labels ->
    single-label classification; otherwise multi-label. Returns the loss and the problem type used.
    """
    labels = np.asarray(labels)
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif num_labels > 1 and labels.dtype.kind in "iu":
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        target = labels.astype(logits.dtype)
        loss = mse(logits.squeeze(), target.squeeze()) if num_labels == 1 else mse(logits, target)
    elif problem_type == "single_label_classification":
        loss = cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))
    elif problem_type == "multi_label_classification":
        loss = bce_with_logits(logits, labels.astype(logits.dtype))
    else:
        raise ValueError(
            f"problem_type {problem_type!r} is not one of 'regression', 'single_label_classification', "
            "'multi_label_classification'"
        )
    return loss, problem_type


def span_loss(start_logits, end_logits, start_positions, end_positions):  # [B, T] x2, [B] x2 -> scalar
    """Question-answering loss shared by every *ForQuestionAnswering head.

    Positions are clamped to [0, T] and T is then ignored (ignore_index=T), as upstream does;
    the loss is the mean of the start and end cross-entropies.
    """
    length = start_logits.shape[1]
    start = np.clip(np.asarray(start_positions).reshape(-1), 0, length)
    end = np.clip(np.asarray(end_positions).reshape(-1), 0, length)
    start_loss = cross_entropy(start_logits, start, ignore_index=length)
    end_loss = cross_entropy(end_logits, end, ignore_index=length)
    return (start_loss + end_loss) / start_logits.dtype.type(2)
