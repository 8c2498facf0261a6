"""LED, the Longformer-Encoder-Decoder (transformers 4.37.2 `modeling_led.py`).

    encoder: ids -> shared + embed_positions (no offset) -> layernorm_embedding
             -> pad to a multiple of max(attention_window)
             -> N x [Longformer self-attention (local band + global tokens) -> post-LN -> FFN -> post-LN]
             -> cut the padding off again
    decoder: BART-style (post-LN, layernorm_embedding, learned positions from 0), cross-attention
             to the encoder states -> heads (lm_head + final_logits_bias / classification_head / qa_outputs)

The encoder self-attention (projections, local band, global tokens) is `refimpl.longformer`, which
calls the banded core of `refimpl.banded_attention`; this module does what LEDEncoder does around
it: the merged 0/1/2 mask, padding to a multiple of the window and cutting back, upstream's output
layouts. Both stacks run through `layers.run_stack`; the decoder's layer is `layers.decoder_layer` (the
same code as OPT and XGLM).

Parameter names are upstream's: the base model (`LEDModel`) owns `shared.*`, `encoder.*`,
`decoder.*`; heads keep it under `led.` and add their own weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from .. import inputs
from ..config import FairseqConfig, check_heads, in_islands
from ..family import FamilySpec, Generation, refuse_pruned_heads
from ..layers import (LayerOutput, check_head_mask, decoder_layer, dense, feed_forward, layer_row, norm, run_stack,
                      sub)
from ..longformer import longformer_self_attention
from ..ops import activation, classification_loss, cross_entropy, mask_min, padding_mask, span_loss
from ..outputs import Array, BaseModelOutputWithPastAndCrossAttentions, ModelOutput, output_class, returned, with_loss
from ..trace import active as trace_active, record

BASE_PREFIX = "led"  # LEDPreTrainedModel.base_model_prefix
GLOBAL_PROJECTIONS = ("query_global", "key_global", "value_global")
LOCAL_PROJECTIONS = ("query", "key", "value")


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class LEDConfig(FairseqConfig):
    """configuration_led.py LEDConfig."""

    attribute_map = {"num_attention_heads": "encoder_attention_heads", "hidden_size": "d_model"}
    model_type: str = "led"
    vocab_size: int = 50265
    max_encoder_position_embeddings: int = 16384
    max_decoder_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    is_encoder_decoder: bool = True
    activation_function: str = "gelu"
    d_model: int = 1024
    attention_window: Union[list, int] = 512

    def __post_init__(self):
        check_heads(self.d_model, self.encoder_attention_heads)
        check_heads(self.d_model, self.decoder_attention_heads)
        refuse_pruned_heads(self, "LEDModel")


# ---------------------------------------------------------------- outputs (modeling_led.py, same field order)


@dataclass
class LEDEncoderBaseModelOutput(ModelOutput):
    last_hidden_state: Array = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    global_attentions: Optional[tuple] = None


# the fields every LED seq2seq output ends with, in upstream's order
SEQ2SEQ_FIELDS = ("past_key_values", "decoder_hidden_states", "decoder_attentions", "cross_attentions",
                  "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions",
                  "encoder_global_attentions")
LEDSeq2SeqModelOutput = output_class("LEDSeq2SeqModelOutput", "last_hidden_state", *SEQ2SEQ_FIELDS)
LEDSeq2SeqLMOutput = output_class("LEDSeq2SeqLMOutput", "loss", "logits", *SEQ2SEQ_FIELDS)
LEDSeq2SeqSequenceClassifierOutput = output_class(  # logits [B, num_labels]
    "LEDSeq2SeqSequenceClassifierOutput", "loss", "logits", *SEQ2SEQ_FIELDS)
LEDSeq2SeqQuestionAnsweringModelOutput = output_class(
    "LEDSeq2SeqQuestionAnsweringModelOutput", "loss", "start_logits", "end_logits", *SEQ2SEQ_FIELDS)


# ---------------------------------------------------------------- parameters


def param_shapes(cfg, architecture):  # -> {name: shape} of every weight the architecture uses
    D, V = cfg.d_model, cfg.vocab_size
    shapes = {"shared.weight": (V, D),
              "encoder.embed_positions.weight": (cfg.max_encoder_position_embeddings, D),
              "decoder.embed_positions.weight": (cfg.max_decoder_position_embeddings, D)}
    for part in ("encoder", "decoder"):
        shapes[f"{part}.layernorm_embedding.weight"] = (D,)
        shapes[f"{part}.layernorm_embedding.bias"] = (D,)
    attention = "self_attn.longformer_self_attn."
    for i in range(cfg.encoder_layers):
        linears = {attention + name: (D, D) for name in LOCAL_PROJECTIONS + GLOBAL_PROJECTIONS}
        linears.update({"self_attn.output": (D, D), "fc1": (cfg.encoder_ffn_dim, D), "fc2": (D, cfg.encoder_ffn_dim)})
        _add_layer(shapes, f"encoder.layers.{i}.", linears, ("self_attn_layer_norm", "final_layer_norm"), D)
    for i in range(cfg.decoder_layers):
        linears = {f"{block}.{name}": (D, D) for block in ("self_attn", "encoder_attn")
                   for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
        linears.update({"fc1": (cfg.decoder_ffn_dim, D), "fc2": (D, cfg.decoder_ffn_dim)})
        _add_layer(shapes, f"decoder.layers.{i}.", linears,
                   ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"), D)
    if architecture == "LEDModel":
        return shapes
    shapes = {f"{BASE_PREFIX}.{k}": v for k, v in shapes.items()}
    shapes.update(HEAD_SHAPES[architecture](cfg))
    return shapes


def _add_layer(shapes, prefix, linears, norms, D):
    for name, shape in linears.items():  # every LED linear has a bias
        shapes[prefix + name + ".weight"] = shape
        shapes[prefix + name + ".bias"] = shape[:1]
    for name in norms:
        shapes[prefix + name + ".weight"] = (D,)
        shapes[prefix + name + ".bias"] = (D,)


HEAD_SHAPES = {
    "LEDForConditionalGeneration": lambda cfg: {"lm_head.weight": (cfg.vocab_size, cfg.d_model),
                                                "final_logits_bias": (1, cfg.vocab_size)},
    "LEDForSequenceClassification": lambda cfg: {
        "classification_head.dense.weight": (cfg.d_model, cfg.d_model), "classification_head.dense.bias": (cfg.d_model,),
        "classification_head.out_proj.weight": (cfg.num_labels, cfg.d_model),
        "classification_head.out_proj.bias": (cfg.num_labels,)},
    # LEDForQuestionAnswering.__init__ sets config.num_labels = 2
    "LEDForQuestionAnswering": lambda cfg: {"qa_outputs.weight": (2, cfg.d_model), "qa_outputs.bias": (2,)},
}
# _tied_weights_keys: encoder/decoder embed_tokens and lm_head are led.shared; save_pretrained keeps one copy.
TIED = {"lm_head.weight": f"{BASE_PREFIX}.shared.weight",
        "shared.weight": "encoder.embed_tokens.weight",
        f"{BASE_PREFIX}.shared.weight": f"{BASE_PREFIX}.encoder.embed_tokens.weight"}
IGNORED_BUFFERS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")  # copies of shared.weight
# LEDForConditionalGeneration._keys_to_ignore_on_load_missing: a file without it gets zeros
MISSING_DEFAULTS = {"final_logits_bias": np.zeros}


def layer_windows(cfg):  # -> [attention_window of layer i] (LEDEncoder.__init__, LEDEncoderSelfAttention.__init__)
    windows = cfg.attention_window
    if isinstance(windows, int):
        windows = [windows] * cfg.encoder_layers
    windows = list(windows)
    if len(windows) != cfg.encoder_layers:
        raise ValueError(f"attention_window must hold one value per encoder layer ({cfg.encoder_layers}), "
                         f"got {len(windows)}: {windows}")
    for i, w in enumerate(windows):
        if int(w) != w or w <= 0 or w % 2:
            raise ValueError(f"attention_window for layer {i} must be a positive even integer "
                             f"(window/2 keys on each side), got {w}")
    return [int(w) for w in windows]


# ---------------------------------------------------------------- encoder: Longformer self-attention


def encoder_layer(p, x, window, num_heads, act, is_masked, is_global, any_global, head_mask=None,
                  output_attentions=False, backend=None, islands_cpu=None):  # x [B, T, D] -> LayerOutput
    """LEDEncoderLayer: post-LN, x = LN(x + attn(x)); x = LN(x + ffn(x)) (the latter by blocks of rows).

    attn = LEDEncoderAttention: the Longformer self-attention, then the `self_attn.output` linear.
    """
    context, probs, global_probs = longformer_self_attention(
        sub(p, "self_attn.longformer_self_attn"), x, window, num_heads, is_masked, is_global, any_global,
        head_mask, output_attentions, backend, islands_cpu)
    attn = record(p, "self_attn", dense(p, "self_attn.output", context))  # LEDEncoderAttention: [B, T, D]
    x = norm(p, "self_attn_layer_norm", x + attn)
    x = feed_forward_sublayer_by_rows(p, x, act)  # LN(x + ffn(x))
    return LayerOutput(x, attention=probs, global_attention=global_probs)


FFN_ROWS = 1024  # rows per block: the [rows, ffn] intermediate stays small (16k tokens x 3072 would be 200 MB)


def feed_forward_sublayer_by_rows(p, x, act, rows=FFN_ROWS):  # x [B, T, D] -> [B, T, D]
    """final_layer_norm(x + fc2(act(fc1(x)))) over blocks of rows: the same numbers (every row is
    independent), a bounded intermediate, and element-wise work on cache-sized blocks. While tracing, in
    one piece, so that fc1, activation_fn, fc2 and final_layer_norm are traced whole, [B, T, *]."""
    if trace_active():
        return norm(p, "final_layer_norm", x + feed_forward(p, x, act))
    flat = x.reshape(-1, x.shape[-1])  # [B*T, D]
    out = np.empty_like(flat)
    for start in range(0, flat.shape[0], rows):
        block = flat[start:start + rows]
        out[start:start + rows] = norm(p, "final_layer_norm", block + feed_forward(p, block, act))
    return out.reshape(x.shape)


def merged_mask(attention_mask, global_attention_mask):  # [B, T] x2 -> [B, T] of 0 / 1 / 2
    """LEDEncoder._merge_to_attention_mask: 0 padding, 1 local, 2 global; a global flag on padding is dropped."""
    return attention_mask * (global_attention_mask + 1)


def encoder_mask(attention_mask, global_attention_mask, batch, length):  # -> [B, T] of 0 / 1 / 2
    """LEDEncoder.forward: the caller's masks (default all ones, no global) merged to 0 padding / 1 local /
    2 global (`_merge_to_attention_mask`)."""
    mask = np.ones((batch, length), np.int64)
    if attention_mask is not None:
        mask = inputs.mask(attention_mask, (batch, length), "attention_mask")
    if global_attention_mask is not None:
        mask = merged_mask(mask, inputs.mask(global_attention_mask, (batch, length), "global_attention_mask"))
    return mask


def pad_to_window_size(p, cfg, x, mask, windows):  # x [B, T, D], mask [B, T] -> padded to [B, T_padded(, D)]
    """LEDEncoder._pad_to_window_size: on the right to a multiple of the largest window; the padding is the
    pad token's embedding with mask 0."""
    batch, length = mask.shape
    pad = (-length) % max(windows)
    if pad:  # upstream embeds the pad ids with embed_tokens (led.shared): traced when that is its first call
        padding = record(p, "shared", np.broadcast_to(p["shared.weight"][cfg.pad_token_id], (batch, pad, cfg.d_model)))
        x = np.concatenate([x, padding], axis=1)  # [B, T_padded, D]
        mask = np.concatenate([mask, np.zeros((batch, pad), mask.dtype)], axis=1)  # [B, T_padded]
    for i, w in enumerate(windows):
        if (length + pad) % w:  # upstream: AssertionError "Sequence length should be multiple of ..."
            raise ValueError(f"the input is padded to {length + pad} tokens (a multiple of the largest "
                             f"attention_window {max(windows)}), which is not a multiple of layer {i}'s window {w}; "
                             "upstream fails the same way: every layer's window must divide the largest one")
    return x, mask


