"""NEZHA (transformers 4.37.2 `modeling_nezha.py`): BERT with functional relative positions.

    ids -> word + token-type embeddings -> LayerNorm -> N x post-LN encoder layer -> [pooler] -> heads

There are no absolute positions. Every self-attention adds a fixed sinusoid R[clip(j - i)] of the
relative distance, to the keys and to the values:

    scores_ij  = (q_i . k_j + q_i . R_ij) / sqrt(d) + mask_ij
    context_i  = sum_j P_ij v_j + sum_j P_ij R_ij,      R_ij = table[clip(j - i, -K, K) + K]

with K = max_relative_position and the same `table` [2K+1, d] for every head and layer. Upstream
materialises R_ij as a (max_position_embeddings, max_position_embeddings, d) buffer per layer
(`NezhaRelativePositionsEncoding`, 64 MiB each at the base shape); only 2K+1 distinct rows exist,
so here the query meets the 2K+1 rows once (q @ table^T, [B, H, T, 2K+1]) and the result is
gathered by distance; the value side sums the probabilities per distance bucket first and then
meets the table ([B, H, T, 2K+1] @ [2K+1, d]). Nothing here grows with max_position_embeddings.

Parameter names are upstream's state-dict names. The base model (`NezhaModel`) owns `embeddings.*`,
`encoder.layer.<i>.*` and `pooler.*`; heads keep it under `nezha.` and add `cls.*`, `classifier.*`
or `qa_outputs.*`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import inputs, kernels
from ..attention import attend, merge_heads, split_heads
from ..layers import check_head_mask, sub
from ..ops import (activation, classification_loss, cross_entropy, embedding, layer_norm, linear, mask_min,
                   span_loss)
from ..outputs import (Array, BaseModelOutputWithPoolingAndCrossAttentions, MaskedLMOutput, ModelOutput,
                       MultipleChoiceModelOutput, NextSentencePredictorOutput, QuestionAnsweringModelOutput,
                       SequenceClassifierOutput, TokenClassifierOutput)

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


# ---------------------------------------------------------------- parameters


def _attention_shapes(prefix, D):  # NezhaAttention: self.{query,key,value} + output.{dense,LayerNorm}
    shapes = {}
    for name in ("self.query", "self.key", "self.value", "output.dense"):
        shapes[f"{prefix}.{name}.weight"], shapes[f"{prefix}.{name}.bias"] = (D, D), (D,)
    shapes[f"{prefix}.output.LayerNorm.weight"], shapes[f"{prefix}.output.LayerNorm.bias"] = (D,), (D,)
    return shapes


def param_shapes(cfg, architecture):  # -> {name: shape} of every weight the architecture uses
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    shapes = {"embeddings.word_embeddings.weight": (V, D),
              "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, D),
              "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    for i in range(cfg.num_hidden_layers):
        layer = f"encoder.layer.{i}."
        shapes.update(_attention_shapes(layer + "attention", D))
        if cfg.add_cross_attention:  # NezhaLayer: only decoders may have it (upstream raises otherwise)
            shapes.update(_attention_shapes(layer + "crossattention", D))
        shapes.update({layer + "intermediate.dense.weight": (F, D), layer + "intermediate.dense.bias": (F,),
                       layer + "output.dense.weight": (D, F), layer + "output.dense.bias": (D,),
                       layer + "output.LayerNorm.weight": (D,), layer + "output.LayerNorm.bias": (D,)})
    if architecture in WITH_POOLER:
        shapes.update({"pooler.dense.weight": (D, D), "pooler.dense.bias": (D,)})
    if architecture == "NezhaModel":
        return shapes
    if architecture not in HEAD_SHAPES:
        raise ValueError(f"{architecture!r} is not a nezha architecture; expected one of {sorted(ARCHITECTURES)}")
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


def relative_position_table(max_relative_position, head_dim, dtype):  # -> table [2K+1, d]
    """NezhaRelativePositionsEncoding.embeddings_table: row r is the sinusoid of r, interleaved.

    table[r, 2m] = sin(r * w_m), table[r, 2m+1] = cos(r * w_m), w_m = exp(-2m ln(10000) / d); row r stands
    for the clipped distance r - K. Evaluated in float64 and rounded once to `dtype`. (Upstream evaluates
    it with torch's float32 sin/cos at init, also for a model later cast to float64; those differ from the
    correctly rounded values by one float32 ulp in a few percent of the entries: see golden/capture_nezha.py.)
    """
    rows = 2 * max_relative_position + 1
    position = np.arange(rows, dtype=np.float64)[:, None]  # [2K+1, 1]
    div_term = np.exp(np.arange(0, head_dim, 2, dtype=np.float64) * (-math.log(10000.0) / head_dim))  # [ceil(d/2)]
    angle = position * div_term  # [2K+1, ceil(d/2)]
    table = np.zeros((rows, head_dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : head_dim // 2])  # an odd d has one cos fewer than sin
    return table.astype(dtype)


def relative_key_scores(q, table):  # q [B, H, T, d], table [R, d] -> [B, H, T, T] (a strided view)
    """q_i . R_ij for every pair: q meets the R = 2K+1 distinct rows once, then each (i, j) reads its row.

    Entry (i, j) is per_row[i, clip(j - i, -K, K) + K]. Clipping is edge replication: pad per_row's last
    axis with copies of its first column on the left and of its last column on the right, long enough
    for every distance; then (i, j) reads padded[i, E + K + j - i], a diagonal walk, i.e. a view with row
    stride L - 1 (no [T, T] index array, no gather).
    """
    batch, heads, length, _ = q.shape
    rows = table.shape[0]
    k = (rows - 1) // 2
    left = right = max(0, length - 1 - k)  # E: distances beyond -K / +K need this many replicated columns
    # one GEMM over every (token, head) pair: q arrives as a head view of a [B, T, H*d] projection
    by_token = q.transpose(0, 2, 1, 3).reshape(-1, q.shape[-1])  # [B*T*H, d] (free when q is such a view)
    per_row = (by_token @ table.T).reshape(batch, length, heads, rows).transpose(0, 2, 1, 3)  # [B, H, T, R]
    padded = np.empty((batch, heads, length, left + rows + right), q.dtype)  # [B, H, T, L]
    padded[..., :left] = per_row[..., :1]
    padded[..., left:left + rows] = per_row
    padded[..., left + rows:] = per_row[..., -1:]
    item = padded.itemsize
    width = padded.shape[-1]
    # view [B, H, T, T]: (i, j) -> padded[..., i, left + K - i + j]; each row starts one column further left
    return np.lib.stride_tricks.as_strided(
        padded[..., left + k:], shape=(batch, heads, length, length),
        strides=padded.strides[:2] + ((width - 1) * item, item), writeable=False)


def probabilities_per_distance(probs, rows):  # probs [B, H, T, T] -> [B, H, T, R]
    """sum_{j : clip(j - i) = r - K} P_ij: the transpose of the gather in `relative_key_scores`.

    Row r < 2K+1 holds the one key j = i + r - K when it exists (a diagonal walk through P padded with
    K zeros on each side: a view with row stride S + 2K + 1); the end rows 0 and 2K must also collect
    every key beyond the window (j < i - K, j > i + K): added from masked row sums.
    """
    batch, heads, length, keys = probs.shape
    k = (rows - 1) // 2
    padded = np.zeros((batch, heads, length, keys + 2 * k), probs.dtype)  # [B, H, T, S + 2K]
    padded[..., k:k + keys] = probs
    item = padded.itemsize
    window = np.lib.stride_tricks.as_strided(  # [B, H, T, R]: (i, r) -> padded[..., i, i + r] = P[i, i + r - K]
        padded, shape=(batch, heads, length, rows),
        strides=padded.strides[:2] + ((padded.shape[-1] + 1) * item, item), writeable=False).copy()
    if length - 1 > k:  # some keys lie beyond +-K: fold them into the end rows
        distance = np.arange(keys)[None, :] - np.arange(length)[:, None]  # [T, S]
        window[..., 0] += np.einsum("bhts,ts->bht", probs, (distance < -k).astype(probs.dtype))
        window[..., rows - 1] += np.einsum("bhts,ts->bht", probs, (distance > k).astype(probs.dtype))
    return window


def relative_value_context(probs, table):  # probs [B, H, T, T], table [R, d] -> [B, H, T, d]
    """sum_j P_ij R_ij = sum_r (sum_{j: clip(j - i) = r - K} P_ij) table[r]."""
    buckets = probabilities_per_distance(probs, table.shape[0])  # [B, H, T, R], contiguous
    return (buckets.reshape(-1, table.shape[0]) @ table).reshape(probs.shape[:3] + table.shape[1:])  # [B, H, T, d]


def relative_attention_numpy(q, k, v, mask, head_mask, table):  # -> context [B, T, H*d], probs [B, H, T, S]
    """The whole relative attention for queries already scaled: q [B, H, T, d], k, v [B, H, S, d],
    mask [B, 1, T or 1, S] additive, head_mask [H] or None, table [2K+1, d]."""
    context, probs = attend(q, k, v, mask, head_mask,
                            score_bias=lambda qs: relative_key_scores(qs, table),
                            value_bias=lambda pr: relative_value_context(pr, table))
    return merge_heads(context), probs


def relative_attention(q, k, v, mask, head_mask, table, output_probs):  # -> context [B, T, H*d], probs or None
    """relative_attention_numpy, or its Numba twin (kernels.relative_attention_numba) when Numba is installed:
    blocks of (batch row, head, queries) on both cores, without the [B, H, T, T] arrays of the bias terms,
    and probabilities stored only when output_probs."""
    if kernels.HAVE_NUMBA:
        return kernels.relative_attention_numba(q, k, v, mask, head_mask, table, output_probs=output_probs)
    return relative_attention_numpy(q, k, v, mask, head_mask, table)


# ---------------------------------------------------------------- base model


def self_output(p, hidden, residual, eps):  # NezhaSelfOutput / NezhaOutput: LN(dense(h) + x); [B, T, *] -> [B, T, D]
    return layer_norm(linear(hidden, p["dense.weight"], p["dense.bias"]) + residual,
                      p["LayerNorm.weight"], p["LayerNorm.bias"], eps)


def nezha_attention(p, x, num_heads, mask, table, eps, *, source=None, head_mask=None, output_probs=True):
    """NezhaAttention: relative self- (or cross-) attention + output. x [B, T, D] -> (out [B, T, D], probs, (k, v)).

    probs [B, H, T, S] may be None when output_probs is False (the Numba path then never stores them).

    source [B, S, D]: encoder states for cross-attention (upstream applies the relative terms there too,
    which only runs when S == T). The query is scaled by 1/sqrt(d) before both products, which equals
    upstream's (QK^T + QR^T)/sqrt(d).
    """
    head_dim = x.shape[-1] // num_heads
    source = x if source is None else source
    q = split_heads(linear(x, p["self.query.weight"], p["self.query.bias"]), num_heads)  # [B, H, T, d]
    k = split_heads(linear(source, p["self.key.weight"], p["self.key.bias"]), num_heads)  # [B, H, S, d]
    v = split_heads(linear(source, p["self.value.weight"], p["self.value.bias"]), num_heads)  # [B, H, S, d]
    q_scaled = q * x.dtype.type(1 / math.sqrt(head_dim))
    context, probs = relative_attention(q_scaled, k, v, mask, head_mask, table, output_probs)  # [B, T, D]
    out = self_output(sub(p, "output"), context, x, eps)  # [B, T, D]
    return out, probs, (k, v)


def nezha_layer(p, x, cfg, mask, table, act, *, head_mask=None, encoder_states=None, encoder_mask=None,
                output_probs=True):
    """NezhaLayer (post-LN). x [B, T, D] -> (x [B, T, D], self probs, cross probs or None, present)."""
    eps = cfg.layer_norm_eps
    x, self_probs, present = nezha_attention(sub(p, "attention"), x, cfg.num_attention_heads, mask, table,
                                             eps, head_mask=head_mask, output_probs=output_probs)
    cross_probs = None
    if encoder_states is not None:
        # NezhaLayer passes the same layer_head_mask to the cross-attention
        x, cross_probs, cross_kv = nezha_attention(sub(p, "crossattention"), x, cfg.num_attention_heads,
                                                   encoder_mask, table, eps, source=encoder_states,
                                                   head_mask=head_mask, output_probs=output_probs)
        present = present + cross_kv
    hidden = act(linear(x, p["intermediate.dense.weight"], p["intermediate.dense.bias"]))  # [B, T, F]
    x = self_output(sub(p, "output"), hidden, x, eps)  # [B, T, D]
    return x, self_probs, cross_probs, present


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


def _check_no_past(past_key_values):
    if past_key_values is not None and len(past_key_values) and np.shape(past_key_values[0][0])[2] > 0:
        raise NotImplementedError(
            "NEZHA cannot continue from past_key_values: upstream's relative-position term "
            "(modeling_nezha.py NezhaSelfAttention.forward, key_position_scores.view(from_seq_length, ...)) "
            "only runs when the query and key lengths are equal, so transformers 4.37.2 fails for any "
            "non-empty cache; run the full sequence instead")


def nezha_model(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, add_pooling_layer=True):
    """NezhaModel.forward. input_ids [B, T] -> BaseModelOutputWithPoolingAndCrossAttentions.

    last_hidden_state [B, T, D]; pooler_output [B, D] (tanh(dense(h[:, 0]))) unless
    add_pooling_layer=False (what NezhaForMaskedLM / TokenClassification / QuestionAnswering build);
    hidden_states: L+1 entries (embeddings, then every layer); attentions [B, H, T, T];
    past_key_values (decoders with use_cache only): per layer (k, v[, cross k, cross v]) [B, H, T, d].
    """
    dtype = p["embeddings.word_embeddings.weight"].dtype
    output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
    output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
    use_cache = (cfg.use_cache if use_cache is None else use_cache) if cfg.is_decoder else False  # NezhaModel.forward
    _check_no_past(past_key_values)
    if cfg.add_cross_attention and not cfg.is_decoder:  # NezhaLayer.__init__ refuses this too
        raise ValueError("add_cross_attention=True needs is_decoder=True (cross-attention belongs to a decoder)")

    inputs.one_of(input_ids, inputs_embeds)
    if input_ids is not None:
        input_ids = inputs.ids(input_ids, vocab_size=cfg.vocab_size)
        x = embedding(input_ids, p["embeddings.word_embeddings.weight"])  # [B, T, D]
    else:
        x = inputs.floats(inputs_embeds, dtype, "inputs_embeds")
        if x.ndim != 3 or x.shape[-1] != cfg.hidden_size or x.shape[1] == 0:
            raise ValueError(f"inputs_embeds must have shape (batch, sequence, {cfg.hidden_size}), got {x.shape}")
    batch, length = x.shape[:2]
    if length > cfg.max_position_embeddings:  # upstream's buffers stop there (positions_encoding, token_type_ids)
        raise ValueError(f"sequence length {length} exceeds max_position_embeddings={cfg.max_position_embeddings} "
                         "of this NEZHA model (upstream cannot run it either)")
    if token_type_ids is None:
        token_type_ids = np.zeros((batch, length), dtype=np.int64)  # NezhaEmbeddings: the all-zero buffer
    token_type_ids = inputs.ids(token_type_ids, "token_type_ids", vocab_size=cfg.type_vocab_size)
    if token_type_ids.shape != (batch, length):
        raise ValueError(f"token_type_ids must have shape {(batch, length)}, got {token_type_ids.shape}")
    x = x + embedding(token_type_ids, p["embeddings.token_type_embeddings.weight"], "token_type_ids")
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)

    if attention_mask is None:
        attention_mask = np.ones((batch, length), dtype=np.int64)
    mask = extended_attention_mask(attention_mask, batch, length, cfg.is_decoder, dtype)
    head_mask = check_head_mask(inputs.floats(head_mask, dtype, "head_mask"), cfg.num_hidden_layers,
                                cfg.num_attention_heads)

    encoder_states = encoder_mask = None
    if cfg.is_decoder and encoder_hidden_states is not None:  # an encoder ignores them, as upstream does
        if not cfg.add_cross_attention:
            raise ValueError("encoder_hidden_states need cross-attention layers: set add_cross_attention=True")
        encoder_states = inputs.floats(encoder_hidden_states, dtype, "encoder_hidden_states")
        if encoder_states.shape != (batch, length, cfg.hidden_size):
            raise NotImplementedError(
                f"encoder_hidden_states must have shape {(batch, length, cfg.hidden_size)} (as many encoder "
                f"positions as decoder tokens), got {encoder_states.shape}: upstream applies the relative "
                "positions to cross-attention too and its reshape fails when the lengths differ")
        if encoder_attention_mask is None:
            encoder_attention_mask = np.ones((batch, length), dtype=np.int64)
        keep = inputs.mask(encoder_attention_mask, (batch, length), "encoder_attention_mask")
        encoder_mask = np.where(keep.astype(bool), dtype.type(0), mask_min(dtype)).astype(dtype)[:, None, None, :]

    head_dim = cfg.hidden_size // cfg.num_attention_heads
    table = relative_position_table(cfg.max_relative_position, head_dim, dtype)  # [2K+1, d], shared by all layers
    act = kernels.fast_activation(cfg.hidden_act, dtype)  # Numba GELU in float32 when installed

    hidden, attentions, cross, cache = [], [], [], []
    for i in range(cfg.num_hidden_layers):
        if output_hidden_states:
            hidden.append(x)
        x, self_probs, cross_probs, present = nezha_layer(
            sub(p, f"encoder.layer.{i}"), x, cfg, mask, table, act,
            head_mask=None if head_mask is None else head_mask[i],
            encoder_states=encoder_states, encoder_mask=encoder_mask, output_probs=bool(output_attentions))
        if use_cache:
            cache.append(present)
        if output_attentions:
            attentions.append(self_probs)
            if cfg.add_cross_attention:
                # NezhaEncoder appends layer_outputs[2]: without encoder states that slot holds the layer's
                # (k, v) cache, so upstream reports it as the "cross attention" (quirk, reproduced)
                cross.append(cross_probs if encoder_states is not None else present)
    if output_hidden_states:
        hidden.append(x)

    pooled = None
    if add_pooling_layer:
        if "pooler.dense.weight" not in p:
            raise ValueError("these parameters have no pooler (a NezhaForMaskedLM / TokenClassification / "
                             "QuestionAnswering checkpoint): pass add_pooling_layer=False")
        pooled = np.tanh(linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]))  # [B, D]
    return BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=x, pooler_output=pooled, hidden_states=tuple(hidden) if output_hidden_states else None,
        past_key_values=tuple(cache) if use_cache else None,
        attentions=tuple(attentions) if output_attentions else None,
        cross_attentions=tuple(cross) if output_attentions and cfg.add_cross_attention else None)


# ---------------------------------------------------------------- heads


def _base(p, cfg, pooled, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
          output_attentions, output_hidden_states, **extra):
    """The heads' call of NezhaModel (no cache: the heads return none)."""
    return nezha_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                       use_cache=False, output_attentions=output_attentions,
                       output_hidden_states=output_hidden_states, add_pooling_layer=pooled, **extra)


