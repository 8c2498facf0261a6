"""Golden generate() results for the decoder-only families (OPT, XGLM): token ids and scores of
greedy search and beam search on left-padded batches, float32 and float64.

Writes golden/generation/<family>/: the checkpoint (save_pretrained), cases.json (prompt arrays are
in results.safetensors under "<case>/input/..."; generate() keyword arguments in the JSON) and
results.safetensors with "<case>/<dtype>/<field>[.<step>]" for sequences, scores, sequences_scores
and beam_indices.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import OPTConfig, OPTForCausalLM, XGLMConfig, XGLMForCausalLM

from capture_xglm import correctly_rounded_sinusoid
from common import ROOT, SEED, flatten, randomize_, running_in, to_torch

MODELS = {
    "opt": lambda: OPTForCausalLM(OPTConfig(vocab_size=29, hidden_size=12, num_hidden_layers=2, ffn_dim=20,
                                            num_attention_heads=3, max_position_embeddings=40, dropout=0.0)),
    "xglm": lambda: XGLMForCausalLM(XGLMConfig(vocab_size=29, d_model=12, num_layers=2, ffn_dim=20, attention_heads=3,
                                               max_position_embeddings=40, dropout=0.0, attention_dropout=0.0)),
}
ALWAYS = dict(return_dict_in_generate=True, output_scores=True)
CASES = {
    "greedy": dict(max_new_tokens=7),
    "greedy_processors": dict(max_new_tokens=7, min_new_tokens=5, repetition_penalty=1.4, bad_words_ids=[[7], [8, 9]],
                              no_repeat_ngram_size=3),
    "greedy_forced_eos": dict(max_length=12, forced_eos_token_id=2, min_length=9),
    "beam3_length_penalty": dict(num_beams=3, max_new_tokens=8, length_penalty=0.7, num_return_sequences=2),
    "beam3_ngram_minlen_eos": dict(num_beams=3, max_new_tokens=8, no_repeat_ngram_size=2, min_length=10,
                                   forced_eos_token_id=2),
    "beam4_early_stopping": dict(num_beams=4, max_new_tokens=9, early_stopping=True, length_penalty=1.5),
    "beam2_never": dict(num_beams=2, max_new_tokens=6, early_stopping="never", length_penalty=-0.5),
}


def prompts(rng, vocab):  # a left-padded batch: rows of 5, 3 and 4 real tokens
    ids = rng.integers(3, vocab, size=(3, 5))
    mask = np.ones((3, 5), dtype=np.int64)
    for row, pads in ((1, 2), (2, 1)):
        ids[row, :pads] = 1
        mask[row, :pads] = 0
    return ids, mask


@torch.no_grad()
def run(model, ids, mask, kwargs, dtype):
    out = model.generate(to_torch(ids, dtype), attention_mask=to_torch(mask, dtype), **ALWAYS, **kwargs)
    result = {}
    for name in ("sequences", "scores", "sequences_scores", "beam_indices"):
        flatten(name, getattr(out, name, None), result)
    return result


def capture(manifest):
    # XGLM's sinusoid table as in capture_xglm.py: correctly rounded float32 for float32 runs, exact float64 for
    # float64 runs (upstream's float32 island removed); OPT is unaffected.
    with correctly_rounded_sinusoid():
        capture_all(manifest)


def capture_all(manifest):
    for f, (family, build) in enumerate(MODELS.items()):
        torch.manual_seed(SEED + f)
        model = build().eval()
        randomize_(model, SEED + 500 + f)
        directory = ROOT / "generation" / family
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory, safe_serialization=True)
        rng = np.random.default_rng(SEED + 500 + f)
        tensors = {}
        for name, kwargs in CASES.items():
            ids, mask = prompts(rng, model.config.vocab_size)
            tensors[f"{name}/input/input_ids"], tensors[f"{name}/input/attention_mask"] = ids, mask
            for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
                with running_in(model, torch_dtype):
                    for key, value in run(model, ids, mask, kwargs, torch_dtype).items():
                        tensors[f"{name}/{dtype}/{key}"] = value
        save_file({k: np.array(v, order="C") for k, v in sorted(tensors.items())}, str(directory / "results.safetensors"))
        (directory / "cases.json").write_text(json.dumps({"architecture": type(model).__name__, "always": ALWAYS,
                                                          "cases": CASES}, indent=1) + "\n")
        manifest.append({"family": family, "checkpoint": family, "architecture": type(model).__name__,
                         "cases": list(CASES), "kind": "generate"})
