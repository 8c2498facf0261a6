"""XGLM (transformers 4.37.2 `modeling_xglm.py`): a pre-LN decoder-only transformer with sinusoidal positions.

    ids -> embed_tokens * embed_scale + sinusoid(position + 2) -> N x decoder layer (pre-LN)
        -> layer_norm -> lm_head (tied to embed_tokens)

The decoder layer, attention and the loop over layers are the ones OPT uses (refimpl.layers);
XGLM differs only in its embeddings, its position ids and its loss. Parameter names are upstream's
state-dict names: the base model (`XGLMModel`) owns `embed_tokens.*`, `layers.*`, `layer_norm.*`;
`XGLMForCausalLM` keeps them under `model.` and adds `lm_head.weight`.

The position table is never stored: the rows a call needs are computed from the formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import inputs, torch_vml
from ..config import FairseqConfig, check_heads, in_islands
from ..family import FamilySpec, Generation, refuse_pruned_heads
from ..layers import check_head_mask, decoder_layer, dense, layer_row, norm, packed_rows, run_stack, sub
from ..ops import activation, causal_padding_mask, cross_entropy, padding_mask
from ..outputs import BaseModelOutputWithPastAndCrossAttentions, CausalLMOutputWithCrossAttentions, returned
from ..trace import record

BASE_PREFIX = "model"  # XGLMPreTrainedModel.base_model_prefix
POSITION_OFFSET = 2  # XGLMSinusoidalPositionalEmbedding.offset
# The sinusoid buffer is not persistent upstream; fairseq conversions may still carry these.
IGNORED_BUFFERS = ("embed_positions.weights", "embed_positions._float_tensor")


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class XGLMConfig(FairseqConfig):
    """configuration_xglm.py XGLMConfig."""

    attribute_map = {"num_attention_heads": "attention_heads", "hidden_size": "d_model", "num_hidden_layers": "num_layers"}
    model_type: str = "xglm"
    vocab_size: int = 256008
    max_position_embeddings: int = 2048
    d_model: int = 1024
    ffn_dim: int = 4096
    num_layers: int = 24
    attention_heads: int = 16
    activation_function: str = "gelu"
    scale_embedding: bool = True

    def __post_init__(self):
        check_heads(self.d_model, self.attention_heads)
        refuse_pruned_heads(self, "XGLMModel")


# ---------------------------------------------------------------- parameters


def param_shapes(cfg, architecture):  # -> {name: shape} of every weight the architecture uses
    D, F, V = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    shapes = {"embed_tokens.weight": (V, D), "layer_norm.weight": (D,), "layer_norm.bias": (D,)}
    attentions = ("self_attn", "encoder_attn") if cfg.add_cross_attention else ("self_attn",)
    for i in range(cfg.num_layers):
        layer = f"layers.{i}."
        linears = {"fc1": (F, D), "fc2": (D, F)}
        for attn in attentions:  # XGLMDecoderLayer: encoder_attn only when config.add_cross_attention
            linears.update({f"{attn}.{proj}": (D, D) for proj in ("q_proj", "k_proj", "v_proj", "out_proj")})
        for name, shape in linears.items():
            shapes[layer + name + ".weight"] = shape
            shapes[layer + name + ".bias"] = shape[:1]
        for name in (*(f"{attn}_layer_norm" for attn in attentions), "final_layer_norm"):
            shapes[layer + name + ".weight"] = (D,)
            shapes[layer + name + ".bias"] = (D,)
    if architecture == "XGLMModel":
        return shapes
    shapes = {f"{BASE_PREFIX}.{k}": v for k, v in shapes.items()}
    shapes["lm_head.weight"] = (V, D)
    return shapes




# ---------------------------------------------------------------- positions


def sinusoid_rows(rows, dim, padding_idx=None, dtype=np.float32, as_torch=False):  # rows [...] int -> [..., dim]
    """Rows of XGLMSinusoidalPositionalEmbedding.get_embedding's table, computed only where asked.

    row r, column k < half:  sin(r * f_k);  column half + k: cos(r * f_k)   (halves, not interleaved)
    f_k = exp(-k * ln(10000) / (half - 1)), half = dim // 2; an odd dim gets a zero last column;
    the row `padding_idx` is all zeros. Rows are table rows, i.e. position + 2.

    dtype=float64: every step in float64, the exact mathematics. dtype=float32: as upstream computes the
    table (`dtype=torch.float`, also for a float64 model: its float32 island): the step, k * step, f_k and
    r * f_k rounded to float32 as upstream rounds them; exp, sin and cos evaluated in float64 and rounded
    once to float32 (correctly rounded). torch's float32 exp/sin/cos are within 0.6 ulp but not correctly
    rounded (MKL's VML: see refimpl/torch_vml.py), so a few percent of upstream's entries differ from
    these by one float32 ulp (tests/test_xglm.py bounds it); as_torch=True (float32 only, islands="upstream")
    evaluates them with torch's own functions instead: upstream's table bit for bit.
    """
    half = dim // 2
    if half < 2:  # upstream divides by half - 1
        raise ValueError(f"the sinusoidal position table needs d_model >= 4, got {dim}")
    if as_torch and np.dtype(dtype) != np.float32:
        raise ValueError(f"torch's float32 exp/sin/cos give a float32 table, not {np.dtype(dtype)}")
    rows = np.asarray(rows)
    step = np.dtype(dtype).type(math.log(10000) / (half - 1))
    exponent = np.arange(half, dtype=dtype) * -step  # [half]
    if as_torch:
        freq = torch_vml.exp(exponent)  # [half]
        angle = rows.astype(dtype)[..., None] * freq  # [..., half] float32
        parts = [torch_vml.sin(angle), torch_vml.cos(angle)]  # [..., half] each
    else:
        freq = np.exp(exponent.astype(np.float64)).astype(dtype)  # [half]
        angle = (rows.astype(dtype)[..., None] * freq).astype(np.float64)  # [..., half]
        parts = [np.sin(angle).astype(dtype), np.cos(angle).astype(dtype)]  # [..., half] each
    if dim % 2 == 1:
        parts.append(np.zeros(rows.shape + (1,), dtype=dtype))
    table = np.concatenate(parts, axis=-1)  # [..., dim]
    if padding_idx is not None:
        table[rows == padding_idx] = 0
    return table


def forward_position_ids(past_length, length):  # -> [1, T]
    """XGLMModel.forward without position_ids: arange(past, past + T) for every row, padding ignored."""
    return np.arange(past_length, past_length + length, dtype=np.int64)[None, :]


def generation_position_ids(attention_mask, query_length=None):  # [B, S] 0/1 -> [B, S] or [B, query_length]
    """XGLMForCausalLM.prepare_inputs_for_generation: cumsum(mask) - 1 with pads set to 1.

    With a cache upstream keeps the last `query_length` columns (the tokens being fed). Unlike
    forward()'s default, the first real token of a left-padded row gets position 0. Pads get 1,
    not -1: they read table row 3, a real sinusoid row, not the zero padding row.
    """
    attention_mask = np.asarray(attention_mask).astype(np.int64)
    positions = np.cumsum(attention_mask, axis=-1) - 1  # [B, S]
    positions[attention_mask == 0] = 1
    if query_length is not None:
        positions = positions[:, positions.shape[1] - query_length:]
    return positions


def prepare_inputs_for_generation(input_ids, past_key_values=None, attention_mask=None, use_cache=None,
                                  **model_kwargs):  # input_ids [B, S] -> the next forward call's keyword arguments
    """XGLMForCausalLM.prepare_inputs_for_generation, for refimpl.generation.

    With a cache, only the tokens the cache has not seen (or the last one). Position ids come from the mask
    (generation_position_ids), cut to the new tokens. Upstream quirks, reproduced: a caller's `position_ids`
    is dropped when a mask is given (only computed ones are used), and without a mask none are passed
    (forward() then counts arange(past, past + T)) and the mask becomes ones over the *new* tokens.
    """
    if past_key_values is not None:
        past_length = past_key_values[0][0].shape[2]
        keep_from = past_length if input_ids.shape[1] > past_length else input_ids.shape[1] - 1
        input_ids = input_ids[:, keep_from:]  # [B, T_new]
    position_ids = model_kwargs.get("position_ids")
    if attention_mask is not None and position_ids is None:
        position_ids = generation_position_ids(attention_mask)  # [B, S]
        if past_key_values:
            position_ids = position_ids[:, -input_ids.shape[1]:]  # [B, T_new]
    else:
        position_ids = None
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            "past_key_values": past_key_values, "use_cache": use_cache}


def position_embeddings(cfg, position_ids, batch, length, past_length, dtype):  # -> [1 or B, T, D]
    """XGLMSinusoidalPositionalEmbedding.forward for position ids [1 or B, T] (not changed in place).

    Upstream adds the offset with `position_ids += 2`, mutating the caller's tensor; here a new array
    holds the rows. A fresh upstream table has max(max_position_embeddings, T + past) + 2 rows (it is
    regrown for long inputs); rows outside it are refused as upstream's index_select refuses them.
    """
    if position_ids is None:
        position_ids = forward_position_ids(past_length, length)
    position_ids = inputs.ids(position_ids, "position_ids")
    if position_ids.shape[1] != length or position_ids.shape[0] not in (1, batch):
        raise ValueError(f"position_ids must have shape ({batch}, {length}) or (1, {length}), got {position_ids.shape}")
    rows = position_ids + POSITION_OFFSET  # [1 or B, T]
    table_rows = max(cfg.max_position_embeddings, length + past_length) + POSITION_OFFSET
    if rows.min() < 0 or rows.max() >= table_rows:
        raise ValueError(f"position_ids must lie in -{POSITION_OFFSET}..{table_rows - POSITION_OFFSET - 1} "
                         f"(the sinusoid table has {table_rows} rows, offset {POSITION_OFFSET}); "
                         f"got {int(position_ids.min())}..{int(position_ids.max())}")
    # float32: upstream's float32 table; float64: exact, or upstream's float32 table bit for bit (torch's own
    # exp/sin/cos) when reproducing its island
    island = in_islands(cfg, dtype)
    table_dtype = np.float32 if dtype == np.float32 or island else np.float64
    table = sinusoid_rows(rows, cfg.d_model, cfg.pad_token_id, table_dtype, as_torch=island)  # [1 or B, T, D]
    return table.astype(dtype)


# ---------------------------------------------------------------- base model


def xglm_model(p, cfg, input_ids=None, attention_mask=None, position_ids=None, encoder_hidden_states=None,
               encoder_attention_mask=None, head_mask=None, cross_attn_head_mask=None, past_key_values=None,
               inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
               return_dict=None, *, skip_padding=False):
    """XGLMModel.forward. input_ids [B, T] -> BaseModelOutputWithPastAndCrossAttentions.
    skip_padding: refimpl's own (refimpl.layers.packed_rows).

    last_hidden_state [B, T, D] (after the final LayerNorm); past_key_values: per layer (k, v), plus
    (cross_k, cross_v) with encoder states, each [B, H, S, d]; hidden_states: L+1 entries, the last
    after the final LayerNorm; attentions [B, H, T, S]; cross_attentions [B, H, T, S_enc].
    """
    dtype = p["embed_tokens.weight"].dtype
    flags = inputs.output_flags(cfg, use_cache, output_attentions, output_hidden_states)
    input_ids, x = inputs.embed(input_ids, inputs_embeds, p["embed_tokens.weight"])  # [B, T, D]
    if input_ids is not None:
        record(p, "embed_tokens", x)
    if input_ids is not None and cfg.scale_embedding:  # XGLMModel.embed_scale; inputs_embeds are taken as given
        x = x * dtype.type(math.sqrt(cfg.d_model))
    batch, length = x.shape[:2]
    past_length = inputs.past_length(past_key_values, cfg.num_layers, batch, cfg.attention_heads,
                                      cfg.d_model // cfg.attention_heads, (4,) if encoder_hidden_states is not None
                                      else (2, 4) if cfg.add_cross_attention else (2,))
    attention_mask = inputs.causal_lm_mask(attention_mask, batch, past_length, length)  # [B, S]
    head_mask = check_head_mask(inputs.floats(head_mask, dtype, "head_mask"), cfg.num_layers, cfg.attention_heads)

    encoder_states, encoder_mask = _encoder_inputs(cfg, encoder_hidden_states, encoder_attention_mask, batch, dtype)
    cross_head_mask = check_head_mask(inputs.floats(cross_attn_head_mask, dtype, "cross_attn_head_mask"),
                                      cfg.num_layers, cfg.attention_heads, "cross_attn_head_mask")

    x = x + record(p, "embed_positions", position_embeddings(cfg, position_ids, batch, length, past_length, dtype))
    mask = causal_padding_mask(attention_mask, length, dtype)  # [B, 1, T, S]
    act = activation(cfg.activation_function)
    rows = packed_rows(skip_padding, attention_mask, flags, past_length, encoder_states is not None)
    if rows is not None:
        x = rows.pack(x)  # [N, D]: the real positions only

    def layer(i, x):  # XGLMDecoderLayer; XGLMAttention clamps scores at finfo.min, as OPTAttention does
        return decoder_layer(sub(p, f"layers.{i}"), x, cfg.attention_heads, act, mask, norm_first=True,
                             past=layer_row(past_key_values, i), head_mask=layer_row(head_mask, i),
                             encoder_states=encoder_states, encoder_mask=encoder_mask,
                             cross_head_mask=layer_row(cross_head_mask, i), clamp_to_min=True,
                             output_probs=flags.attentions, rows=rows)

    stack = run_stack(cfg.num_layers, x, layer, flags, p, "layers")
    x = norm(p, "layer_norm", stack.last_hidden_state)
    x = record(p, "", x if rows is None else rows.unpack(x))  # the XGLMModel module; 0.0 at padding when packed
    return returned(cfg, return_dict, BaseModelOutputWithPastAndCrossAttentions(
        last_hidden_state=x, past_key_values=stack.past_key_values, hidden_states=stack.with_final(x),
        attentions=stack.attentions, cross_attentions=stack.cross_attentions))


def _encoder_inputs(cfg, states, mask, batch, dtype):  # -> (states [B, S, D], mask [B, 1, 1, S] additive) or Nones
    """XGLMModel.forward: cross-attention inputs; the mask only when given (else no mask, no clamp)."""
    if states is None:  # upstream ignores an encoder_attention_mask without encoder states
        return None, None
    if not cfg.add_cross_attention:
        raise ValueError("encoder_hidden_states needs a model with cross-attention layers (add_cross_attention=True)")
    states = inputs.floats(states, dtype, "encoder_hidden_states")
    if states.ndim != 3 or states.shape[0] != batch or states.shape[2] != cfg.d_model:
        raise ValueError(f"encoder_hidden_states must have shape ({batch}, source, {cfg.d_model}), got {states.shape}")
    if mask is not None:  # _prepare_4d_attention_mask: 0 where attended, finfo.min where not
        mask = padding_mask(inputs.mask(mask, states.shape[:2], "encoder_attention_mask"), dtype)
    return states, mask


# ---------------------------------------------------------------- heads


def shift_labels_left(labels, pad_token_id):  # [B, T] -> [B, T]
    """XGLMForCausalLM.forward: labels[:, 1:] then pad_token_id in the last slot (not -100).

    Upstream quirk, reproduced: the last position of every row is trained to predict the pad token,
    so that term enters the mean; -100 elsewhere is still ignored.
    """
    if pad_token_id is None:
        raise ValueError("the XGLM loss fills the last label slot with pad_token_id, but the config has none")
    shifted = np.empty_like(labels)
    shifted[:, :-1] = labels[:, 1:]
    shifted[:, -1] = pad_token_id
    return shifted


def xglm_for_causal_lm(p, cfg, input_ids=None, attention_mask=None, position_ids=None, encoder_hidden_states=None,
                       encoder_attention_mask=None, head_mask=None, cross_attn_head_mask=None, past_key_values=None,
                       inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                       output_hidden_states=None, return_dict=None):
    """XGLMForCausalLM. -> CausalLMOutputWithCrossAttentions; logits [B, T, V]; loss: see shift_labels_left."""
    out = xglm_model(sub(p, BASE_PREFIX), cfg, input_ids, attention_mask, position_ids, encoder_hidden_states,
                     encoder_attention_mask, head_mask, cross_attn_head_mask, past_key_values, inputs_embeds,
                     use_cache, output_attentions, output_hidden_states, return_dict=True)
    logits = dense(p, "lm_head", out.last_hidden_state)  # [B, T, V]
    loss = None
    if labels is not None:
        labels = inputs.ids(labels, "labels")
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels must have shape {logits.shape[:2]} (batch, sequence), got {labels.shape}")
        shifted = shift_labels_left(labels, cfg.pad_token_id)
        loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1))  # [B*T, V], [B*T]
    return returned(cfg, return_dict, CausalLMOutputWithCrossAttentions(
        loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states,
        attentions=out.attentions, cross_attentions=out.cross_attentions))


SPEC = FamilySpec(
    model_type="xglm", config=XGLMConfig, base_model="XGLMModel", base_prefix=BASE_PREFIX,
    architectures={"XGLMModel": xglm_model, "XGLMForCausalLM": xglm_for_causal_lm},
    param_shapes=param_shapes,
    tied={"lm_head.weight": f"{BASE_PREFIX}.embed_tokens.weight"},  # XGLMForCausalLM._tied_weights_keys
    ignored_buffers=IGNORED_BUFFERS,
    causal_lm={"XGLMForCausalLM": "lm_head.weight"},
    generation=Generation(prepare_inputs=prepare_inputs_for_generation),
    generates=("XGLMForCausalLM",),
)
