"""OPT (transformers 4.37.2 `modeling_opt.py`): a decoder-only transformer with learned positions.

    ids -> embed_tokens [-> project_in] + embed_positions(mask) -> N x decoder layer
        -> [final_layer_norm] [-> project_out] -> heads (lm_head / score / qa_outputs)

Parameter names are upstream's state-dict names. The base model (`OPTModel`) owns `decoder.*`;
heads keep it under `model.` and add their own weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import inputs
from ..config import BaseConfig, check_heads
from ..family import FamilySpec, Generation, refuse_pruned_heads
from ..layers import check_head_mask, decoder_layer, dense, layer_row, norm, packed_rows, run_stack, sub
from ..ops import activation, causal_padding_mask, classification_loss, cross_entropy, span_loss
from ..outputs import (BaseModelOutputWithPast, CausalLMOutputWithPast, QuestionAnsweringModelOutput,
                       SequenceClassifierOutputWithPast, returned, with_loss)
from ..trace import record

BASE_PREFIX = "model"  # OPTPreTrainedModel.base_model_prefix
POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding: "if padding_idx is specified then offset the embedding ids by 2"


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class OPTConfig(BaseConfig):
    """configuration_opt.py OPTConfig."""

    model_type: str = "opt"
    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 2048
    do_layer_norm_before: bool = True
    _remove_final_layer_norm: bool = False
    word_embed_proj_dim: Optional[int] = None  # None -> hidden_size (set in __post_init__, as upstream)
    num_attention_heads: int = 12
    activation_function: str = "relu"
    enable_bias: bool = True
    layer_norm_elementwise_affine: bool = True
    pad_token_id: Optional[int] = 1
    bos_token_id: Optional[int] = 2
    eos_token_id: Optional[int] = 2

    def __post_init__(self):
        if self.word_embed_proj_dim is None:
            object.__setattr__(self, "word_embed_proj_dim", self.hidden_size)
        check_heads(self.hidden_size, self.num_attention_heads)
        refuse_pruned_heads(self, "OPTModel")


# ---------------------------------------------------------------- parameters


def param_shapes(cfg, architecture):  # -> {name: shape} of every weight the architecture uses
    D, E, F, V = cfg.hidden_size, cfg.word_embed_proj_dim, cfg.ffn_dim, cfg.vocab_size
    shapes = {"decoder.embed_tokens.weight": (V, E),
              "decoder.embed_positions.weight": (cfg.max_position_embeddings + POSITION_OFFSET, D)}
    if E != D:
        shapes["decoder.project_in.weight"] = (D, E)
        shapes["decoder.project_out.weight"] = (E, D)
    if _has_final_norm(cfg) and cfg.layer_norm_elementwise_affine:
        shapes.update({"decoder.final_layer_norm.weight": (D,), "decoder.final_layer_norm.bias": (D,)})
    for i in range(cfg.num_hidden_layers):
        layer = f"decoder.layers.{i}."
        linears = {"self_attn.q_proj": (D, D), "self_attn.k_proj": (D, D), "self_attn.v_proj": (D, D),
                   "self_attn.out_proj": (D, D), "fc1": (F, D), "fc2": (D, F)}
        for name, shape in linears.items():
            shapes[layer + name + ".weight"] = shape
            if cfg.enable_bias:
                shapes[layer + name + ".bias"] = shape[:1]
        if cfg.layer_norm_elementwise_affine:
            for name in ("self_attn_layer_norm", "final_layer_norm"):
                shapes[layer + name + ".weight"] = (D,)
                shapes[layer + name + ".bias"] = (D,)
    if architecture == "OPTModel":
        return shapes
    shapes = {f"{BASE_PREFIX}.{k}": v for k, v in shapes.items()}
    shapes.update(HEAD_SHAPES[architecture](cfg))
    return shapes


HEAD_SHAPES = {
    "OPTForCausalLM": lambda cfg: {"lm_head.weight": (cfg.vocab_size, cfg.word_embed_proj_dim)},
    "OPTForSequenceClassification": lambda cfg: {"score.weight": (cfg.num_labels, cfg.word_embed_proj_dim)},
    "OPTForQuestionAnswering": lambda cfg: {"qa_outputs.weight": (2, cfg.word_embed_proj_dim), "qa_outputs.bias": (2,)},
}


def _has_final_norm(cfg):  # OPTDecoder.__init__: only pre-LN models end with a LayerNorm
    return cfg.do_layer_norm_before and not cfg._remove_final_layer_norm


# ---------------------------------------------------------------- base model


def positions_from_mask(attention_mask, past_length):  # [B, S] 0/1 -> [B, S - past] row indices
    """OPTLearnedPositionalEmbedding.forward: cumsum(mask) * mask - 1, cut to the new tokens, + offset 2.

    Padding reads row 1 (position -1 + 2); the first real token of every row reads row 2.
    """
    positions = np.cumsum(attention_mask, axis=1) * attention_mask - 1  # [B, S]
    return positions[:, past_length:] + POSITION_OFFSET


def opt_embeddings(p, cfg, tokens, attention_mask, past_length):  # tokens [B, T, E] -> x [B, T, D]
    """OPTDecoder.forward up to the layers: token embeddings [-> project_in] + embed_positions(mask)."""
    positions = positions_from_mask(attention_mask, past_length)  # [B, T]
    table = p["decoder.embed_positions.weight"]
    if positions.max() >= table.shape[0]:
        raise ValueError(f"{int(attention_mask.sum(1).max())} attended tokens exceed max_position_embeddings="
                         f"{cfg.max_position_embeddings} of this OPT model")
    pos_embeds = record(p, "decoder.embed_positions", table[positions])  # [B, T, D]
    if "decoder.project_in.weight" in p:
        tokens = dense(p, "decoder.project_in", tokens)  # [B, T, D]
    return tokens + pos_embeds  # [B, T, D]


def opt_model(p, cfg, input_ids=None, attention_mask=None, head_mask=None, past_key_values=None,
              inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
              *, skip_padding=False):
    """OPTModel.forward: the decoder (the heads call opt_decoder itself, as upstream's do).
    skip_padding: refimpl's own (refimpl.layers.packed_rows)."""
    out = opt_decoder(p, cfg, input_ids, attention_mask, head_mask, past_key_values, inputs_embeds, use_cache,
                      output_attentions, output_hidden_states, skip_padding=skip_padding)
    record(p, "", out.last_hidden_state)  # the OPTModel module (the root, or `model` under a head)
    return returned(cfg, return_dict, out)


def opt_decoder(p, cfg, input_ids=None, attention_mask=None, head_mask=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None, *,
                skip_padding=False):
    """OPTDecoder.forward. input_ids [B, T] -> BaseModelOutputWithPast. p: OPTModel's parameters.

    last_hidden_state [B, T, word_embed_proj_dim]; past_key_values: per layer (k, v) [B, H, S, d];
    hidden_states: L+1 entries (the last after final norm / project_out); attentions [B, H, T, S].
    """
    dtype = p["decoder.embed_tokens.weight"].dtype
    flags = inputs.output_flags(cfg, use_cache, output_attentions, output_hidden_states)
    _, tokens = inputs.embed(input_ids, inputs_embeds, p["decoder.embed_tokens.weight"])  # [B, T, E]
    if input_ids is not None:
        record(p, "decoder.embed_tokens", tokens)
    batch, length = tokens.shape[:2]
    past_length = inputs.past_length(past_key_values, cfg.num_hidden_layers, batch, cfg.num_attention_heads,
                                      cfg.hidden_size // cfg.num_attention_heads)
    attention_mask = inputs.causal_lm_mask(attention_mask, batch, past_length, length)  # [B, S]
    head_mask = check_head_mask(inputs.floats(head_mask, dtype, "head_mask"), cfg.num_hidden_layers, cfg.num_attention_heads)

    x = opt_embeddings(p, cfg, tokens, attention_mask, past_length)  # [B, T, D]
    mask = causal_padding_mask(attention_mask, length, dtype)  # [B, 1, T, S]
    act = activation(cfg.activation_function)
    rows = packed_rows(skip_padding, attention_mask, flags, past_length)
    if rows is not None:
        x = rows.pack(x)  # [N, D]: the real positions only

    def layer(i, x):  # OPTDecoderLayer (its feed-forward on [B*T, D] rows); OPTAttention clamps scores
        return decoder_layer(sub(p, f"decoder.layers.{i}"), x, cfg.num_attention_heads, act, mask,
                             norm_first=cfg.do_layer_norm_before, past=layer_row(past_key_values, i),
                             head_mask=layer_row(head_mask, i), clamp_to_min=True, ffn_on_rows=True,
                             output_probs=flags.attentions, rows=rows)

    stack = run_stack(cfg.num_hidden_layers, x, layer, flags, p, "decoder.layers")
    x = stack.last_hidden_state
    if _has_final_norm(cfg):
        x = norm(p, "decoder.final_layer_norm", x)
    if "decoder.project_out.weight" in p:
        x = dense(p, "decoder.project_out", x)  # [B, T, E]
    if rows is not None:
        x = rows.unpack(x)  # [B, T, E], 0.0 at padding
    record(p, "decoder", x)
    return BaseModelOutputWithPast(last_hidden_state=x, past_key_values=stack.past_key_values,
                                   hidden_states=stack.with_final(x), attentions=stack.attentions)


# ---------------------------------------------------------------- heads


def opt_for_causal_lm(p, cfg, input_ids=None, attention_mask=None, head_mask=None, past_key_values=None,
                      inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                      output_hidden_states=None, return_dict=None):
    """OPTForCausalLM. -> CausalLMOutputWithPast; logits [B, T, V]; loss: next-token CE, -100 ignored."""
    out = opt_decoder(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, head_mask, past_key_values,
                      inputs_embeds, use_cache, output_attentions, output_hidden_states)  # as upstream: model.decoder
    logits = dense(p, "lm_head", out.last_hidden_state)  # [B, T, V]
    loss = None
    if labels is not None:
        labels = inputs.ids(labels, "labels")
        loss = cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    return returned(cfg, return_dict, CausalLMOutputWithPast(
        loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states,
        attentions=out.attentions))


def last_token_index(input_ids, pad_token_id, length):  # [B, T] -> [B]
    """OPTForSequenceClassification pooling: (argmax(ids == pad) - 1) mod T.

    Upstream quirk, reproduced: right for right padding; for left padding (or no pad at all) the
    argmax is 0 and -1 mod T picks the last position; a pad id inside the text cuts the row short.
    """
    if input_ids is None or pad_token_id is None:  # inputs_embeds: upstream takes the last position
        return None
    return (np.argmax(input_ids == pad_token_id, axis=-1) - 1) % length


def opt_for_sequence_classification(p, cfg, input_ids=None, attention_mask=None, head_mask=None,
                                    past_key_values=None, inputs_embeds=None, labels=None, use_cache=None,
                                    output_attentions=None, output_hidden_states=None, return_dict=None):
    """OPTForSequenceClassification. -> SequenceClassifierOutputWithPast; logits [B, num_labels]."""
    out = opt_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, head_mask, past_key_values,
                    inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
    logits = dense(p, "score", out.last_hidden_state)  # [B, T, C]
    batch, length = logits.shape[:2]
    index = last_token_index(None if input_ids is None else np.asarray(input_ids), cfg.pad_token_id, length)
    pooled = logits[np.arange(batch), -1 if index is None else index]  # [B, C]
    loss = None
    if labels is not None:
        loss, _ = classification_loss(pooled, labels, cfg.num_labels, cfg.problem_type)
    return returned(cfg, return_dict, SequenceClassifierOutputWithPast(
        loss=loss, logits=pooled, past_key_values=out.past_key_values, hidden_states=out.hidden_states,
        attentions=out.attentions))


def opt_for_question_answering(p, cfg, input_ids=None, attention_mask=None, head_mask=None,
                               past_key_values=None, inputs_embeds=None, start_positions=None,
                               end_positions=None, use_cache=None, output_attentions=None,
                               output_hidden_states=None, return_dict=None):
    """OPTForQuestionAnswering. -> QuestionAnsweringModelOutput; start/end logits [B, T].

    return_dict=False: upstream's `(start, end) + OPTModel's tuple[2:]`, which skips the cache slot, i.e.
    without a cache (use_cache=False) it drops the first of hidden_states / attentions (quirk, reproduced).
    """
    out = opt_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, head_mask, past_key_values,
                    inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True)
    logits = dense(p, "qa_outputs", out.last_hidden_state)  # [B, T, 2]
    start_logits, end_logits = np.ascontiguousarray(logits[..., 0]), np.ascontiguousarray(logits[..., 1])  # [B, T]
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = span_loss(start_logits, end_logits, start_positions, end_positions)
    output = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                          hidden_states=out.hidden_states, attentions=out.attentions)
    return returned(cfg, return_dict, output, lambda: with_loss(loss, (start_logits, end_logits) + out.to_tuple()[2:]))


