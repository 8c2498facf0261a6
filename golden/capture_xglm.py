"""Golden tensors for the XGLM family: every class x config variant x input case, float32 and float64.

Two deliberate departures from running upstream untouched, both applied only while capturing:

1. The sinusoid table. Upstream computes it with torch's float32 exp/sin/cos, which come from MKL VML
   (high-accuracy mode): within 1 ulp but not correctly rounded, so a few percent of the entries sit one
   float32 ulp from the correctly rounded value (cos(1) is one), and which ones depends on MKL's code
   path for the CPU. NumPy cannot reproduce that bit for bit, and one ulp in the table is ~1e-8 relative
   in every float64 output: far above the 1e-10 golden tolerance. So the capture replaces
   `XGLMSinusoidalPositionalEmbedding.get_embedding` by the same formula with every float32 rounding
   upstream does (step, k * step, f_k, r * f_k) and exp/sin/cos correctly rounded to float32
   (`correctly_rounded_get_embedding`, written here independently of refimpl). Upstream's own tables are
   stored in `golden/xglm/upstream_sinusoid.safetensors`; tests/test_xglm.py checks that refimpl's rows are
   within one float32 ulp of them, and the live test compares against unpatched upstream in float32.
2. `position_ids`. Upstream adds the offset to the caller's tensor in place (`position_ids += 2`), and
   torch.from_numpy shares memory with the stored input, so the float64 run would see ids + 4 and the
   stored input would be corrupted. A forward pre-hook hands upstream a copy (`protect_position_ids`):
   the numbers are upstream's, only the caller's array is left alone.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import XGLMConfig, XGLMForCausalLM, XGLMModel
from transformers.models.xglm.modeling_xglm import XGLMSinusoidalPositionalEmbedding

from common import ROOT, SEED, Case, Step, randomize_, seed_everything, write_checkpoint

# Small, all-different sizes: 3 heads of 4, ffn 20, vocab 43, 2 layers; max_position_embeddings 8 so that
# the 11-token cases regrow the table past its length.
BASE = dict(vocab_size=43, d_model=12, num_layers=2, ffn_dim=20, attention_heads=3, max_position_embeddings=8,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, dropout=0.0, attention_dropout=0.0,
            activation_dropout=0.0, layerdrop=0.0)
VARIANTS = {
    "gelu-scaled": dict(activation_function="gelu", scale_embedding=True),  # the xglm-564M layout
    "relu-unscaled": dict(activation_function="relu", scale_embedding=False),
    "gelunew-odd": dict(activation_function="gelu_new", d_model=15, attention_heads=3, ffn_dim=17),  # odd width: zero column
    "cross": dict(activation_function="gelu", add_cross_attention=True),
}
CLASSES = [XGLMModel, XGLMForCausalLM]
B, T, LONG = 3, 7, 11
ENCODER_LENGTH = 5
EVERYTHING = dict(output_attentions=True, output_hidden_states=True, use_cache=True)


# ---------------------------------------------------------------- the two capture-time adjustments


def sinusoid_table(num_embeddings, embedding_dim, padding_idx, dtype):  # -> [N, dim] ndarray of dtype
    """XGLMSinusoidalPositionalEmbedding.get_embedding, written here independently of refimpl, one row at a
    time. float32: with every float32 rounding upstream does (step, k * step, f_k, r * f_k) and exp/sin/cos
    correctly rounded to float32. float64: every step in float64 (the exact mathematics)."""
    half = embedding_dim // 2
    step = dtype(math.log(10000) / (half - 1))
    freq = np.exp((np.arange(half, dtype=dtype) * -step).astype(np.float64)).astype(dtype)
    table = np.zeros((num_embeddings, embedding_dim), dtype=dtype)
    for r in range(num_embeddings):  # one row at a time: a different shape of computation than refimpl's
        angle = (dtype(r) * freq).astype(np.float64)
        table[r, :half] = np.sin(angle)
        table[r, half:2 * half] = np.cos(angle)
    if padding_idx is not None:
        table[padding_idx] = 0
    return table


def correctly_rounded_get_embedding(num_embeddings, embedding_dim, padding_idx=None):  # -> [N, dim] tensor
    """get_embedding with the float32 table above (upstream builds it in float32 in any run)."""
    table = sinusoid_table(num_embeddings, embedding_dim, padding_idx, np.float32)
    return torch.from_numpy(table).to(torch.get_default_dtype())


@contextlib.contextmanager
def correctly_rounded_sinusoid():
    """Inside: the table is `sinusoid_table` in the weights' dtype at every forward: float32 runs get the
    correctly rounded float32 table, float64 runs the exact float64 one (upstream's float32 island, removed)."""
    cls = XGLMSinusoidalPositionalEmbedding
    original_get, original_forward = cls.__dict__["get_embedding"], cls.forward

    def forward(self, position_ids=None, past_key_values_length=0):  # upstream's size rule, then its forward
        rows = max(self.weights.shape[0], 2 + position_ids.shape[1] + past_key_values_length)
        dtype = np.float64 if self.weights.dtype == torch.float64 else np.float32
        self.weights = torch.from_numpy(sinusoid_table(rows, self.embedding_dim, self.padding_idx, dtype)).to(
            self.weights.dtype)
        return original_forward(self, position_ids, past_key_values_length)

    cls.get_embedding, cls.forward = staticmethod(correctly_rounded_get_embedding), forward
    try:
        yield
    finally:
        cls.get_embedding, cls.forward = original_get, original_forward


def protect_position_ids(model):
    """Give upstream a copy of position_ids, so its in-place `+= 2` cannot reach the caller's array."""

    def hook(_module, args, kwargs):
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"].clone()
        return args, kwargs

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return model


# ---------------------------------------------------------------- inputs


def token_ids(rng, vocab, batch=B, length=T):  # no pad id (1) inside the text
    return rng.integers(3, vocab, size=(batch, length))


def right_padded(rng, vocab, length=T):  # row 0 unpadded, rows 1-2 padded on the right
    ids, mask = token_ids(rng, vocab, length=length), np.ones((B, length), dtype=np.int64)
    for row, n in ((1, 2), (2, 4)):
        ids[row, length - n:] = 1
        mask[row, length - n:] = 0
    return ids, mask


def left_padded(rng, vocab, length=T):  # row 1 unpadded, rows 0 and 2 padded on the left
    ids, mask = token_ids(rng, vocab, length=length), np.ones((B, length), dtype=np.int64)
    for row, n in ((0, 3), (2, 1)):
        ids[row, :n] = 1
        mask[row, :n] = 0
    return ids, mask


def generate_positions(mask):  # [B, S] -> [B, S]: prepare_inputs_for_generation's cumsum - 1, pads 1
    positions = np.cumsum(mask, axis=1) - 1
    return np.where(mask == 0, 1, positions)


def common_cases(rng, cfg):
    V = cfg.vocab_size
    ids_r, mask_r = right_padded(rng, V)
    ids_l, mask_l = left_padded(rng, V)
    ids_long, mask_long = left_padded(rng, V, LONG)
    pos_l = generate_positions(mask_l)
    head_mask = np.ones((cfg.num_layers, cfg.attention_heads))
    head_mask[0, 1] = 0.0
    head_mask[1, 2] = 0.5
    broadcast_positions = np.array([[-2, -1, 0, 7, 3, 3, 6]])  # rows 0 and 1 (the zero padding row), reordered
    return [
        Case("defaults", [Step({"input_ids": token_ids(rng, V)})], "no mask, default outputs"),
        Case("right_pad", [Step({"input_ids": ids_r, "attention_mask": mask_r}, EVERYTHING)]),
        Case("left_pad", [Step({"input_ids": ids_l, "attention_mask": mask_l}, EVERYTHING)],
             "forward() positions ignore padding; left-pad rows see a uniform softmax (finfo.min masks)"),
        Case("head_mask", [Step({"input_ids": ids_r, "attention_mask": mask_r, "head_mask": head_mask}, EVERYTHING)]),
        Case("cached_two_steps", [
            Step({"input_ids": ids_l[:, :4], "attention_mask": mask_l[:, :4]}, EVERYTHING),
            Step({"input_ids": ids_l[:, 4:], "attention_mask": mask_l}, EVERYTHING, use_past=True),
        ], "prefix of 4 then 3 new tokens with the past + current mask"),
        Case("cached_one_token", [
            Step({"input_ids": ids_r[:, :6], "attention_mask": mask_r[:, :6]}, EVERYTHING),
            Step({"input_ids": ids_r[:, 6:], "attention_mask": mask_r}, EVERYTHING, use_past=True),
        ], "a single new token: upstream builds no causal part"),
        Case("long_regrow", [Step({"input_ids": ids_long, "attention_mask": mask_long}, EVERYTHING)],
             f"{LONG} tokens > max_position_embeddings=8: upstream regrows its table"),
        Case("cached_regrow", [
            Step({"input_ids": ids_long[:, :6], "attention_mask": mask_long[:, :6]}, EVERYTHING),
            Step({"input_ids": ids_long[:, 6:], "attention_mask": mask_long}, EVERYTHING, use_past=True),
        ], "past 6 + 5 new tokens regrow the table"),
        Case("position_ids", [Step({"input_ids": ids_l, "attention_mask": mask_l, "position_ids": pos_l}, EVERYTHING)],
             "generate()'s positions for a left-padded batch"),
        Case("position_ids_broadcast", [Step({"input_ids": ids_r, "position_ids": broadcast_positions})],
             "shape (1, T); -1 reads the zeroed padding row"),
        Case("position_ids_cached", [
            Step({"input_ids": ids_l[:, :6], "attention_mask": mask_l[:, :6], "position_ids": pos_l[:, :6]}, EVERYTHING),
            Step({"input_ids": ids_l[:, 6:], "attention_mask": mask_l, "position_ids": pos_l[:, 6:]}, EVERYTHING,
                 use_past=True),
        ], "one generate()-style decoding step"),
    ]


def cross_cases(rng, cfg):
    V, D = cfg.vocab_size, cfg.d_model
    ids, mask = right_padded(rng, V)
    states = rng.normal(size=(B, ENCODER_LENGTH, D))
    enc_mask = np.ones((B, ENCODER_LENGTH), dtype=np.int64)
    enc_mask[1, 3:] = 0
    enc_mask[2, :2] = 0
    cross_head_mask = np.ones((cfg.num_layers, cfg.attention_heads))
    cross_head_mask[1, 0] = 0.0
    cross_head_mask[0, 2] = 0.25
    with_states = {"encoder_hidden_states": states, "encoder_attention_mask": enc_mask}
    return [
        Case("cross", [Step({"input_ids": ids, "attention_mask": mask, **with_states}, EVERYTHING)]),
        Case("cross_no_encoder_mask", [Step({"input_ids": ids, "encoder_hidden_states": states}, EVERYTHING)],
             "no encoder mask: no clamp either"),
        Case("cross_head_mask", [Step({"input_ids": ids, "attention_mask": mask, **with_states,
                                       "cross_attn_head_mask": cross_head_mask}, EVERYTHING)]),
        Case("cross_cached", [
            Step({"input_ids": ids[:, :5], "attention_mask": mask[:, :5], **with_states}, EVERYTHING),
            Step({"input_ids": ids[:, 5:], "attention_mask": mask, **with_states}, EVERYTHING, use_past=True),
        ], "cross keys/values come from the cache in step 2"),
    ]


def head_cases(rng, cls, cfg):
    ids, mask = right_padded(rng, cfg.vocab_size)
    if cls is XGLMModel:
        embeds = rng.normal(size=(B, T, cfg.d_model))
        return [Case("inputs_embeds", [Step({"inputs_embeds": embeds, "attention_mask": mask}, EVERYTHING)],
                     "inputs_embeds are not scaled by embed_scale")]
    labels = ids.copy()
    labels[mask == 0] = -100
    return [
        Case("labels", [Step({"input_ids": ids, "attention_mask": mask, "labels": labels}, EVERYTHING)],
             "labels shifted left, last slot = pad_token_id (a 'predict pad' term per row)"),
        Case("labels_all_real", [Step({"input_ids": ids, "labels": ids})]),
    ]


def upstream_sinusoid_tables():  # unpatched upstream tables for the ulp check in tests/test_xglm.py
    tables = {}
    for dim, rows in ((4, 64), (12, 64), (15, 64), (64, 300), (1024, 40)):
        tables[f"dim{dim}"] = XGLMSinusoidalPositionalEmbedding.get_embedding(rows, dim, 1).numpy()
    save_file(tables, str(ROOT / "xglm" / "upstream_sinusoid.safetensors"))


def capture(manifest):
    seed_everything(SEED)
    with correctly_rounded_sinusoid():
        for v, (variant, extra) in enumerate(VARIANTS.items()):
            for c, cls in enumerate(CLASSES):
                if "add_cross_attention" in extra and cls is XGLMModel:  # the causal LM covers it (size budget)
                    continue
                cfg = XGLMConfig(**{**BASE, **extra})
                model = protect_position_ids(cls(cfg))
                randomize_(model, SEED + 10 * v + c)
                rng = np.random.default_rng(SEED + 10 * v + c)
                cases = common_cases(rng, cfg) + head_cases(rng, cls, cfg)
                if cfg.add_cross_attention:
                    cases += cross_cases(rng, cfg)
                manifest.append(write_checkpoint("xglm", f"{variant}-{cls.__name__}", model, cases))
    upstream_sinusoid_tables()