def led_encoder(p, cfg, input_ids=None, attention_mask=None, global_attention_mask=None, head_mask=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None, backend=None):
    """LEDEncoder.forward. input_ids [B, T] -> LEDEncoderBaseModelOutput.

    p: the base model's parameters (`shared.weight`, `encoder.*`). last_hidden_state [B, T, D];
    hidden_states L+1 x [B, T, D]; attentions L x [B, H, T, X + window_i + 1]; global_attentions
    L x [B, H, T_padded, X] (upstream does not cut these back), only when some token is global.
    backend: the banded attention's (refimpl.accel's policy when None).
    """
    dtype = p["shared.weight"].dtype
    flags = inputs.output_flags(cfg, False, output_attentions, output_hidden_states)
    windows = layer_windows(cfg)
    input_ids, x = inputs.embed(input_ids, inputs_embeds, p["shared.weight"])  # [B, T, D]
    if input_ids is not None:
        record(p, "shared", x)  # encoder.embed_tokens is led.shared
    batch, length = x.shape[:2]
    mask = encoder_mask(attention_mask, global_attention_mask, batch, length)  # [B, T]
    head_mask = check_head_mask(inputs.floats(head_mask, dtype, "head_mask"), cfg.encoder_layers,
                                cfg.encoder_attention_heads)

    x, mask = pad_to_window_size(p, cfg, x, mask, windows)  # [B, T_padded, D], [B, T_padded]
    padded = mask.shape[1]
    table = p["encoder.embed_positions.weight"]
    if padded > table.shape[0]:
        raise ValueError(f"{length} tokens (padded to {padded}) exceed max_encoder_position_embeddings={table.shape[0]}")
    x = norm(p, "encoder.layernorm_embedding", x + record(p, "encoder.embed_positions", table[:padded]))  # [B, T_pad, D]
    is_masked, is_global = mask == 0, mask > 1  # [B, T_padded] each
    any_global = bool(is_global.any())  # upstream decides once per batch whether global attention runs
    act = activation(cfg.activation_function)
    islands_cpu = cfg.islands_cpu if in_islands(cfg, dtype) else None  # upstream's float32 softmax island

    def layer(i, x):
        return encoder_layer(sub(p, f"encoder.layers.{i}"), x, windows[i], cfg.encoder_attention_heads, act,
                             is_masked, is_global, any_global, layer_row(head_mask, i), flags.attentions, backend,
                             islands_cpu)

    stack = run_stack(cfg.encoder_layers, x, layer, flags, p, "encoder.layers")
    # LEDEncoder.forward: cut the padding off again, except from the global attentions
    hidden = stack.with_final(stack.last_hidden_state)
    return LEDEncoderBaseModelOutput(
        last_hidden_state=record(p, "encoder", stack.last_hidden_state[:, :length]),
        hidden_states=None if hidden is None else tuple(h[:, :length] for h in hidden),
        attentions=None if stack.attentions is None else tuple(a[:, :, :length] for a in stack.attentions),
        global_attentions=None if stack.global_attentions is None else tuple(  # [B, H, X, T_padded] -> [B, H, T_padded, X]
            g.transpose(0, 1, 3, 2) for g in stack.global_attentions))


