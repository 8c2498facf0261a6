"""NEZHA (transformers 4.37.2 `modeling_nezha.py`): BERT with functional relative positions.

    ids -> word + token-type embeddings -> LayerNorm -> N x post-LN encoder layer -> [pooler] -> heads

There are no absolute positions. Every self-attention adds a fixed sinusoid R[clip(j - i)] of the
relative distance, to the keys and to the values:

    scores_ij  = (q_i . k_j + q_i . R_ij) / sqrt(d) + mask_ij
    context_i  = sum_j P_ij v_j + sum_j P_ij R_ij,      R_ij = table[clip(j - i, -K, K) + K]

with K = max_relative_position and the same `table` [2K+1, d] for every head and layer. Upstream
materialises R_ij as a (max_position_embeddings, max_position_embeddings, d) buffer per layer
(`NezhaRelativePositionsEncoding`, 64 MiB each at the base shape); only 2K+1 distinct rows exist.
The attention itself is refimpl/relative_attention.py (the per-pair definition, NumPy and Numba);
nothing there grows with max_position_embeddings.

Parameter names are upstream's state-dict names. The base model (`NezhaModel`) owns `embeddings.*`,
`encoder.layer.<i>.*` and `pooler.*`; heads keep it under `nezha.` and add `cls.*`, `classifier.*`
or `qa_outputs.*`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import inputs, torch_vml
from ..attention import split_heads
from ..config import BaseConfig, check_heads, in_islands
from ..family import FamilySpec, pruned_heads
from ..layers import LayerOutput, check_head_mask, dense, layer_row, norm, run_stack, sub
from ..ops import (activation, classification_loss, cross_entropy, embedding, linear, mask_min,
                   padding_mask, span_loss)
from ..relative_attention import relative_attention, relative_key_scores
from ..trace import active as trace_active, internals_active, record, record_computed, record_internal
from ..outputs import (Array, BaseModelOutputWithPoolingAndCrossAttentions, MaskedLMOutput, ModelOutput,
                       MultipleChoiceModelOutput, NextSentencePredictorOutput, QuestionAnsweringModelOutput,
                       SequenceClassifierOutput, TokenClassifierOutput, returned, with_loss)

BASE_PREFIX = "nezha"  # NezhaPreTrainedModel.base_model_prefix
# NezhaForPreTraining / NezhaForMaskedLM._tied_weights_keys: the MLM decoder is the word embedding matrix;
# save_pretrained drops it (and the decoder's bias, which *is* `cls.predictions.bias`).
TIED = {"cls.predictions.decoder.weight": f"{BASE_PREFIX}.embeddings.word_embeddings.weight"}
# Buffers older upstream versions saved (or aliases of weights we read under another name); we recompute them.
IGNORED_BUFFERS = ("relative_positions_encoding.positions_encoding", "embeddings.token_type_ids",
                   "embeddings.position_ids", "cls.predictions.decoder.bias")

WITH_POOLER = {"NezhaModel", "NezhaForPreTraining", "NezhaForNextSentencePrediction",
               "NezhaForSequenceClassification", "NezhaForMultipleChoice"}  # the others pass add_pooling_layer=False


@dataclass
class NezhaForPreTrainingOutput(ModelOutput):  # modeling_nezha.py NezhaForPreTrainingOutput
    loss: Array = None
    prediction_logits: Array = None
    seq_relationship_logits: Array = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class NezhaConfig(BaseConfig):
    """configuration_nezha.py NezhaConfig."""

    model_type: str = "nezha"
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    max_relative_position: int = 64
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    classifier_dropout: Optional[float] = 0.1
    pad_token_id: Optional[int] = 0
    bos_token_id: Optional[int] = 2
    eos_token_id: Optional[int] = 3

    def __post_init__(self):
        check_heads(self.hidden_size, self.num_attention_heads)
        pruned_heads(self, self.num_hidden_layers, self.num_attention_heads)  # checked here, read by layer_heads


def layer_heads(cfg) -> list:  # -> [heads of layer i's self-attention]
    """NezhaModel._prune_heads: layer i's self-attention keeps num_attention_heads - len(pruned_heads[i]) heads,
    each still hidden_size // num_attention_heads wide (its query/key/value rows and output.dense columns go)."""
    pruned = pruned_heads(cfg, cfg.num_hidden_layers, cfg.num_attention_heads)
    return [cfg.num_attention_heads - len(pruned.get(i, ())) for i in range(cfg.num_hidden_layers)]


