"""Transformer building blocks shared by the families: parameter views, norms, feed-forward,
the BART-style decoder layer (OPT, XGLM, LED decoder) and `run_stack`, the one loop over a stack of
layers that every encoder and decoder runs.

Parameter names are upstream's: `self_attn.*`, `self_attn_layer_norm.*`, `encoder_attn.*`,
`encoder_attn_layer_norm.*`, `fc1.*`, `fc2.*`, `final_layer_norm.*` (modeling_bart.py
BartDecoderLayer; OPTDecoderLayer and XGLMDecoderLayer use the same names).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional

from .attention import PackedRows, multi_head_attention
from .ops import add, layer_norm, linear
from .trace import active as trace_active
from .trace import path_of, record


class Params(dict):
    """A view of the parameters under one upstream module: keys relative to it, `path` its full name
    (what refimpl.trace names intermediates by). A loaded model's parameters are a Params too.

    `sub` keeps the views it makes of a Params (`_views`), so a decoding step does not scan every key
    of the model again for each layer; anything that changes the dict forgets them. A view is shared
    by every later caller: read it, change the parameters themselves.
    """

    path: str = ""

    def _changed(self):
        self.__dict__.pop("_views", None)

    def __setitem__(self, key, value):
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._changed()
        super().__delitem__(key)

    def pop(self, *args):
        self._changed()
        return super().pop(*args)

    def popitem(self):
        self._changed()
        return super().popitem()

    def clear(self):
        self._changed()
        super().clear()

    def update(self, *args, **kwargs):
        self._changed()
        super().update(*args, **kwargs)

    def setdefault(self, key, default=None):
        self._changed()
        return super().setdefault(key, default)

    def __ior__(self, other):
        self._changed()
        return super().__ior__(other)


def sub(params: Mapping, prefix: str) -> Params:
    """The parameters under `prefix.`, with the prefix removed: sub(p, "decoder")["embed_tokens.weight"]."""
    views = params.__dict__.setdefault("_views", {}) if isinstance(params, Params) else {}
    view = views.get(prefix)
    if view is None:
        start = prefix + "."
        view = Params((k[len(start):], v) for k, v in params.items() if k.startswith(start))
        view.path = path_of(params, prefix)
        views[prefix] = view
    return view


def dense(p: Mapping, name: str, x):  # x [..., in] -> [..., out]: the nn.Linear `name`, traced under its name
    return record(p, name, linear(x, p[name + ".weight"], p.get(name + ".bias")))


def norm(p: Mapping, name: str, x, eps: float = 1e-5):  # x [..., D] -> [..., D]
    """LayerNorm `name`; weight/bias may be absent (OPT's layer_norm_elementwise_affine=False)."""
    return record(p, name, layer_norm(x, p.get(name + ".weight"), p.get(name + ".bias"), eps))


def feed_forward(p: Mapping, x, act: Callable):  # x [B, T, D] or [N, D] -> the same
    """fc2(act(fc1(x))); biases optional; traced as fc1, activation_fn, fc2."""
    return dense(p, "fc2", record(p, "activation_fn", act(dense(p, "fc1", x))))


def pre_norm(p: Mapping, name: str, x, norm_first: bool, eps: float):  # x [B, T, D] -> a sublayer's input
    """Pre-LN layers normalise a sublayer's input; post-LN layers feed it x itself."""
    return norm(p, name, x, eps) if norm_first else x


def add_residual(p: Mapping, name: str, x, out, norm_first: bool, eps: float):  # x, out [B, T, D] -> [B, T, D]
    """x + sublayer output; post-LN layers then normalise the sum: LN(x + f(x)), pre-LN: x + f(LN(x))."""
    x = add(x, out)
    return x if norm_first else norm(p, name, x, eps)


def decoder_layer(p, x, num_heads, act, self_mask, *, norm_first, past=None, head_mask=None,
                  encoder_states=None, encoder_mask=None, cross_head_mask=None, clamp_to_min=False, eps=1e-5,
                  ffn_on_rows=False, output_probs=True, rows=None):
    """One BART-style decoder layer (modeling_bart.py BartDecoderLayer). x [B, T, D] -> LayerOutput.

    norm_first=True: x + f(LN(x)) for each sublayer (OPT-125m, XGLM). False: LN(x + f(x)) (BART/LED,
    OPT-350m's do_layer_norm_before=False). Cross-attention runs when `encoder_states` is given.
    `past` and `present` are (k, v) or (k, v, cross_k, cross_v) with arrays [B, H, S, d].
    ffn_on_rows: OPTDecoderLayer runs its feed-forward on [B*T, D] rows (the same numbers; its traced
    shapes are upstream's). output_probs=False: the attention probabilities are not kept (None).
    rows (attention.PackedRows; no cache, no cross-attention): x is the real positions only, [N, D].
    """
    out, self_probs, present = multi_head_attention(
        sub(p, "self_attn"), pre_norm(p, "self_attn_layer_norm", x, norm_first, eps), num_heads, self_mask,
        past=None if past is None else past[:2], head_mask=head_mask, clamp_to_min=clamp_to_min,
        output_probs=output_probs, rows=rows)
    x = add_residual(p, "self_attn_layer_norm", x, record(p, "self_attn", out), norm_first, eps)

    cross_probs = None
    if encoder_states is not None:
        cross_past = past[2:4] if past is not None and len(past) == 4 else None
        out, cross_probs, cross_kv = multi_head_attention(
            sub(p, "encoder_attn"), pre_norm(p, "encoder_attn_layer_norm", x, norm_first, eps), num_heads, encoder_mask,
            past=cross_past, key_value_states=encoder_states, head_mask=cross_head_mask, clamp_to_min=clamp_to_min,
            output_probs=output_probs)
        x = add_residual(p, "encoder_attn_layer_norm", x, record(p, "encoder_attn", out), norm_first, eps)
        present = present + cross_kv

    rows = x.reshape(-1, x.shape[-1]) if ffn_on_rows else x  # [B*T, D] or [B, T, D]
    out = feed_forward(p, pre_norm(p, "final_layer_norm", rows, norm_first, eps), act)
    x = add_residual(p, "final_layer_norm", x, out.reshape(x.shape), norm_first, eps)
    return LayerOutput(x, attention=self_probs, cross_attention=cross_probs, present=present)


def packed_rows(skip_padding, attention_mask, flags, past_length, cross_attention=False):  # -> PackedRows or None
    """A decoder's `skip_padding=True` (refimpl's own argument, what scoring passes): its layers run on the
    real positions of attention_mask [B, T] only (attention.PackedRows), and last_hidden_state is 0.0 at
    padding. Refused, naming it, with what that cannot give: a cache, hidden states, attentions, a trace."""
    if skip_padding is not True and skip_padding is not False:
        raise ValueError(f"skip_padding must be True or False, got {skip_padding!r}")
    if not skip_padding:
        return None
    for asked, name in ((flags.use_cache, "use_cache=True"), (flags.hidden_states, "output_hidden_states=True"),
                        (flags.attentions, "output_attentions=True"), (past_length > 0, "past_key_values"),
                        (cross_attention, "encoder_hidden_states"), (trace_active(), "a trace")):
        if asked:
            raise ValueError(f"skip_padding=True computes the real positions only; it cannot be combined with "
                             f"{name} (pass skip_padding=False)")
    return PackedRows.of(attention_mask)


def check_head_mask(head_mask, num_layers, num_heads, name="head_mask"):  # -> [L, H] or None
    """Upstream accepts [L, H] (one row per layer) or [H] (same for every layer)."""
    if head_mask is None:
        return None
    if head_mask.ndim == 1:
        head_mask = head_mask[None].repeat(num_layers, axis=0)
    if head_mask.shape != (num_layers, num_heads):
        raise ValueError(f"{name} must have shape ({num_layers}, {num_heads}) or ({num_heads},), got {head_mask.shape}")
    return head_mask


def layer_row(per_layer, i):  # the i-th entry of an optional per-layer argument (head masks, caches)
    return None if per_layer is None else per_layer[i]


# ---------------------------------------------------------------- the one loop over a stack of layers


class LayerOutput(NamedTuple):
    """What one layer hands to the stack runner (upstream's `layer_outputs` tuple, by name)."""

    hidden: Any                     # [B, T, D], the next layer's input
    attention: Any = None           # self-attention probabilities [B, H, T, S]
    cross_attention: Any = None     # cross-attention probabilities [B, H, T, S_enc]
    global_attention: Any = None    # Longformer: the global tokens' probabilities
    present: tuple = ()             # the cache entry of this layer: (k, v[, cross_k, cross_v])


@dataclass
class StackOutput:
    """Everything a stack of layers returns; a kind of attention no layer returned is None."""

    last_hidden_state: Any
    hidden_states: Optional[tuple]  # the input of every layer; `with_final` appends the final state
    attentions: Optional[tuple]
    cross_attentions: Optional[tuple]
    global_attentions: Optional[tuple]
    past_key_values: Optional[tuple]

    def with_final(self, final):  # -> hidden_states + (final,), or None when not asked for
        return None if self.hidden_states is None else self.hidden_states + (final,)


def run_stack(num_layers: int, x, layer_fn: Callable, flags, params: Mapping, name: str) -> StackOutput:
    """x [B, T, D] through `layer_fn(i, x) -> LayerOutput` for i = 0 .. num_layers - 1, collecting what
    upstream's encoders and decoders collect (flags: inputs.OutputFlags). Used by every family.
    params / name: the parameters holding the stack and its ModuleList's name ("decoder.layers"), under
    which each layer's output is traced ("decoder.layers.3")."""
    hidden, attentions, cross, global_, cache = [], [], [], [], []
    for i in range(num_layers):
        if flags.hidden_states:
            hidden.append(x)
        out = layer_fn(i, x)
        x = record(params, f"{name}.{i}", out.hidden)
        if flags.use_cache:
            cache.append(out.present)
        if flags.attentions:
            for kept, probs in ((attentions, out.attention), (cross, out.cross_attention),
                                (global_, out.global_attention)):
                if probs is not None:
                    kept.append(probs)

    def kept(values, wanted):
        return tuple(values) if wanted and values else None

    return StackOutput(x, tuple(hidden) if flags.hidden_states else None, kept(attentions, flags.attentions),
                       kept(cross, flags.attentions), kept(global_, flags.attentions), kept(cache, flags.use_cache))