# ---------------------------------------------------------------- decoder


def shift_tokens_right(ids, pad_token_id, decoder_start_token_id):  # [B, T] -> [B, T]
    """modeling_led.py shift_tokens_right: start token first, the rest moved right, -100 -> pad."""
    if pad_token_id is None:
        raise ValueError("config.pad_token_id has to be defined to shift tokens right")
    ids = np.asarray(ids)
    shifted = np.zeros_like(ids)
    shifted[:, 1:] = ids[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    shifted[shifted == -100] = pad_token_id
    return shifted


def decoder_self_mask(attention_mask, length, past_length, dtype):  # -> [B or 1, 1, T, past + T] additive, or None
    """LEDDecoder.forward's combined mask. No mask at all for a single new token (the decoder
    attention_mask is then ignored). Otherwise causal (finfo.min above the diagonal) PLUS the padding
    mask (finfo.min on padded keys): a padded key above the diagonal gets min + min = -inf."""
    if length <= 1:
        return None
    source = past_length + length
    causal = np.arange(source)[None, :] > (past_length + np.arange(length))[:, None]  # [T, S]
    mask = np.where(causal, mask_min(dtype), dtype.type(0)).astype(dtype)[None, None]  # [1, 1, T, S]
    if attention_mask is not None:
        with np.errstate(over="ignore"):
            mask = mask + padding_mask(attention_mask, dtype)  # [B, 1, T, S]
    return mask


def led_decoder(p, cfg, input_ids=None, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, head_mask=None, cross_attn_head_mask=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None):
    """LEDDecoder.forward. input_ids [B, T] -> BaseModelOutputWithPastAndCrossAttentions.

    p: the base model's parameters (`shared.weight`, `decoder.*`); past_key_values per layer
    (k, v, cross_k, cross_v) [B, H, S, d].
    """
    dtype = p["shared.weight"].dtype
    flags = inputs.output_flags(cfg, use_cache, output_attentions, output_hidden_states)
    input_ids, x = inputs.embed(input_ids, inputs_embeds, p["shared.weight"], "decoder_input_ids",
                                "decoder_inputs_embeds")  # [B, T, D]; no embedding scale
    if input_ids is not None:
        record(p, "shared", x)  # decoder.embed_tokens is led.shared (traced if the encoder did not run)
    batch, length = x.shape[:2]
    past_length = inputs.past_length(past_key_values, cfg.decoder_layers, batch, cfg.decoder_attention_heads,
                                      cfg.d_model // cfg.decoder_attention_heads,
                                      (2, 4) if encoder_hidden_states is None else (4,))
    if attention_mask is not None:
        attention_mask = inputs.mask(attention_mask, (batch, past_length + length),
                                     "decoder_attention_mask (it must span past + current tokens)")
    self_mask = decoder_self_mask(attention_mask, length, past_length, dtype)  # [B or 1, 1, T, S] or None
    cross_mask = None
    if encoder_hidden_states is not None and encoder_attention_mask is not None:
        cross_mask = padding_mask(encoder_attention_mask, dtype)  # [B, 1, 1, S_enc]
    head_mask = check_head_mask(inputs.floats(head_mask, dtype, "decoder_head_mask"), cfg.decoder_layers,
                                cfg.decoder_attention_heads, "decoder_head_mask")
    cross_attn_head_mask = check_head_mask(inputs.floats(cross_attn_head_mask, dtype, "cross_attn_head_mask"),
                                           cfg.decoder_layers, cfg.decoder_attention_heads, "cross_attn_head_mask")
    table = p["decoder.embed_positions.weight"]
    if past_length + length > table.shape[0]:
        raise ValueError(f"{past_length + length} decoder positions exceed max_decoder_position_embeddings={table.shape[0]}")
    positions = record(p, "decoder.embed_positions", table[past_length:past_length + length])  # [T, D], from 0
    x = norm(p, "decoder.layernorm_embedding", x + positions)
    act = activation(cfg.activation_function)

    def layer(i, x):  # LEDDecoderLayer: BART-style, post-LN
        return decoder_layer(sub(p, f"decoder.layers.{i}"), x, cfg.decoder_attention_heads, act, self_mask,
                             norm_first=False, past=layer_row(past_key_values, i), head_mask=layer_row(head_mask, i),
                             encoder_states=encoder_hidden_states, encoder_mask=cross_mask,
                             cross_head_mask=layer_row(cross_attn_head_mask, i), output_probs=flags.attentions)

    stack = run_stack(cfg.decoder_layers, x, layer, flags, p, "decoder.layers")
    x = record(p, "decoder", stack.last_hidden_state)
    return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=x, past_key_values=stack.past_key_values,
                                                     hidden_states=stack.with_final(x), attentions=stack.attentions,
                                                     cross_attentions=stack.cross_attentions)