# ---------------------------------------------------------------- generation


def prepare_inputs_for_generation(input_ids, past_key_values=None, attention_mask=None, use_cache=None,
                                  **_model_kwargs):  # input_ids [B, S] -> the next forward call's keyword arguments
    """OPTForCausalLM.prepare_inputs_for_generation: with a cache, only the tokens it has not seen."""
    if past_key_values is not None:
        past_length = past_key_values[0][0].shape[2]
        input_ids = input_ids[:, past_length:] if input_ids.shape[1] > past_length else input_ids[:, -1:]
    return {"input_ids": input_ids, "past_key_values": past_key_values, "attention_mask": attention_mask,
            "use_cache": use_cache}


SPEC = FamilySpec(
    model_type="opt", config=OPTConfig, base_model="OPTModel", base_prefix=BASE_PREFIX,
    architectures={
        "OPTModel": opt_model,
        "OPTForCausalLM": opt_for_causal_lm,
        "OPTForSequenceClassification": opt_for_sequence_classification,
        "OPTForQuestionAnswering": opt_for_question_answering,
    },
    param_shapes=param_shapes,
    tied={"lm_head.weight": f"{BASE_PREFIX}.decoder.embed_tokens.weight"},  # OPTForCausalLM._tied_weights_keys
    causal_lm={"OPTForCausalLM": "lm_head.weight"},
    sequence_classifiers=("OPTForSequenceClassification",),
    generation=Generation(prepare_inputs=prepare_inputs_for_generation),
    generates=("OPTForCausalLM",),
)