# ---------------------------------------------------------------- parameters


def _attention_shapes(prefix, D, width):  # NezhaAttention: self.{query,key,value} + output.{dense,LayerNorm}
    shapes = {}  # width: heads x head size, D unless heads were pruned
    for name in ("self.query", "self.key", "self.value"):
        shapes[f"{prefix}.{name}.weight"], shapes[f"{prefix}.{name}.bias"] = (width, D), (width,)
    shapes[f"{prefix}.output.dense.weight"], shapes[f"{prefix}.output.dense.bias"] = (D, width), (D,)
    shapes[f"{prefix}.output.LayerNorm.weight"], shapes[f"{prefix}.output.LayerNorm.bias"] = (D,), (D,)
    return shapes


def param_shapes(cfg, architecture):  # -> {name: shape} of every weight the architecture uses
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    shapes = {"embeddings.word_embeddings.weight": (V, D),
              "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, D),
              "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    head_size = D // cfg.num_attention_heads
    for i, heads in enumerate(layer_heads(cfg)):
        layer = f"encoder.layer.{i}."
        shapes.update(_attention_shapes(layer + "attention", D, heads * head_size))
        if cfg.add_cross_attention:  # NezhaLayer: only decoders may have it (upstream raises otherwise); never pruned
            shapes.update(_attention_shapes(layer + "crossattention", D, D))
        shapes.update({layer + "intermediate.dense.weight": (F, D), layer + "intermediate.dense.bias": (F,),
                       layer + "output.dense.weight": (D, F), layer + "output.dense.bias": (D,),
                       layer + "output.LayerNorm.weight": (D,), layer + "output.LayerNorm.bias": (D,)})
    if architecture in WITH_POOLER:
        shapes.update({"pooler.dense.weight": (D, D), "pooler.dense.bias": (D,)})
    if architecture == "NezhaModel":
        return shapes
    shapes = {f"{BASE_PREFIX}.{k}": v for k, v in shapes.items()}
    shapes.update(HEAD_SHAPES[architecture](cfg))
    return shapes


def _mlm_shapes(cfg):  # NezhaLMPredictionHead: transform (dense, act, LayerNorm), decoder tied + own bias
    D, V = cfg.hidden_size, cfg.vocab_size
    return {"cls.predictions.transform.dense.weight": (D, D), "cls.predictions.transform.dense.bias": (D,),
            "cls.predictions.transform.LayerNorm.weight": (D,), "cls.predictions.transform.LayerNorm.bias": (D,),
            "cls.predictions.decoder.weight": (V, D), "cls.predictions.bias": (V,)}


def _nsp_shapes(cfg):
    return {"cls.seq_relationship.weight": (2, cfg.hidden_size), "cls.seq_relationship.bias": (2,)}


HEAD_SHAPES = {
    "NezhaForPreTraining": lambda cfg: {**_mlm_shapes(cfg), **_nsp_shapes(cfg)},
    "NezhaForMaskedLM": _mlm_shapes,
    "NezhaForNextSentencePrediction": _nsp_shapes,
    "NezhaForSequenceClassification": lambda cfg: {"classifier.weight": (cfg.num_labels, cfg.hidden_size),
                                                   "classifier.bias": (cfg.num_labels,)},
    "NezhaForMultipleChoice": lambda cfg: {"classifier.weight": (1, cfg.hidden_size), "classifier.bias": (1,)},
    "NezhaForTokenClassification": lambda cfg: {"classifier.weight": (cfg.num_labels, cfg.hidden_size),
                                                "classifier.bias": (cfg.num_labels,)},
    "NezhaForQuestionAnswering": lambda cfg: {"qa_outputs.weight": (cfg.num_labels, cfg.hidden_size),
                                              "qa_outputs.bias": (cfg.num_labels,)},
}


# ---------------------------------------------------------------- relative positions


def relative_position_table(max_relative_position, head_dim, dtype, as_torch=False):  # -> table [2K+1, d]
    """NezhaRelativePositionsEncoding.embeddings_table: row r is the sinusoid of r, interleaved.

    table[r, 2m] = sin(r * w_m), table[r, 2m+1] = cos(r * w_m), w_m = exp(-2m ln(10000) / d); row r stands
    for the clipped distance r - K. Evaluated in float64 and rounded once to `dtype`. Upstream evaluates it
    with torch's float32 sin/cos at init, also for a model later cast to float64 (its float32 island);
    torch's values differ from the correctly rounded ones by one float32 ulp in a few percent of the
    entries (see golden/capture_nezha.py). as_torch=True computes it as upstream does, bit for bit: w_m,
    r * w_m in float32, exp/sin/cos as torch's (refimpl/torch_vml.py); the table is then float32
    whatever `dtype` (nezha_encoder casts it, as the island does under islands="upstream").
    """
    rows = 2 * max_relative_position + 1
    if as_torch:
        position = np.arange(rows, dtype=np.float32)[:, None]  # [2K+1, 1]
        step = np.float32(-math.log(10000.0) / head_dim)  # torch rounds the Python scalar to the tensor's float32
        div_term = torch_vml.exp(np.arange(0, head_dim, 2).astype(np.float32) * step)  # [ceil(d/2)]
        angle = position * div_term  # [2K+1, ceil(d/2)] float32
        table = np.zeros((rows, head_dim), dtype=np.float32)
        table[:, 0::2] = torch_vml.sin(angle)
        table[:, 1::2] = torch_vml.cos(angle)[:, : head_dim // 2]
        return table
    position = np.arange(rows, dtype=np.float64)[:, None]  # [2K+1, 1]
    div_term = np.exp(np.arange(0, head_dim, 2, dtype=np.float64) * (-math.log(10000.0) / head_dim))  # [ceil(d/2)]
    angle = position * div_term  # [2K+1, ceil(d/2)]
    table = np.zeros((rows, head_dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : head_dim // 2])  # an odd d has one cos fewer than sin
    return table.astype(dtype)


# ---------------------------------------------------------------- base model


def self_output(p, hidden, residual, eps):  # NezhaSelfOutput / NezhaOutput: LN(dense(h) + x); [B, T, *] -> [B, T, D]
    if hidden.shape[-1] == 0:  # every head pruned: a zero-width input, so dense gives its bias alone
        h = record(p, "dense", np.broadcast_to(p["dense.bias"], residual.shape).copy())
    else:
        h = dense(p, "dense", hidden)
    h = record(p, "dropout", h)  # dropout: the identity at inference
    return record(p, "", norm(p, "LayerNorm", h + residual, eps))


def nezha_attention(p, x, num_heads, mask, table, eps, *, source=None, head_mask=None, output_probs=True):
    """NezhaAttention: relative self- (or cross-) attention + output. x [B, T, D] -> (out [B, T, D], probs, (k, v)).

    probs [B, H, T, S] may be None when output_probs is False (the Numba path then never stores them).

    source [B, S, D]: encoder states for cross-attention (upstream applies the relative terms there too,
    which only runs when S == T). The query is scaled by 1/sqrt(d) before both products, which equals
    upstream's (QK^T + QR^T)/sqrt(d). num_heads may be fewer than the config's (pruned heads), even 0.
    """
    head_dim = table.shape[-1]
    source = x if source is None else source
    if num_heads == 0:  # every head pruned: zero-width query/key/value, so the output is LN(output.dense.bias + x)
        batch, length, keys = x.shape[0], x.shape[1], source.shape[1]
        empty = np.zeros((batch, 0, keys, head_dim), x.dtype)  # [B, 0, S, d]
        out = self_output(sub(p, "output"), np.zeros((batch, length, 0), x.dtype), x, eps)
        return out, np.zeros((batch, 0, length, keys), x.dtype), (empty, empty)
    if head_mask is not None:  # a [1] row multiplies every head, as upstream's broadcasting does
        head_mask = np.broadcast_to(head_mask, (num_heads,))
    ps = sub(p, "self")  # NezhaSelfAttention
    q = split_heads(dense(ps, "query", x), num_heads)  # [B, H, T, d]
    k = split_heads(dense(ps, "key", source), num_heads)  # [B, H, S, d]
    v = split_heads(dense(ps, "value", source), num_heads)  # [B, H, S, d]
    record_computed(ps, "relative_positions_encoding", lambda: relative_rows(table, q.shape[2], k.shape[2]))
    q_scaled = q * x.dtype.type(1 / math.sqrt(head_dim))
    if internals_active():  # the scores before the softmax, (Q K^T + Q R^T) / sqrt(d) + mask: [B, H, T, S]
        record_internal(ps, "scores", q_scaled @ k.transpose(0, 1, 3, 2) + relative_key_scores(q_scaled, table)
                        + (0 if mask is None else mask))
    traced = trace_active()  # the probabilities are NezhaSelfAttention.dropout's output
    context, probs = relative_attention(q_scaled, k, v, mask, None if traced else head_mask, table,
                                        output_probs=output_probs or traced)  # [B, T, D]
    if traced:  # upstream applies the head mask after its dropout module: trace P, then mask
        record(ps, "dropout", record_internal(ps, "probs", probs))
        if head_mask is not None:
            context, probs = relative_attention(q_scaled, k, v, mask, head_mask, table, output_probs=output_probs)
    record(ps, "", context)
    out = record(p, "", self_output(sub(p, "output"), context, x, eps))  # [B, T, D]
    return out, probs, (k, v)


def relative_rows(table, length, keys):  # -> R [T, S, d]: R_ij = table[clip(j - i, -K, K) + K]
    """What NezhaRelativePositionsEncoding returns (upstream's [T, T, d] buffer); for tracing only."""
    k = (table.shape[0] - 1) // 2
    distance = np.arange(keys)[None, :] - np.arange(length)[:, None]  # [T, S]
    return table[np.clip(distance, -k, k) + k]


def nezha_layer(p, x, cfg, mask, table, act, *, num_heads, head_mask=None, encoder_states=None, encoder_mask=None,
                output_probs=True):
    """NezhaLayer (post-LN). x [B, T, D] -> LayerOutput (self probs, cross probs, present).
    num_heads: of the self-attention (layer_heads: pruned heads are gone)."""
    eps = cfg.layer_norm_eps
    x, self_probs, present = nezha_attention(sub(p, "attention"), x, num_heads, mask, table,
                                             eps, head_mask=head_mask, output_probs=output_probs)
    cross_probs = None
    if encoder_states is not None:
        # NezhaLayer passes the same layer_head_mask to the cross-attention
        x, cross_probs, cross_kv = nezha_attention(sub(p, "crossattention"), x, cfg.num_attention_heads,
                                                   encoder_mask, table, eps, source=encoder_states,
                                                   head_mask=head_mask, output_probs=output_probs)
        present = present + cross_kv
    pi = sub(p, "intermediate")
    hidden = record(pi, "", record(pi, "intermediate_act_fn", act(dense(pi, "dense", x))))  # [B, T, F]
    x = self_output(sub(p, "output"), hidden, x, eps)  # [B, T, D]
    if encoder_states is None and cfg.add_cross_attention:
        # NezhaEncoder collects layer_outputs[2] as the "cross attention": without encoder states that slot
        # holds the layer's (k, v) cache, so upstream reports the cache there (quirk, reproduced)
        cross_probs = present
    return LayerOutput(x, attention=self_probs, cross_attention=cross_probs, present=present)


def extended_attention_mask(attention_mask, batch, length, is_decoder, dtype):  # -> [B, 1, T, T] or [B, 1, 1, T]
    """ModuleUtilsMixin.get_extended_attention_mask: (1 - mask) * finfo.min; causal for decoders.

    A [B, T, T] mask is used as given per query; a [B, T] mask is a key padding mask (and, for a decoder,
    combined with the causal mask).
    """
    attention_mask = np.asarray(attention_mask)
    if attention_mask.ndim == 3:
        keep = inputs.mask(attention_mask, (batch, length, length), "attention_mask (3-d: batch, query, key)")
        keep = keep[:, None, :, :]  # [B, 1, T, S]
    else:
        keep = inputs.mask(attention_mask, (batch, length), "attention_mask")[:, None, None, :]  # [B, 1, 1, S]
        if is_decoder:
            causal = np.arange(length)[None, :] <= np.arange(length)[:, None]  # [T, S]
            keep = keep * causal[None, None]  # [B, 1, T, S]
    return np.where(keep.astype(bool), dtype.type(0), mask_min(dtype)).astype(dtype)


def _check_no_past(cfg, past_key_values, batch):  # a well-formed cache (inputs.past_length) of length 0 only
    arrays = (2, 4) if cfg.add_cross_attention else (2,)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    if inputs.past_length(past_key_values, cfg.num_hidden_layers, batch, head_dim=head_dim, arrays=arrays) > 0:
        raise NotImplementedError(
            "NEZHA cannot continue from past_key_values: upstream's relative-position term "
            "(modeling_nezha.py NezhaSelfAttention.forward, key_position_scores.view(from_seq_length, ...)) "
            "only runs when the query and key lengths are equal, so transformers 4.37.2 fails for any "
            "non-empty cache; run the full sequence instead")


def nezha_embeddings(p, cfg, input_ids=None, token_type_ids=None, inputs_embeds=None):  # -> x [B, T, D]
    """NezhaEmbeddings: word + token-type embeddings, then LayerNorm (no absolute positions)."""
    input_ids, x = inputs.embed(input_ids, inputs_embeds, p["embeddings.word_embeddings.weight"])  # [B, T, D]
    if input_ids is not None:
        record(p, "embeddings.word_embeddings", x)
    batch, length = x.shape[:2]
    if length > cfg.max_position_embeddings:  # upstream's buffers stop there (positions_encoding, token_type_ids)
        raise ValueError(f"sequence length {length} exceeds max_position_embeddings={cfg.max_position_embeddings} "
                         "of this NEZHA model (upstream cannot run it either)")
    if token_type_ids is None:
        token_type_ids = np.zeros((batch, length), dtype=np.int64)  # NezhaEmbeddings: the all-zero buffer
    token_type_ids = inputs.ids(token_type_ids, "token_type_ids", vocab_size=cfg.type_vocab_size)
    if token_type_ids.shape != (batch, length):
        raise ValueError(f"token_type_ids must have shape {(batch, length)}, got {token_type_ids.shape}")
    types = embedding(token_type_ids, p["embeddings.token_type_embeddings.weight"], "token_type_ids")
    x = x + record(p, "embeddings.token_type_embeddings", types)  # [B, T, D]
    x = record(p, "embeddings.dropout", norm(p, "embeddings.LayerNorm", x, cfg.layer_norm_eps))
    return record(p, "embeddings", x)


def nezha_encoder(p, cfg, x, mask, flags, head_mask=None, encoder_states=None, encoder_mask=None):
    """NezhaEncoder: x [B, T, D] through every NezhaLayer -> StackOutput. One relative-position table
    [2K+1, d] serves every layer and head."""
    island = in_islands(cfg, x.dtype)  # upstream's float32 table in its float64 runs, bit for bit
    table = relative_position_table(cfg.max_relative_position, cfg.hidden_size // cfg.num_attention_heads,
                                    x.dtype, as_torch=island).astype(x.dtype)  # [2K+1, d]
    act = activation(cfg.hidden_act)
    heads = layer_heads(cfg)

    def layer(i, x):
        return nezha_layer(sub(p, f"encoder.layer.{i}"), x, cfg, mask, table, act, num_heads=heads[i],
                           head_mask=layer_row(head_mask, i), encoder_states=encoder_states,
                           encoder_mask=encoder_mask, output_probs=flags.attentions)

    stack = run_stack(cfg.num_hidden_layers, x, layer, flags, p, "encoder.layer")
    record(p, "encoder", stack.last_hidden_state)
    return stack


def nezha_pooler(p, x):  # NezhaPooler: x [B, T, D] -> tanh(dense(x[:, 0])) [B, D]
    if "pooler.dense.weight" not in p:
        raise ValueError("these parameters have no pooler (a NezhaForMaskedLM / TokenClassification / "
                         "QuestionAnswering checkpoint): pass add_pooling_layer=False")
    pp = sub(p, "pooler")
    return record(pp, "", record(pp, "activation", np.tanh(dense(pp, "dense", x[:, 0]))))


def _cross_attention_inputs(cfg, states, mask, batch, length, dtype):  # -> (states [B, T, D], mask [B, 1, 1, T]) or Nones
    """NezhaModel.forward: encoder states for a decoder's cross-attention (an encoder ignores them, as upstream)."""
    if not cfg.is_decoder or states is None:
        return None, None
    if not cfg.add_cross_attention:
        raise ValueError("encoder_hidden_states need cross-attention layers: set add_cross_attention=True")
    states = inputs.floats(states, dtype, "encoder_hidden_states")
    if states.shape != (batch, length, cfg.hidden_size):
        raise NotImplementedError(
            f"encoder_hidden_states must have shape {(batch, length, cfg.hidden_size)} (as many encoder "
            f"positions as decoder tokens), got {states.shape}: upstream applies the relative "
            "positions to cross-attention too and its reshape fails when the lengths differ")
    if mask is None:
        mask = np.ones((batch, length), dtype=np.int64)
    return states, padding_mask(inputs.mask(mask, (batch, length), "encoder_attention_mask"), dtype)


def nezha_model(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                add_pooling_layer=True):
    """NezhaModel.forward. input_ids [B, T] -> BaseModelOutputWithPoolingAndCrossAttentions.

    last_hidden_state [B, T, D]; pooler_output [B, D] (tanh(dense(h[:, 0]))) unless
    add_pooling_layer=False (what NezhaForMaskedLM / TokenClassification / QuestionAnswering build);
    hidden_states: L+1 entries (embeddings, then every layer); attentions [B, H, T, T];
    past_key_values (decoders with use_cache only): per layer (k, v[, cross k, cross v]) [B, H, T, d].
    """
    dtype = p["embeddings.word_embeddings.weight"].dtype
    flags = inputs.output_flags(cfg, use_cache, output_attentions, output_hidden_states)
    flags = flags._replace(use_cache=flags.use_cache and cfg.is_decoder)  # NezhaModel.forward: only decoders cache
    if cfg.add_cross_attention and not cfg.is_decoder:  # NezhaLayer.__init__ refuses this too
        raise ValueError("add_cross_attention=True needs is_decoder=True (cross-attention belongs to a decoder)")

    x = nezha_embeddings(p, cfg, input_ids, token_type_ids, inputs_embeds)  # [B, T, D]
    batch, length = x.shape[:2]
    _check_no_past(cfg, past_key_values, batch)
    if attention_mask is None:
        attention_mask = np.ones((batch, length), dtype=np.int64)
    mask = extended_attention_mask(attention_mask, batch, length, cfg.is_decoder, dtype)  # [B, 1, T or 1, T]
    encoder_states, encoder_mask = _cross_attention_inputs(cfg, encoder_hidden_states, encoder_attention_mask,
                                                           batch, length, dtype)
    head_mask = layer_head_masks(cfg, inputs.floats(head_mask, dtype, "head_mask"), encoder_states is not None)

    stack = nezha_encoder(p, cfg, x, mask, flags, head_mask, encoder_states, encoder_mask)
    x = stack.last_hidden_state
    pooled = nezha_pooler(p, x) if add_pooling_layer else None
    record(p, "", x)  # the NezhaModel module
    out = BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=x, pooler_output=pooled,
        hidden_states=stack.with_final(x), past_key_values=stack.past_key_values, attentions=stack.attentions,
        cross_attentions=stack.cross_attentions)
    return returned(cfg, return_dict, out, lambda: model_tuple(out))


def model_tuple(out) -> tuple:
    """NezhaModel's return_dict=False tuple, upstream's `(sequence_output, pooled_output) + encoder_outputs[1:]`:
    the pooler slot is kept even when None (no pooler) and the cache comes before the hidden states
    (NezhaEncoder's order), unlike the output object's field order. The heads append its [2:]."""
    rest = (out.past_key_values, out.hidden_states, out.attentions, out.cross_attentions)
    return (out.last_hidden_state, out.pooler_output) + tuple(v for v in rest if v is not None)


def layer_head_masks(cfg, head_mask, cross_attention):  # [H'] or [L, H'] -> [L, H'] or None
    """NezhaModel.get_head_mask, then NezhaSelfAttention's `probs * head_mask`: layer i's row [H'] multiplies
    its [B, H_i, T, S] probabilities (H_i after pruning), so H' must be H_i or 1 (broadcast), for the
    cross-attention (never pruned) num_attention_heads or 1; upstream fails to broadcast otherwise."""
    if head_mask is None:
        return None
    heads = layer_heads(cfg)
    width = head_mask.shape[-1] if head_mask.ndim else 0
    needed = set(heads) | ({cfg.num_attention_heads} if cross_attention else set())
    if width != 1 and needed != {width}:
        raise ValueError(f"head_mask must have shape (num_layers={cfg.num_hidden_layers}, heads) or (heads,) with heads "
                         f"= 1 or the heads of every attention ({sorted(needed)}; pruned_heads leave {heads} "
                         f"self-attention heads), got {head_mask.shape}")
    return check_head_mask(head_mask, cfg.num_hidden_layers, width)  # [L, H']; nezha_attention broadcasts


# ---------------------------------------------------------------- heads


def _base(p, cfg, pooled, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
          output_attentions, output_hidden_states, **extra):
    """The heads' call of NezhaModel, which caches only for decoders (use_cache from the config): the heads'
    output objects drop the cache, their return_dict=False tuples keep it (model_tuple(out)[2:])."""
    return nezha_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                       output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                       return_dict=True, add_pooling_layer=pooled, **extra)


def head_returned(cfg, return_dict, output, out, *values):
    """A head's return: `output`, or upstream's `((loss,) + values + outputs[2:])` (loss first when computed),
    where outputs is NezhaModel's tuple (model_tuple)."""
    return returned(cfg, return_dict, output, lambda: with_loss(output.loss, values + model_tuple(out)[2:]))


def mlm_logits(p, cfg, h):  # NezhaLMPredictionHead (cls.predictions): h [B, T, D] -> [B, T, V]
    pt = sub(p, "cls.predictions.transform")
    h = record(pt, "transform_act_fn", activation(cfg.hidden_act)(dense(pt, "dense", h)))
    h = record(pt, "", norm(pt, "LayerNorm", h, cfg.layer_norm_eps))
    logits = linear(h, p["cls.predictions.decoder.weight"], p["cls.predictions.bias"])  # decoder.bias is this bias
    return record(p, "cls.predictions", record(p, "cls.predictions.decoder", logits))


def nsp_logits(p, pooled):  # NezhaOnlyNSPHead / cls.seq_relationship: pooled [B, D] -> [B, 2]
    return dense(p, "cls.seq_relationship", pooled)


def classifier(p, h):  # the heads' dropout (the identity at inference) and classifier: [B, *, D] -> [B, *, C]
    return dense(p, "classifier", record(p, "dropout", h))


def _labels(labels, name="labels"):
    return inputs.ids(labels, name, ndim=np.ndim(labels))


def nezha_for_pre_training(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                           inputs_embeds=None, labels=None, next_sentence_label=None, output_attentions=None,
                           output_hidden_states=None, return_dict=None):
    """NezhaForPreTraining. prediction_logits [B, T, V], seq_relationship_logits [B, 2]; loss = MLM CE
    (-100 ignored) + NSP CE, only when both labels and next_sentence_label are given (as upstream)."""
    out = _base(p, cfg, True, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    prediction = mlm_logits(p, cfg, out.last_hidden_state)  # [B, T, V]
    relationship = nsp_logits(p, out.pooler_output)  # [B, 2]
    record(p, "cls", prediction)  # NezhaPreTrainingHeads returns (prediction, relationship)
    loss = None
    if labels is not None and next_sentence_label is not None:
        loss = (cross_entropy(prediction.reshape(-1, cfg.vocab_size), _labels(labels).reshape(-1))
                + cross_entropy(relationship, _labels(next_sentence_label, "next_sentence_label").reshape(-1)))
    output = NezhaForPreTrainingOutput(loss=loss, prediction_logits=prediction, seq_relationship_logits=relationship,
                                       hidden_states=out.hidden_states, attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, prediction, relationship)


def nezha_for_masked_lm(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                        inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                        output_attentions=None, output_hidden_states=None, return_dict=None):
    """NezhaForMaskedLM (no pooler). logits [B, T, V]; loss: CE over labels, -100 ignored."""
    out = _base(p, cfg, False, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states, encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask)
    logits = record(p, "cls", mlm_logits(p, cfg, out.last_hidden_state))  # [B, T, V]
    loss = None if labels is None else cross_entropy(logits.reshape(-1, cfg.vocab_size), _labels(labels).reshape(-1))
    output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, logits)


def nezha_for_next_sentence_prediction(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None,
                                       head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                                       output_hidden_states=None, return_dict=None, next_sentence_label=None):
    """NezhaForNextSentencePrediction. logits [B, 2]; `next_sentence_label` is upstream's deprecated name of labels."""
    if labels is None:
        labels = next_sentence_label
    out = _base(p, cfg, True, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = record(p, "cls", nsp_logits(p, out.pooler_output))  # [B, 2]
    loss = None if labels is None else cross_entropy(logits, _labels(labels).reshape(-1))
    output = NextSentencePredictorOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                         attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, logits)


def nezha_for_sequence_classification(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None,
                                      head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                                      output_hidden_states=None, return_dict=None):
    """NezhaForSequenceClassification: classifier on the pooler. logits [B, num_labels]; loss by problem_type."""
    out = _base(p, cfg, True, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = classifier(p, out.pooler_output)  # [B, C]
    loss = None
    if labels is not None:
        loss, _ = classification_loss(logits, labels, cfg.num_labels, cfg.problem_type)
    output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                      attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, logits)


def nezha_for_multiple_choice(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                              inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                              return_dict=None):
    """NezhaForMultipleChoice. input_ids [B, C, T] (or inputs_embeds [B, C, T, D]) -> logits [B, C].

    Every choice runs as its own row ([B*C, T]), so hidden_states / attentions have batch B*C as upstream's.
    """
    inputs.one_of(input_ids, inputs_embeds)
    if input_ids is not None:
        input_ids = np.asarray(input_ids)
        if input_ids.ndim != 3:
            raise ValueError(f"input_ids must have shape (batch, num_choices, sequence), got {input_ids.shape}")
        shape = input_ids.shape  # (B, C, T)
    else:
        inputs_embeds = np.asarray(inputs_embeds)
        if inputs_embeds.ndim != 4:
            raise ValueError("inputs_embeds must have shape (batch, num_choices, sequence, hidden), "
                             f"got {inputs_embeds.shape}")
        shape = inputs_embeds.shape[:3]
    num_choices = shape[1]

    def flat(x, name):  # [B, C, T(, D)] -> [B*C, T(, D)]
        if x is None:
            return None
        x = np.asarray(x)
        if x.shape[:3] != tuple(shape) or (name != "inputs_embeds" and x.ndim != 3):
            raise ValueError(f"{name} must have shape {tuple(shape)} (batch, num_choices, sequence), got {x.shape}")
        return x.reshape((-1,) + x.shape[2:])

    out = _base(p, cfg, True, flat(input_ids, "input_ids"), flat(attention_mask, "attention_mask"),
                flat(token_type_ids, "token_type_ids"), head_mask, flat(inputs_embeds, "inputs_embeds"),
                output_attentions, output_hidden_states)
    scores = classifier(p, out.pooler_output)  # [B*C, 1]
    logits = scores.reshape(-1, num_choices)  # [B, C]
    loss = None if labels is None else cross_entropy(logits, _labels(labels).reshape(-1))
    output = MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                       attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, logits)


def nezha_for_token_classification(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None,
                                   head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                                   output_hidden_states=None, return_dict=None):
    """NezhaForTokenClassification (no pooler). logits [B, T, num_labels]; loss: CE, -100 ignored."""
    out = _base(p, cfg, False, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = classifier(p, out.last_hidden_state)  # [B, T, C]
    loss = None
    if labels is not None:
        loss = cross_entropy(logits.reshape(-1, cfg.num_labels), _labels(labels).reshape(-1))
    output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                   attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, logits)


def nezha_for_question_answering(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                                 inputs_embeds=None, start_positions=None, end_positions=None,
                                 output_attentions=None, output_hidden_states=None, return_dict=None):
    """NezhaForQuestionAnswering (no pooler). start/end logits [B, T]; loss: span_loss."""
    if cfg.num_labels != 2:  # qa_outputs has num_labels outputs; upstream's split(1) unpacks exactly two
        raise ValueError(f"NezhaForQuestionAnswering needs num_labels=2 (start, end), the config has {cfg.num_labels}")
    out = _base(p, cfg, False, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = dense(p, "qa_outputs", out.last_hidden_state)  # [B, T, 2]
    start_logits = np.ascontiguousarray(logits[..., 0])  # [B, T]
    end_logits = np.ascontiguousarray(logits[..., 1])
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = span_loss(start_logits, end_logits, start_positions, end_positions)
    output = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                          hidden_states=out.hidden_states, attentions=out.attentions)
    return head_returned(cfg, return_dict, output, out, start_logits, end_logits)


SPEC = FamilySpec(
    model_type="nezha", config=NezhaConfig, base_model="NezhaModel", base_prefix=BASE_PREFIX,
    architectures={
        "NezhaModel": nezha_model,
        "NezhaForPreTraining": nezha_for_pre_training,
        "NezhaForMaskedLM": nezha_for_masked_lm,
        "NezhaForNextSentencePrediction": nezha_for_next_sentence_prediction,
        "NezhaForSequenceClassification": nezha_for_sequence_classification,
        "NezhaForMultipleChoice": nezha_for_multiple_choice,
        "NezhaForTokenClassification": nezha_for_token_classification,
        "NezhaForQuestionAnswering": nezha_for_question_answering,
    },
    param_shapes=param_shapes,
    tied=TIED,
    ignored_buffers=IGNORED_BUFFERS,
    masked_lm={"NezhaForMaskedLM": "logits", "NezhaForPreTraining": "prediction_logits"},
    sequence_classifiers=("NezhaForSequenceClassification",),
)