# ---------------------------------------------------------------- base model


def as_encoder_output(encoder_outputs):
    """LEDModel.forward: a tuple (last_hidden_state, hidden_states, attentions, global_attentions) is
    wrapped in an LEDEncoderBaseModelOutput; an output object is used as it is."""
    if isinstance(encoder_outputs, LEDEncoderBaseModelOutput):
        return encoder_outputs
    if isinstance(encoder_outputs, ModelOutput):
        encoder_outputs = encoder_outputs.to_tuple()
    if not isinstance(encoder_outputs, (tuple, list)) or not encoder_outputs:
        raise ValueError("encoder_outputs must be an LEDEncoderBaseModelOutput or a tuple starting with "
                         f"last_hidden_state [batch, sequence, d_model], got {type(encoder_outputs).__name__}")
    items = list(encoder_outputs) + [None] * 3
    return LEDEncoderBaseModelOutput(np.asarray(items[0]), items[1], items[2], items[3])


def led_model(p, cfg, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
              head_mask=None, decoder_head_mask=None, cross_attn_head_mask=None, encoder_outputs=None,
              global_attention_mask=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
              use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None, backend=None):
    """LEDModel.forward. input_ids [B, T] (+ decoder_input_ids [B, T']) -> LEDSeq2SeqModelOutput.

    Missing decoder inputs are `shift_tokens_right(input_ids)`. The cross-attention mask is the
    caller's `attention_mask` (not the merged global mask).
    """
    dtype = p["shared.weight"].dtype
    use_cache, output_attentions, output_hidden_states = inputs.output_flags(
        cfg, use_cache, output_attentions, output_hidden_states)
    if decoder_input_ids is None and decoder_inputs_embeds is None:
        if input_ids is None:
            raise ValueError("pass decoder_input_ids or decoder_inputs_embeds (without input_ids they cannot be "
                             "made by shifting input_ids to the right)")
        decoder_input_ids = shift_tokens_right(inputs.ids(input_ids), cfg.pad_token_id, cfg.decoder_start_token_id)
    given_encoder_outputs = encoder_outputs
    if encoder_outputs is None:
        encoder_outputs = led_encoder(p, cfg, input_ids, attention_mask, global_attention_mask, head_mask,
                                      inputs_embeds, output_attentions, output_hidden_states, backend)
    else:
        encoder_outputs = as_encoder_output(encoder_outputs)
    encoder_states = inputs.floats(encoder_outputs.last_hidden_state, dtype, "encoder_outputs[0]")
    if attention_mask is not None:
        attention_mask = inputs.mask(attention_mask, encoder_states.shape[:2], "attention_mask")
    dec = led_decoder(p, cfg, decoder_input_ids, decoder_attention_mask, encoder_states, attention_mask,
                      decoder_head_mask, cross_attn_head_mask, past_key_values, decoder_inputs_embeds, use_cache,
                      output_attentions, output_hidden_states)
    record(p, "", dec.last_hidden_state)  # the LEDModel module
    out = LEDSeq2SeqModelOutput(
        last_hidden_state=dec.last_hidden_state, past_key_values=dec.past_key_values,
        decoder_hidden_states=dec.hidden_states, decoder_attentions=dec.attentions,
        cross_attentions=dec.cross_attentions, encoder_last_hidden_state=encoder_outputs.last_hidden_state,
        encoder_hidden_states=encoder_outputs.hidden_states, encoder_attentions=encoder_outputs.attentions,
        encoder_global_attentions=encoder_outputs.global_attentions)
    return returned(cfg, return_dict, out, lambda: seq2seq_tuple(out, given_encoder_outputs))


