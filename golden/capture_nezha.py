"""Golden tensors for the NEZHA family: every class x config variant x input case, float32 and float64.

One deliberate change to upstream while capturing (`exact_relative_positions`): upstream builds the
relative-position sinusoid once, at init, with torch's float32 sin/cos, and `.double()` only casts that
buffer, so its float64 run carries float32 table values; torch's vectorised float32 sin/cos are not
correctly rounded (one ulp off in ~3% of the entries, i.e. ~6e-8 relative). Reproducing those bits in
NumPy is not possible portably, and no float64 comparison at 1e-10 could pass against them. So while
capturing, the table is upstream's own formula (`NezhaRelativePositionsEncoding.__init__`) evaluated in
float64 and rounded once to the run's dtype: float32 runs differ from stock upstream by at most that one
ulp in the table; float64 runs are the exact mathematics. tests/test_nezha_live.py checks stock upstream
(unpatched) too, at the float32 tolerance.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from transformers import (NezhaConfig, NezhaForMaskedLM, NezhaForMultipleChoice, NezhaForNextSentencePrediction,
                          NezhaForPreTraining, NezhaForQuestionAnswering, NezhaForSequenceClassification,
                          NezhaForTokenClassification, NezhaModel)
from transformers.models.nezha import modeling_nezha

from common import SEED, Case, Step, randomize_, seed_everything, write_checkpoint

# All-different small sizes: hidden 12 = 3 heads of 4, intermediate 20, vocab 41, 2 layers, 3 token types.
BASE = dict(vocab_size=41, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
            type_vocab_size=3, max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            classifier_dropout=0.0, pad_token_id=0)
VARIANTS = {
    "k2": dict(max_relative_position=2),  # < the test length 7: distances clip at +-2
    "k9-gelu_new": dict(max_relative_position=9, hidden_act="gelu_new"),  # > every distance: no clipping
}
CLASSES = [NezhaModel, NezhaForPreTraining, NezhaForMaskedLM, NezhaForNextSentencePrediction,
           NezhaForSequenceClassification, NezhaForMultipleChoice, NezhaForTokenClassification,
           NezhaForQuestionAnswering]
B, T, C = 3, 7, 2
EVERYTHING = dict(output_attentions=True, output_hidden_states=True)


# ---------------------------------------------------------------- the exact sinusoid (see the module docstring)


def exact_table(max_relative_position, depth):  # -> [2K+1, depth] float64, upstream's formula in float64
    position = np.arange(2 * max_relative_position + 1, dtype=np.float64)[:, None]
    div_term = np.exp(np.arange(0, depth, 2, dtype=np.float64) * (-math.log(10000.0) / depth))
    table = np.zeros((position.shape[0], depth))
    table[:, 0::2] = np.sin(position * div_term)
    table[:, 1::2] = np.cos(position * div_term)
    return table


@contextlib.contextmanager
def exact_relative_positions():
    """Inside: NezhaRelativePositionsEncoding returns R_ij from the float64 table, cast to the buffer's dtype."""
    cls = modeling_nezha.NezhaRelativePositionsEncoding
    original_init, original_forward = cls.__init__, cls.forward

    def init(self, length, depth, max_relative_position=127):
        original_init(self, length, depth, max_relative_position)
        self.exact_args = (depth, max_relative_position)

    def forward(self, length):
        depth, k = self.exact_args
        distance = np.arange(length)[None, :] - np.arange(length)[:, None]  # [T, T]: j - i
        rows = exact_table(k, depth)[np.clip(distance, -k, k) + k]  # [T, T, depth]
        return torch.from_numpy(rows).to(self.positions_encoding.dtype)

    cls.__init__, cls.forward = init, forward
    try:
        yield
    finally:
        cls.__init__, cls.forward = original_init, original_forward


# ---------------------------------------------------------------- inputs


def token_ids(rng, shape=(B, T)):
    return rng.integers(1, BASE["vocab_size"], size=shape)


def right_padded(rng):  # row 0 unpadded, rows 1-2 padded on the right
    ids, mask = token_ids(rng), np.ones((B, T), dtype=np.int64)
    for row, n in ((1, 2), (2, 4)):
        ids[row, T - n:] = 0
        mask[row, T - n:] = 0
    return ids, mask


