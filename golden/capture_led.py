"""Golden tensors for the LED family: every class x window layout x input case, float32 and float64,
plus generate() results (beam search and greedy with a global attention mask).

Window layouts: one window per layer ([8, 4, 8]: smaller than, equal to (the 8-token case) and larger
than the 7-token inputs; every window divides the largest, as upstream's chunking requires) and a
single int window. (Upstream crashes for a window of 2, in `_sliding_chunks_query_key_matmul`.)
Inputs have lengths that are not multiples of the window, right padding, global tokens at the
start, in the middle and on padding, and rows with different numbers of global tokens.

Generation goes to golden/led/generation/: the checkpoint, cases.json (generate() keyword arguments)
and results.safetensors with "<case>/input/<arg>" and "<case>/<dtype>/<field>[.<step>]" for
sequences, scores, sequences_scores and beam_indices (read by tests/test_led.py).
"""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import (LEDConfig, LEDForConditionalGeneration, LEDForQuestionAnswering,
                          LEDForSequenceClassification, LEDModel)

from common import (ROOT, SEED, Case, Step, flatten, randomize_, running_in, seed_everything, to_torch,
                    write_checkpoint)

# All-different small sizes: encoder 3 heads of 5, decoder 5 heads of 3, ffn 20 / 18, vocab 41.
BASE = dict(vocab_size=41, d_model=15, encoder_layers=3, decoder_layers=2, encoder_attention_heads=3,
            decoder_attention_heads=5, encoder_ffn_dim=20, decoder_ffn_dim=18, max_encoder_position_embeddings=40,
            max_decoder_position_embeddings=24, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            decoder_start_token_id=2, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
VARIANTS = {
    "windows-8-4-8": dict(attention_window=[8, 4, 8]),
    "window-6": dict(attention_window=6, encoder_layers=2, activation_function="gelu_new"),
}
CLASSES = [LEDModel, LEDForConditionalGeneration, LEDForSequenceClassification, LEDForQuestionAnswering]
BASE_CLASSES = (LEDModel, LEDForConditionalGeneration)
ALL_CASES = ("defaults", "right_pad_local", "global_start", "global_mixed_counts", "exact_length_8", "long_global",
             "decoder_inputs", "head_masks", "cached_two_steps", "cached_one_token")
KEEP = {  # (variant, base class?) -> the common cases it runs; golden/led stays < 8 MB
    ("windows-8-4-8", True): ALL_CASES,
    ("windows-8-4-8", False): ("defaults", "global_mixed_counts"),
    ("window-6", True): ("defaults", "right_pad_local", "global_mixed_counts", "long_global", "decoder_inputs"),
    ("window-6", False): ("global_mixed_counts",),
}
B, T, T_LONG, T_DEC = 3, 7, 13, 5
EVERYTHING = dict(output_attentions=True, output_hidden_states=True, use_cache=True)
PAD, EOS = 1, 2


def text(rng, lengths, total):  # rows "<s> w w ... </s>" of the given real lengths, right-padded to `total`
    ids = np.full((len(lengths), total), PAD, dtype=np.int64)
    mask = np.zeros((len(lengths), total), dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = np.concatenate([[0], rng.integers(3, BASE["vocab_size"], size=n - 2), [EOS]])
        mask[row, :n] = 1
    return ids, mask


def global_mask(rows, total):  # rows: list of global positions per row
    g = np.zeros((len(rows), total), dtype=np.int64)
    for r, positions in enumerate(rows):
        g[r, positions] = 1
    return g


def decoder_inputs(rng, length=T_DEC):  # right-padded decoder ids and mask (rows of 5, 3, 4 tokens)
    ids = np.concatenate([np.full((B, 1), EOS), rng.integers(3, BASE["vocab_size"], size=(B, length - 1))], axis=1)
    mask = np.ones((B, length), dtype=np.int64)
    for row, n in ((1, 2), (2, 1)):
        ids[row, length - n:] = PAD
        mask[row, length - n:] = 0
    return ids, mask


def common_cases(rng, cfg):
    ids, mask = text(rng, [7, 5, 3], T)
    ids_long, mask_long = text(rng, [13, 9, 11], T_LONG)
    ids8, mask8 = text(rng, [8, 8, 6], 8)
    dec, dec_mask = decoder_inputs(rng)
    g_start = global_mask([[0], [0], [0]], T)
    # row 0: no global token; row 1: start + middle; row 2: middle + one on padding (dropped) + start
    g_mixed = global_mask([[], [0, 3], [0, 1, 5]], T)
    g_long = global_mask([[0, 6], [4], [0, 2, 10, 12]], T_LONG)  # row 2: 12 is padding
    enc_heads = np.ones((cfg.encoder_layers, cfg.encoder_attention_heads))
    enc_heads[0, 1], enc_heads[-1, 2] = 0.0, 0.5
    dec_heads = np.ones((cfg.decoder_layers, cfg.decoder_attention_heads))
    dec_heads[0, 3], dec_heads[1, 0] = 0.0, 0.25
    cross_heads = np.ones((cfg.decoder_layers, cfg.decoder_attention_heads))
    cross_heads[1, 4] = 0.0
    both = {"input_ids": ids, "attention_mask": mask}
    return [
        Case("defaults", [Step({"input_ids": ids})], "no masks; decoder inputs = shift_tokens_right(input_ids)"),
        Case("right_pad_local", [Step(both, EVERYTHING)], "no global token at all: no global columns"),
        Case("global_start", [Step({**both, "global_attention_mask": g_start}, EVERYTHING)]),
        Case("global_mixed_counts", [Step({**both, "global_attention_mask": g_mixed}, EVERYTHING)],
             "0 / 2 / 2 global tokens (one flag on padding is dropped): spare global slots"),
        Case("exact_length_8", [Step({"input_ids": ids8, "attention_mask": mask8,
                                      "global_attention_mask": global_mask([[7], [0, 5], []], 8)}, EVERYTHING)],
             "8 tokens: no window padding for [8, 4, 8]; a global </s> at the end"),
        Case("long_global", [Step({"input_ids": ids_long, "attention_mask": mask_long,
                                   "global_attention_mask": g_long}, EVERYTHING)], "13 tokens, padded to 16"),
        Case("decoder_inputs", [Step({**both, "global_attention_mask": g_mixed, "decoder_input_ids": dec,
                                      "decoder_attention_mask": dec_mask}, EVERYTHING)]),
        Case("head_masks", [Step({**both, "global_attention_mask": g_mixed, "decoder_input_ids": dec,
                                  "head_mask": enc_heads, "decoder_head_mask": dec_heads,
                                  "cross_attn_head_mask": cross_heads}, EVERYTHING)]),
        Case("cached_two_steps", [
            Step({**both, "global_attention_mask": g_start, "decoder_input_ids": dec[:, :3],
                  "decoder_attention_mask": dec_mask[:, :3]}, EVERYTHING),
            Step({**both, "global_attention_mask": g_start, "decoder_input_ids": dec[:, 3:],
                  "decoder_attention_mask": dec_mask}, EVERYTHING, use_past=True),
        ], "3 decoder tokens, then 2 more with the cache and the past + current mask"),
        Case("cached_one_token", [
            Step({**both, "decoder_input_ids": dec[:, :4], "decoder_attention_mask": dec_mask[:, :4]}, EVERYTHING),
            Step({**both, "decoder_input_ids": dec[:, 4:], "decoder_attention_mask": dec_mask}, EVERYTHING,
                 use_past=True),
        ], "a single new decoder token: upstream ignores the decoder mask"),
    ]


def head_cases(rng, cls, cfg):
    ids, mask = text(rng, [7, 6, 4], T)
    g = global_mask([[0], [0, 2], [3]], T)
    if cls is LEDModel:
        embeds = rng.normal(size=(B, T, cfg.d_model))
        dec_embeds = rng.normal(size=(B, 4, cfg.d_model))
        return [Case("inputs_embeds", [Step({"inputs_embeds": embeds, "attention_mask": mask, "global_attention_mask": g,
                                             "decoder_inputs_embeds": dec_embeds}, EVERYTHING)])]
    if cls is LEDForConditionalGeneration:
        labels = ids.copy()
        labels[mask == 0] = -100
        return [Case("labels", [Step({"input_ids": ids, "attention_mask": mask, "global_attention_mask": g,
                                      "labels": labels}, EVERYTHING)], "decoder inputs = shift(labels), no cache")]
    if cls is LEDForSequenceClassification:
        return [
            Case("labels_single", [Step({"input_ids": ids, "attention_mask": mask, "global_attention_mask": g,
                                         "labels": rng.integers(0, 3, size=B)}, EVERYTHING)]),
            Case("labels_multi", [Step({"input_ids": ids, "attention_mask": mask,
                                        "labels": rng.integers(0, 2, size=(B, 3)).astype(np.float64)})]),
        ]
    if cls is LEDForQuestionAnswering:
        return [Case("positions", [Step({"input_ids": ids, "attention_mask": mask, "global_attention_mask": g,
                                         "start_positions": np.array([0, 3, 99]),  # 99 clamps to T: ignored
                                         "end_positions": np.array([[6], [4], [2]])}, EVERYTHING)])]
    raise AssertionError(cls)


# ---------------------------------------------------------------- generation

GEN_ALWAYS = dict(return_dict_in_generate=True, output_scores=True)
GEN_CASES = {  # the documented call: model.generate(inputs, global_attention_mask=..., num_beams=3, max_length=32)
    "beam3_global": dict(num_beams=3, max_length=32),
    "beam3_global_penalty": dict(num_beams=3, max_length=12, length_penalty=0.6, num_return_sequences=2),
    "greedy_global": dict(max_length=10),
}


@torch.no_grad()
def generation(manifest):
    cfg = LEDConfig(**{**BASE, "max_decoder_position_embeddings": 40}, attention_window=[8, 4, 8])
    torch.manual_seed(SEED + 700)
    model = LEDForConditionalGeneration(cfg).eval()
    randomize_(model, SEED + 700)
    directory = ROOT / "led" / "generation"
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    rng = np.random.default_rng(SEED + 700)
    tensors, specs = {}, []
    for name, kwargs in GEN_CASES.items():
        ids, mask = text(rng, [11, 8, 5], 11)
        g = global_mask([[0], [0, 4], [2]], 11)
        arrays = {"input_ids": ids, "attention_mask": mask, "global_attention_mask": g}
        for arg, value in arrays.items():
            tensors[f"{name}/input/{arg}"] = value
        for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
            with running_in(model, torch_dtype):
                out = model.generate(to_torch(ids, torch_dtype), attention_mask=to_torch(mask, torch_dtype),
                                     global_attention_mask=to_torch(g, torch_dtype), **GEN_ALWAYS, **kwargs)
                result = {}
                for field in ("sequences", "scores", "sequences_scores", "beam_indices"):
                    flatten(field, getattr(out, field, None), result)
                for key, value in result.items():
                    tensors[f"{name}/{dtype}/{key}"] = value
        specs.append({"name": name, "arrays": sorted(arrays), "kwargs": {**GEN_ALWAYS, **kwargs}})
    save_file({k: np.array(v, order="C") for k, v in sorted(tensors.items())}, str(directory / "results.safetensors"))
    (directory / "cases.json").write_text(json.dumps({"architecture": "LEDForConditionalGeneration",
                                                      "cases": specs}, indent=1) + "\n")
    manifest.append({"family": "led", "checkpoint": "generation", "architecture": "LEDForConditionalGeneration",
                     "cases": [s["name"] for s in specs], "kind": "generate"})


def regression_checkpoint(manifest):  # num_labels=1: MSE loss on one logit per row
    cfg = LEDConfig(**BASE, attention_window=[8, 4, 8], num_labels=1)
    model = LEDForSequenceClassification(cfg)
    randomize_(model, SEED + 399)
    rng = np.random.default_rng(SEED + 399)
    ids, mask = text(rng, [7, 5, 6], T)
    case = Case("labels_regression", [Step({"input_ids": ids, "attention_mask": mask,
                                            "global_attention_mask": global_mask([[0], [0, 4], []], T),
                                            "labels": rng.normal(size=B)})])
    manifest.append(write_checkpoint("led", "regression-LEDForSequenceClassification", model, [case]))


def capture(manifest):
    seed_everything(SEED)
    for v, (variant, extra) in enumerate(VARIANTS.items()):
        for c, cls in enumerate(CLASSES):
            cfg = LEDConfig(**{**BASE, **extra}, num_labels=3)
            model = cls(cfg)
            randomize_(model, SEED + 300 + 10 * v + c)
            rng = np.random.default_rng(SEED + 300 + 10 * v + c)
            cases = [case for case in common_cases(rng, cfg) if case.name in KEEP[variant, cls in BASE_CLASSES]]
            cases += head_cases(rng, cls, cfg)
            if cls in (LEDForSequenceClassification, LEDForQuestionAnswering):  # no past_key_values argument
                cases = [case for case in cases if not case.name.startswith("cached")]
            if cls is LEDForSequenceClassification:
                # pooling at the last </s> of input_ids (one per row here) reads the decoder states,
                # and the decoder states it pools must be as long as input_ids: no explicit decoder inputs
                cases = [case for case in cases if not any("decoder_input_ids" in st.arrays for st in case.steps)]
            # islands=True: each case once more in float64 with upstream's float32 softmax (its own island)
            manifest.append(write_checkpoint("led", f"{variant}-{cls.__name__}", model, cases, islands=True))
    regression_checkpoint(manifest)
    generation(manifest)