def _seq2seq_fields(out):  # the fields every head copies from LEDSeq2SeqModelOutput
    return {k: getattr(out, k) for k in SEQ2SEQ_FIELDS}


def seq2seq_tuple(out, encoder_outputs=None) -> tuple:
    """LEDModel's return_dict=False tuple, upstream's `decoder_outputs + encoder_outputs`: the decoder's fields
    that are not None, then the encoder's, or the caller's `encoder_outputs` tuple exactly as given."""
    if encoder_outputs is None:
        return out.to_tuple()
    decoder = (out.last_hidden_state, out.past_key_values, out.decoder_hidden_states, out.decoder_attentions,
               out.cross_attentions)
    if not isinstance(encoder_outputs, tuple):  # upstream: "can only concatenate tuple (not ...) to tuple"
        raise TypeError(f"return_dict=False with encoder_outputs given as {type(encoder_outputs).__name__}: upstream "
                        "appends encoder_outputs to the decoder's tuple, which needs a tuple; pass a tuple or "
                        "return_dict=True")
    return tuple(v for v in decoder if v is not None) + encoder_outputs


# ---------------------------------------------------------------- heads


def head_returned(cfg, return_dict, output, out, encoder_outputs, *values):
    """A head's return: `output`, or upstream's `((loss,) + values + outputs[1:])` (loss first when computed),
    where outputs is LEDModel's tuple (seq2seq_tuple)."""
    return returned(cfg, return_dict, output,
                    lambda: with_loss(output.loss, values + seq2seq_tuple(out, encoder_outputs)[1:]))