def left_padded(rng):
    ids, mask = token_ids(rng), np.ones((B, T), dtype=np.int64)
    for row, n in ((0, 3), (2, 1)):
        ids[row, :n] = 0
        mask[row, :n] = 0
    return ids, mask


def token_types(rng, shape=(B, T)):  # sentence A then sentence B (then a third type for a few tokens)
    types = np.zeros(shape, dtype=np.int64)
    types[..., shape[-1] // 2:] = 1
    types[..., -1] = rng.integers(0, BASE["type_vocab_size"], size=shape[:-1])
    return types


def head_masks(cfg):
    full = np.ones((cfg.num_hidden_layers, cfg.num_attention_heads))
    full[0, 1] = 0.0
    full[1, 2] = 0.5
    return full, np.array([1.0, 0.25, 0.0])[: cfg.num_attention_heads]


def common_cases(rng, cfg):
    ids_r, mask_r = right_padded(rng)
    ids_l, mask_l = left_padded(rng)
    full, per_head = head_masks(cfg)
    return [
        Case("defaults", [Step({"input_ids": token_ids(rng)})], "no mask, no token types, default outputs"),
        Case("right_pad_types", [Step({"input_ids": ids_r, "attention_mask": mask_r,
                                       "token_type_ids": token_types(rng)}, EVERYTHING)]),
        Case("left_pad", [Step({"input_ids": ids_l, "attention_mask": mask_l}, EVERYTHING)]),
        Case("head_mask", [Step({"input_ids": ids_r, "attention_mask": mask_r, "token_type_ids": token_types(rng),
                                 "head_mask": full}, EVERYTHING)]),
        Case("head_mask_1d", [Step({"input_ids": ids_l, "attention_mask": mask_l, "head_mask": per_head},
                                   EVERYTHING)]),
        Case("inputs_embeds", [Step({"inputs_embeds": rng.normal(size=(B, T, cfg.hidden_size)),
                                     "attention_mask": mask_r, "token_type_ids": token_types(rng)}, EVERYTHING)]),
    ]


def multiple_choice_cases(rng, cfg):
    ids = token_ids(rng, (B, C, T))
    mask = np.ones((B, C, T), dtype=np.int64)
    mask[1, 0, 5:] = 0
    mask[2, 1, 3:] = 0
    ids[mask == 0] = 0
    full, _ = head_masks(cfg)
    return [
        Case("defaults", [Step({"input_ids": token_ids(rng, (B, C, T))})]),
        Case("padded_types_labels", [Step({"input_ids": ids, "attention_mask": mask,
                                           "token_type_ids": token_types(rng, (B, C, T)), "head_mask": full,
                                           "labels": np.array([1, 0, 1])}, EVERYTHING)]),
        Case("inputs_embeds", [Step({"inputs_embeds": rng.normal(size=(B, C, T, cfg.hidden_size)),
                                     "attention_mask": mask}, EVERYTHING)]),
    ]


def head_cases(rng, cls, cfg):
    ids, mask = right_padded(rng)
    types = token_types(rng)
    mlm_labels = np.where(rng.random((B, T)) < 0.4, ids, -100)
    mlm_labels[mask == 0] = -100
    if cls is NezhaModel:
        long_ids = token_ids(rng, (2, cfg.max_position_embeddings))
        mask_3d = np.tril(np.ones((T, T), dtype=np.int64))[None].repeat(B, axis=0)  # [B, T, T] per query
        mask_3d[1, :, 5:] = 0
        return [Case("full_length", [Step({"input_ids": long_ids}, EVERYTHING)],
                     "a sequence of exactly max_position_embeddings tokens"),
                Case("mask_3d", [Step({"input_ids": ids, "attention_mask": mask_3d}, EVERYTHING)],
                     "a [B, T, T] attention mask (one row per query)")]
    if cls is NezhaForPreTraining:
        return [
            Case("labels_both", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                       "labels": mlm_labels, "next_sentence_label": np.array([0, 1, 1])},
                                      EVERYTHING)]),
            Case("labels_mlm_only", [Step({"input_ids": ids, "attention_mask": mask, "labels": mlm_labels})],
                 "upstream computes a loss only when both labels are given"),
        ]
    if cls is NezhaForMaskedLM:
        return [Case("labels", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                      "labels": mlm_labels}, EVERYTHING)])]
    if cls is NezhaForNextSentencePrediction:
        return [Case("labels", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                      "labels": np.array([1, 0, 1])}, EVERYTHING)])]
    if cls is NezhaForSequenceClassification:
        return [
            Case("labels_single", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                         "labels": rng.integers(0, 3, size=B)}, EVERYTHING)]),
            Case("labels_multi", [Step({"input_ids": ids, "attention_mask": mask,
                                        "labels": rng.integers(0, 2, size=(B, 3)).astype(np.float64)})]),
        ]
    if cls is NezhaForTokenClassification:
        labels = rng.integers(0, 3, size=(B, T))
        labels[mask == 0] = -100
        return [Case("labels", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                      "labels": labels}, EVERYTHING)])]
    if cls is NezhaForQuestionAnswering:
        return [Case("positions", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                                         "start_positions": np.array([0, 3, 99]),  # 99 clamps to T: ignored
                                         "end_positions": np.array([[6], [4], [2]])}, EVERYTHING)])]
    raise AssertionError(cls)


