"""Primitive array operations shared by every model family.

Each function is a plain NumPy expression of the operation upstream's PyTorch
module performs. dtype follows the inputs: float32 in, float32 out; float64 in,
float64 out. Nothing here promotes silently (Python float scalars do not
promote NumPy arrays).
"""
from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------- linear algebra


def linear(x, weight, bias=None):  # x [..., in], weight [out, in], bias [out] -> [..., out]
    """torch.nn.Linear: x @ W^T + b, with W stored [out, in] as upstream stores it."""
    # One 2-D GEMM: numpy runs a stacked [B, T, in] @ [in, out] product several times slower.
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        y += bias
    return y


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

    float32 with Numba installed runs refimpl.kernels.layer_norm_float32: the same formula with float64
    sums, one pass per row (about 2x faster, and closer to the exact result).
    """
    if x.dtype == np.float32 and x.size:
        from .kernels import layer_norm_float32  # None without Numba

        if layer_norm_float32 is not None:
            return layer_norm_float32(x, weight, bias, eps)
    return layer_norm_numpy(x, weight, bias, eps)


def layer_norm_numpy(x, weight=None, bias=None, eps=1e-5):  # x [..., D] -> [..., D]
    """layer_norm in NumPy, in the input's dtype."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    y = centered / np.sqrt(var + x.dtype.type(eps))
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y


# ---------------------------------------------------------------- activations


def relu(x):
    return np.maximum(x, x.dtype.type(0))


def gelu(x):  # exact erf GELU, torch.nn.functional.gelu(approximate="none"): x * Phi(x)
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


def log_softmax(x, axis=-1):  # x [..., N] -> [..., N]
    out = x - x.max(axis=axis, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=axis, keepdims=True))
    return out


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