def led_for_conditional_generation(p, cfg, input_ids=None, attention_mask=None, decoder_input_ids=None,
                                   decoder_attention_mask=None, head_mask=None, decoder_head_mask=None,
                                   cross_attn_head_mask=None, encoder_outputs=None, global_attention_mask=None,
                                   past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None,
                                   use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                                   backend=None):
    """LEDForConditionalGeneration. -> LEDSeq2SeqLMOutput; logits [B, T', V] = lm_head(h) + final_logits_bias.

    labels [B, T']: the decoder inputs default to shift_tokens_right(labels), caching is off, and the
    loss is the mean cross-entropy over labels != -100 (no shift: the decoder inputs are shifted).
    """
    if labels is not None:
        labels = inputs.ids(labels, "labels")
        use_cache = False
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)
    out = led_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                    head_mask, decoder_head_mask, cross_attn_head_mask, encoder_outputs, global_attention_mask,
                    past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                    output_hidden_states, True, backend)
    logits = dense(p, "lm_head", out.last_hidden_state) + p["final_logits_bias"]  # [B, T', V]
    loss = None
    if labels is not None:
        loss = cross_entropy(logits.reshape(-1, cfg.vocab_size), labels.reshape(-1))
    output = LEDSeq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(out))
    return head_returned(cfg, return_dict, output, out, encoder_outputs, logits)


