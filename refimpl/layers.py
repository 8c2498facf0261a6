"""Transformer building blocks shared by the families: parameter views, norms, feed-forward,
the BART-style decoder layer (OPT, XGLM, LED decoder) and the loop over a stack of layers.

Parameter names are upstream's: `self_attn.*`, `self_attn_layer_norm.*`, `encoder_attn.*`,
`encoder_attn_layer_norm.*`, `fc1.*`, `fc2.*`, `final_layer_norm.*` (modeling_bart.py
BartDecoderLayer; OPTDecoderLayer and XGLMDecoderLayer use the same names).
"""
from __future__ import annotations

from typing import Callable, Mapping

from .attention import multi_head_attention
from .ops import layer_norm, linear


def sub(params: Mapping, prefix: str) -> dict:
    """The parameters under `prefix.`, with the prefix removed: sub(p, "decoder")["embed_tokens.weight"]."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in params.items() if k.startswith(start)}


def norm(p: Mapping, name: str, x, eps: float = 1e-5):  # x [..., D] -> [..., D]
    """LayerNorm `name`; weight/bias may be absent (OPT's layer_norm_elementwise_affine=False)."""
    return layer_norm(x, p.get(name + ".weight"), p.get(name + ".bias"), eps)


def feed_forward(p: Mapping, x, act: Callable):  # x [B, T, D] -> [B, T, D]
    """fc2(act(fc1(x))); biases optional."""
    return linear(act(linear(x, p["fc1.weight"], p.get("fc1.bias"))), p["fc2.weight"], p.get("fc2.bias"))


def decoder_layer(p, x, num_heads, act, self_mask, *, norm_first, past=None, head_mask=None,
                  encoder_states=None, encoder_mask=None, cross_head_mask=None, clamp_to_min=False, eps=1e-5):
    """One decoder layer. x [B, T, D] -> (x [B, T, D], self_probs, cross_probs, present).

    norm_first=True: x + f(LN(x)) for each sublayer (OPT-125m, XGLM). False: LN(x + f(x)) (BART/LED,
    OPT-350m's do_layer_norm_before=False). Cross-attention runs when `encoder_states` is given.
    `past` and `present` are (k, v) or (k, v, cross_k, cross_v) with arrays [B, H, S, d].
    """

    def sublayer(name, x, f):
        if norm_first:
            return x + f(norm(p, name, x, eps))
        return norm(p, name, x + f(x), eps)

    self_past = past[:2] if past is not None else None
    self_probs = cross_probs = None
    present = ()

    def self_attention(h):
        nonlocal self_probs, present
        out, self_probs, present = multi_head_attention(
            sub(p, "self_attn"), h, num_heads, self_mask, past=self_past, head_mask=head_mask,
            clamp_to_min=clamp_to_min)
        return out

    x = sublayer("self_attn_layer_norm", x, self_attention)

    if encoder_states is not None:
        cross_past = past[2:4] if past is not None and len(past) == 4 else None

        def cross_attention(h):
            nonlocal cross_probs, present
            out, cross_probs, cross_kv = multi_head_attention(
                sub(p, "encoder_attn"), h, num_heads, encoder_mask, past=cross_past,
                key_value_states=encoder_states, head_mask=cross_head_mask, clamp_to_min=clamp_to_min)
            present = present + cross_kv
            return out

        x = sublayer("encoder_attn_layer_norm", x, cross_attention)

    x = sublayer("final_layer_norm", x, lambda h: feed_forward(p, h, act))
    return x, self_probs, cross_probs, present


def check_head_mask(head_mask, num_layers, num_heads, name="head_mask"):  # -> [L, H] or None
    """Upstream accepts [L, H] (one row per layer) or [H] (same for every layer)."""
    if head_mask is None:
        return None
    if head_mask.ndim == 1:
        head_mask = head_mask[None].repeat(num_layers, axis=0)
    if head_mask.shape != (num_layers, num_heads):
        raise ValueError(f"{name} must have shape ({num_layers}, {num_heads}) or ({num_heads},), got {head_mask.shape}")
    return head_mask


def run_decoder_stack(layers, x, layer_fn, *, past_key_values=None, head_mask=None, cross_head_mask=None,
                      use_cache=False, output_attentions=False, output_hidden_states=False):
    """Run `layer_fn(p, x, past, head_mask, cross_head_mask)` over the layers, collecting what upstream returns.

    Returns x, hidden_states (input of every layer; the caller appends the final state), self attentions,
    cross attentions (None when no layer had any), cache (one tuple per layer).
    """
    hidden, attentions, cross, cache = [], [], [], []
    for i, p in enumerate(layers):
        if output_hidden_states:
            hidden.append(x)
        x, self_probs, cross_probs, present = layer_fn(
            p, x,
            past_key_values[i] if past_key_values is not None else None,
            head_mask[i] if head_mask is not None else None,
            cross_head_mask[i] if cross_head_mask is not None else None,
        )
        if use_cache:
            cache.append(present)
        if output_attentions:
            attentions.append(self_probs)
            if cross_probs is not None:
                cross.append(cross_probs)
    return (x, hidden if output_hidden_states else None, tuple(attentions) if output_attentions else None,
            tuple(cross) if output_attentions and cross else None, tuple(cache) if use_cache else None)