def num_labels(cls):
    return 2 if cls is NezhaForQuestionAnswering else 3  # QA: qa_outputs has num_labels (= start, end) outputs


# ---------------------------------------------------------------- extra checkpoints


def regression_checkpoint(manifest):
    model = NezhaForSequenceClassification(NezhaConfig(**BASE, **VARIANTS["k2"], num_labels=1))
    randomize_(model, SEED + 99)
    rng = np.random.default_rng(SEED + 99)
    ids, mask = right_padded(rng)
    case = Case("labels_regression", [Step({"input_ids": ids, "attention_mask": mask, "labels": rng.normal(size=B)})])
    manifest.append(write_checkpoint("nezha", "k2-regression-NezhaForSequenceClassification", model, [case]))


def decoder_checkpoint(manifest):
    """is_decoder + add_cross_attention: causal self-attention, cross-attention over as many encoder
    positions as tokens (the only shape upstream's relative term runs), cache returned (not reusable)."""
    model = NezhaModel(NezhaConfig(**BASE, **VARIANTS["k2"], is_decoder=True, add_cross_attention=True))
    randomize_(model, SEED + 77)
    rng = np.random.default_rng(SEED + 77)
    ids, mask = right_padded(rng)
    enc_mask = np.ones((B, T), dtype=np.int64)
    enc_mask[0, 5:] = 0
    enc_mask[2, :2] = 0
    full, _ = head_masks(model.config)
    with_cache = dict(EVERYTHING, use_cache=True)
    cases = [
        Case("causal_defaults", [Step({"input_ids": ids})], "use_cache defaults to config.use_cache=True"),
        Case("causal_no_cache", [Step({"input_ids": ids, "attention_mask": mask}, dict(EVERYTHING, use_cache=False))]),
        Case("cross", [Step({"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types(rng),
                             "encoder_hidden_states": rng.normal(size=(B, T, 12)),
                             "encoder_attention_mask": enc_mask, "head_mask": full}, with_cache)]),
        Case("cross_no_encoder_mask", [Step({"input_ids": ids, "encoder_hidden_states": rng.normal(size=(B, T, 12))},
                                            with_cache)]),
    ]
    manifest.append(write_checkpoint("nezha", "k2-decoder-cross-NezhaModel", model, cases))


def capture(manifest):
    seed_everything(SEED)
    with exact_relative_positions():
        for v, (variant, extra) in enumerate(VARIANTS.items()):
            for c, cls in enumerate(CLASSES):
                cfg = NezhaConfig(**BASE, **extra, num_labels=num_labels(cls))
                model = cls(cfg)
                randomize_(model, SEED + 10 * v + c)
                rng = np.random.default_rng(SEED + 10 * v + c)
                if cls is NezhaForMultipleChoice:
                    cases = multiple_choice_cases(rng, cfg)
                else:
                    cases = common_cases(rng, cfg) + head_cases(rng, cls, cfg)
                manifest.append(write_checkpoint("nezha", f"{variant}-{cls.__name__}", model, cases))
        regression_checkpoint(manifest)
        decoder_checkpoint(manifest)