def led_for_sequence_classification(p, cfg, input_ids=None, attention_mask=None, decoder_input_ids=None,
                                    decoder_attention_mask=None, head_mask=None, decoder_head_mask=None,
                                    cross_attn_head_mask=None, encoder_outputs=None, global_attention_mask=None,
                                    inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                                    output_attentions=None, output_hidden_states=None, return_dict=None, backend=None):
    """LEDForSequenceClassification. -> LEDSeq2SeqSequenceClassifierOutput; logits [B, num_labels].

    Pools the decoder state at the last `eos` of input_ids; every row must hold the same number of eos.
    """
    if labels is not None:
        use_cache = False
    if input_ids is None:
        raise ValueError("LEDForSequenceClassification needs input_ids: it pools the decoder state at their last "
                         "eos token (upstream does not support inputs_embeds here)")
    input_ids = inputs.ids(input_ids, vocab_size=cfg.vocab_size)
    out = led_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                    head_mask, decoder_head_mask, cross_attn_head_mask, encoder_outputs, global_attention_mask,
                    None, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                    output_hidden_states, True, backend)
    h = out.last_hidden_state  # [B, T', D]
    eos_mask = input_ids == cfg.eos_token_id  # [B, T]
    counts = eos_mask.sum(axis=1)
    if len(set(counts.tolist())) > 1:
        raise ValueError(f"All examples must have the same number of <eos> tokens (eos_token_id={cfg.eos_token_id}); "
                         f"got {counts.tolist()}")
    if counts[0] == 0:
        raise ValueError(f"input_ids hold no <eos> token (eos_token_id={cfg.eos_token_id}) to pool at")
    if eos_mask.shape[1] != h.shape[1]:
        raise ValueError(f"the eos positions of input_ids (length {eos_mask.shape[1]}) index the decoder states, "
                         f"which have length {h.shape[1]}; pass decoder inputs of the same length")
    pooled = h[eos_mask].reshape(h.shape[0], -1, h.shape[-1])[:, -1]  # [B, D] the state at the last eos
    head = sub(p, "classification_head")  # LEDClassificationHead: dropout, dense, tanh, dropout, out_proj
    hidden = np.tanh(dense(head, "dense", record(head, "dropout", pooled)))  # [B, D]
    logits = record(head, "", dense(head, "out_proj", hidden))  # [B, num_labels]
    loss = None
    if labels is not None:
        loss, _ = classification_loss(logits, labels, cfg.num_labels, cfg.problem_type)
    output = LEDSeq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(out))
    return head_returned(cfg, return_dict, output, out, encoder_outputs, logits)


