"""Golden tensors for the OPT family: every class x config variant x input case, float32 and float64."""
from __future__ import annotations

import numpy as np
from transformers import (OPTConfig, OPTForCausalLM, OPTForQuestionAnswering, OPTForSequenceClassification,
                          OPTModel)

from common import SEED, Case, Step, randomize_, seed_everything, write_checkpoint

# Small, all-different sizes so a swapped axis cannot pass: 3 heads of 4, ffn 20, vocab 37, 2 layers.
BASE = dict(vocab_size=37, hidden_size=12, num_hidden_layers=2, ffn_dim=20, num_attention_heads=3,
            max_position_embeddings=24, pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0)
VARIANTS = {
    "preln": dict(),
    "postln-proj": dict(do_layer_norm_before=False, word_embed_proj_dim=10),  # the opt-350m layout
    "nobias-noaffine": dict(enable_bias=False, layer_norm_elementwise_affine=False),
}
CLASSES = [OPTModel, OPTForCausalLM, OPTForSequenceClassification, OPTForQuestionAnswering]
B, T = 3, 7
EVERYTHING = dict(output_attentions=True, output_hidden_states=True, use_cache=True)


def token_ids(rng, batch=B, length=T):  # avoid the pad id 1 inside text so pooling stays meaningful
    ids = rng.integers(3, BASE["vocab_size"], size=(batch, length))
    return ids


def right_padded(rng):  # row 0 unpadded, rows 1-2 padded on the right
    ids, mask = token_ids(rng), np.ones((B, T), dtype=np.int64)
    for row, n in ((1, 2), (2, 4)):
        ids[row, T - n:] = 1
        mask[row, T - n:] = 0
    return ids, mask


def left_padded(rng):  # row 1 unpadded, rows 0 and 2 padded on the left
    ids, mask = token_ids(rng), np.ones((B, T), dtype=np.int64)
    for row, n in ((0, 3), (2, 1)):
        ids[row, :n] = 1
        mask[row, :n] = 0
    return ids, mask


def common_cases(rng, cfg):
    ids_r, mask_r = right_padded(rng)
    ids_l, mask_l = left_padded(rng)
    head_mask = np.ones((cfg.num_hidden_layers, cfg.num_attention_heads))
    head_mask[0, 1] = 0.0
    head_mask[1, 2] = 0.5
    return [
        Case("defaults", [Step({"input_ids": token_ids(rng)})], "no mask, default outputs"),
        Case("right_pad", [Step({"input_ids": ids_r, "attention_mask": mask_r}, EVERYTHING)]),
        Case("left_pad", [Step({"input_ids": ids_l, "attention_mask": mask_l}, EVERYTHING)],
             "left-pad rows see a uniform softmax over every key (finfo.min masks)"),
        Case("head_mask", [Step({"input_ids": ids_r, "attention_mask": mask_r, "head_mask": head_mask}, EVERYTHING)]),
        Case("cached_two_steps", [
            Step({"input_ids": ids_l[:, :4], "attention_mask": mask_l[:, :4]}, EVERYTHING),
            Step({"input_ids": ids_l[:, 4:], "attention_mask": mask_l}, EVERYTHING, use_past=True),
        ], "prefix of 4 then 3 new tokens with the past + current mask"),
        Case("cached_one_token", [
            Step({"input_ids": ids_r[:, :6], "attention_mask": mask_r[:, :6]}, EVERYTHING),
            Step({"input_ids": ids_r[:, 6:], "attention_mask": mask_r}, EVERYTHING, use_past=True),
        ], "a single new token: upstream builds no causal part"),
    ]


def head_cases(rng, cls, cfg):
    ids, mask = right_padded(rng)
    if cls is OPTModel:
        embeds = rng.normal(size=(B, T, cfg.word_embed_proj_dim))
        return [Case("inputs_embeds", [Step({"inputs_embeds": embeds, "attention_mask": mask}, EVERYTHING)])]
    if cls is OPTForCausalLM:
        labels = ids.copy()
        labels[mask == 0] = -100
        return [Case("labels", [Step({"input_ids": ids, "attention_mask": mask, "labels": labels}, EVERYTHING)])]
    if cls is OPTForSequenceClassification:
        embeds = rng.normal(size=(B, T, cfg.word_embed_proj_dim))
        inner_pad = ids.copy()
        inner_pad[0, 2] = 1  # a pad id inside the text: upstream pools at position 1 (quirk)
        return [
            Case("labels_single", [Step({"input_ids": ids, "attention_mask": mask,
                                         "labels": rng.integers(0, 3, size=B)}, EVERYTHING)]),
            Case("labels_multi", [Step({"input_ids": ids, "attention_mask": mask,
                                        "labels": rng.integers(0, 2, size=(B, 3)).astype(np.float64)})]),
            Case("pad_inside_text", [Step({"input_ids": inner_pad})]),
            Case("inputs_embeds", [Step({"inputs_embeds": embeds})], "pools the last position"),
        ]
    if cls is OPTForQuestionAnswering:
        return [Case("positions", [Step({"input_ids": ids, "attention_mask": mask,
                                         "start_positions": np.array([0, 3, 99]),  # 99 clamps to T: ignored
                                         "end_positions": np.array([[6], [4], [2]])}, EVERYTHING)])]
    raise AssertionError(cls)


def regression_checkpoint(manifest):
    cfg = OPTConfig(**BASE, num_labels=1)
    model = OPTForSequenceClassification(cfg)
    randomize_(model, SEED + 99)
    rng = np.random.default_rng(SEED + 99)
    ids, mask = right_padded(rng)
    case = Case("labels_regression", [Step({"input_ids": ids, "attention_mask": mask, "labels": rng.normal(size=B)})])
    manifest.append(write_checkpoint("opt", "preln-regression-OPTForSequenceClassification", model, [case]))


def capture(manifest):
    seed_everything(SEED)
    for v, (variant, extra) in enumerate(VARIANTS.items()):
        for c, cls in enumerate(CLASSES):
            cfg = OPTConfig(**BASE, **extra, num_labels=3)
            model = cls(cfg)
            randomize_(model, SEED + 10 * v + c)
            rng = np.random.default_rng(SEED + 10 * v + c)
            cases = common_cases(rng, cfg) + head_cases(rng, cls, cfg)
            if cls is OPTForQuestionAnswering:  # its output carries no past_key_values to continue from
                cases = [case for case in cases if not case.name.startswith("cached")]
            manifest.append(write_checkpoint("opt", f"{variant}-{cls.__name__}", model, cases))
    regression_checkpoint(manifest)