def mlm_logits(p, cfg, h):  # NezhaLMPredictionHead: h [B, T, D] -> [B, T, V]
    h = activation(cfg.hidden_act)(linear(h, p["cls.predictions.transform.dense.weight"],
                                          p["cls.predictions.transform.dense.bias"]))
    h = layer_norm(h, p["cls.predictions.transform.LayerNorm.weight"], p["cls.predictions.transform.LayerNorm.bias"],
                   cfg.layer_norm_eps)
    return linear(h, p["cls.predictions.decoder.weight"], p["cls.predictions.bias"])  # decoder.bias is this bias


def nsp_logits(p, pooled):  # NezhaOnlyNSPHead: pooled [B, D] -> [B, 2]
    return linear(pooled, p["cls.seq_relationship.weight"], p["cls.seq_relationship.bias"])


def _labels(labels, name="labels"):
    return inputs.ids(labels, name, ndim=np.ndim(labels))


def nezha_for_pre_training(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                           inputs_embeds=None, labels=None, next_sentence_label=None, output_attentions=None,
                           output_hidden_states=None):
    """NezhaForPreTraining. prediction_logits [B, T, V], seq_relationship_logits [B, 2]; loss = MLM CE
    (-100 ignored) + NSP CE, only when both labels and next_sentence_label are given (as upstream)."""
    out = _base(p, cfg, True, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    prediction = mlm_logits(p, cfg, out.last_hidden_state)  # [B, T, V]
    relationship = nsp_logits(p, out.pooler_output)  # [B, 2]
    loss = None
    if labels is not None and next_sentence_label is not None:
        loss = (cross_entropy(prediction.reshape(-1, cfg.vocab_size), _labels(labels).reshape(-1))
                + cross_entropy(relationship, _labels(next_sentence_label, "next_sentence_label").reshape(-1)))
    return NezhaForPreTrainingOutput(loss=loss, prediction_logits=prediction, seq_relationship_logits=relationship,
                                     hidden_states=out.hidden_states, attentions=out.attentions)


def nezha_for_masked_lm(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                        inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                        output_attentions=None, output_hidden_states=None):
    """NezhaForMaskedLM (no pooler). logits [B, T, V]; loss: CE over labels, -100 ignored."""
    out = _base(p, cfg, False, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states, encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask)
    logits = mlm_logits(p, cfg, out.last_hidden_state)
    loss = None if labels is None else cross_entropy(logits.reshape(-1, cfg.vocab_size), _labels(labels).reshape(-1))
    return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


def nezha_for_next_sentence_prediction(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None,
                                       head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                                       output_hidden_states=None, next_sentence_label=None):
    """NezhaForNextSentencePrediction. logits [B, 2]; `next_sentence_label` is upstream's deprecated name of labels."""
    if labels is None:
        labels = next_sentence_label
    out = _base(p, cfg, True, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = nsp_logits(p, out.pooler_output)
    loss = None if labels is None else cross_entropy(logits, _labels(labels).reshape(-1))
    return NextSentencePredictorOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                       attentions=out.attentions)


def nezha_for_sequence_classification(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None,
                                      head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                                      output_hidden_states=None):
    """NezhaForSequenceClassification: classifier on the pooler. logits [B, num_labels]; loss by problem_type."""
    out = _base(p, cfg, True, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = linear(out.pooler_output, p["classifier.weight"], p["classifier.bias"])  # [B, C]
    loss = None
    if labels is not None:
        loss, _ = classification_loss(logits, labels, cfg.num_labels, cfg.problem_type)
    return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                    attentions=out.attentions)


def nezha_for_multiple_choice(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                              inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None):
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
    scores = linear(out.pooler_output, p["classifier.weight"], p["classifier.bias"])  # [B*C, 1]
    logits = scores.reshape(-1, num_choices)  # [B, C]
    loss = None if labels is None else cross_entropy(logits, _labels(labels).reshape(-1))
    return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


def nezha_for_token_classification(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None,
                                   head_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                                   output_hidden_states=None):
    """NezhaForTokenClassification (no pooler). logits [B, T, num_labels]; loss: CE, -100 ignored."""
    out = _base(p, cfg, False, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = linear(out.last_hidden_state, p["classifier.weight"], p["classifier.bias"])  # [B, T, C]
    loss = None
    if labels is not None:
        loss = cross_entropy(logits.reshape(-1, cfg.num_labels), _labels(labels).reshape(-1))
    return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                 attentions=out.attentions)


def nezha_for_question_answering(p, cfg, input_ids=None, attention_mask=None, token_type_ids=None, head_mask=None,
                                 inputs_embeds=None, start_positions=None, end_positions=None,
                                 output_attentions=None, output_hidden_states=None):
    """NezhaForQuestionAnswering (no pooler). start/end logits [B, T]; loss: span_loss."""
    if cfg.num_labels != 2:  # qa_outputs has num_labels outputs; upstream's split(1) unpacks exactly two
        raise ValueError(f"NezhaForQuestionAnswering needs num_labels=2 (start, end), the config has {cfg.num_labels}")
    out = _base(p, cfg, False, input_ids, attention_mask, token_type_ids, head_mask, inputs_embeds,
                output_attentions, output_hidden_states)
    logits = linear(out.last_hidden_state, p["qa_outputs.weight"], p["qa_outputs.bias"])  # [B, T, 2]
    start_logits = np.ascontiguousarray(logits[..., 0])  # [B, T]
    end_logits = np.ascontiguousarray(logits[..., 1])
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = span_loss(start_logits, end_logits, start_positions, end_positions)
    return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                        hidden_states=out.hidden_states, attentions=out.attentions)


ARCHITECTURES = {
    "NezhaModel": nezha_model,
    "NezhaForPreTraining": nezha_for_pre_training,
    "NezhaForMaskedLM": nezha_for_masked_lm,
    "NezhaForNextSentencePrediction": nezha_for_next_sentence_prediction,
    "NezhaForSequenceClassification": nezha_for_sequence_classification,
    "NezhaForMultipleChoice": nezha_for_multiple_choice,
    "NezhaForTokenClassification": nezha_for_token_classification,
    "NezhaForQuestionAnswering": nezha_for_question_answering,
}