def led_for_question_answering(p, cfg, input_ids=None, attention_mask=None, decoder_input_ids=None,
                               decoder_attention_mask=None, head_mask=None, decoder_head_mask=None,
                               cross_attn_head_mask=None, encoder_outputs=None, global_attention_mask=None,
                               start_positions=None, end_positions=None, inputs_embeds=None,
                               decoder_inputs_embeds=None, use_cache=None, output_attentions=None,
                               output_hidden_states=None, return_dict=None, backend=None):
    """LEDForQuestionAnswering. -> LEDSeq2SeqQuestionAnsweringModelOutput; start/end logits [B, T'] read
    from the decoder states."""
    if start_positions is not None and end_positions is not None:
        use_cache = False
    out = led_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                    head_mask, decoder_head_mask, cross_attn_head_mask, encoder_outputs, global_attention_mask,
                    None, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                    output_hidden_states, True, backend)
    logits = dense(p, "qa_outputs", out.last_hidden_state)  # [B, T', 2]
    start_logits, end_logits = np.ascontiguousarray(logits[..., 0]), np.ascontiguousarray(logits[..., 1])
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = span_loss(start_logits, end_logits, start_positions, end_positions)
    output = LEDSeq2SeqQuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                                    **_seq2seq_fields(out))
    return head_returned(cfg, return_dict, output, out, encoder_outputs, start_logits, end_logits)


# ---------------------------------------------------------------- generation hooks (refimpl.generation)


def run_encoder(model, input_ids, attention_mask=None, global_attention_mask=None, head_mask=None,
                inputs_embeds=None, output_attentions=False, output_hidden_states=False, **_ignored):
    """GenerationMixin._prepare_encoder_decoder_kwargs_for_generation: the encoder, run once."""
    p = model.spec.base_params(model.params, model.architecture)
    return led_encoder(p, model.config, input_ids, attention_mask, global_attention_mask, head_mask, inputs_embeds,
                       output_attentions, output_hidden_states)


def prepare_inputs_for_generation(decoder_input_ids, past_key_values=None, attention_mask=None,
                                  global_attention_mask=None, head_mask=None, decoder_head_mask=None,
                                  cross_attn_head_mask=None, use_cache=None, encoder_outputs=None, **_ignored):
    """LEDForConditionalGeneration.prepare_inputs_for_generation: with a cache, only the last token."""
    if past_key_values is not None:
        decoder_input_ids = decoder_input_ids[:, -1:]
    return {"input_ids": None, "encoder_outputs": encoder_outputs, "past_key_values": past_key_values,
            "decoder_input_ids": decoder_input_ids, "attention_mask": attention_mask,
            "global_attention_mask": global_attention_mask, "head_mask": head_mask,
            "decoder_head_mask": decoder_head_mask, "cross_attn_head_mask": cross_attn_head_mask,
            "use_cache": use_cache}


SPEC = FamilySpec(
    model_type="led", config=LEDConfig, base_model="LEDModel", base_prefix=BASE_PREFIX,
    architectures={
        "LEDModel": led_model,
        "LEDForConditionalGeneration": led_for_conditional_generation,
        "LEDForSequenceClassification": led_for_sequence_classification,
        "LEDForQuestionAnswering": led_for_question_answering,
    },
    param_shapes=param_shapes,
    tied=TIED,
    ignored_buffers=IGNORED_BUFFERS,
    missing_defaults=MISSING_DEFAULTS,
    sequence_classifiers=("LEDForSequenceClassification",),
    generation=Generation(prepare_inputs=prepare_inputs_for_generation, run_encoder=run_encoder,
                          decoder_mask="decoder_attention_mask"),
    generates=("LEDForConditionalGeneration",),
)
