"""Golden generate() results of the decoding strategies beyond greedy/beam (capture_generation.py): contrastive
search, group beam search, constrained beam search, beam sampling, and dict outputs with attentions and hidden
states, for OPT, XGLM and LED, float32 and float64.

Writes golden/generation_strategies/<family>/ in capture_generation.py's layout (checkpoint, cases.json,
results.safetensors with "<case>/input/<arg>" and "<case>/<dtype>/<field>[.<step>[.<layer>]]"), plus, for
sampled cases, upstream's torch.multinomial calls: "<case>/<dtype>/draw_probs.<i>" (the probabilities) and
"<case>/<dtype>/draws.<i>" (the drawn indices), which tests/test_generation.py replays through refimpl's draw
seam. cases.json "arrays" lists each case's array arguments besides input_ids and attention_mask.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import (LEDConfig, LEDForConditionalGeneration, OPTConfig, OPTForCausalLM, XGLMConfig,
                          XGLMForCausalLM)

from capture_xglm import correctly_rounded_sinusoid
from common import ROOT, SEED, flatten, randomize_, running_in, to_torch

EOS, PAD, BOS = 2, 1, 0
_TOKENS = dict(eos_token_id=EOS, pad_token_id=PAD, bos_token_id=BOS, dropout=0.0, attention_dropout=0.0)
MODELS = {
    "opt": lambda: OPTForCausalLM(OPTConfig(vocab_size=29, hidden_size=12, num_hidden_layers=2, ffn_dim=20,
                                            num_attention_heads=3, max_position_embeddings=40, **_TOKENS)),
    "xglm": lambda: XGLMForCausalLM(XGLMConfig(vocab_size=29, d_model=12, num_layers=2, ffn_dim=20, attention_heads=3,
                                               max_position_embeddings=40, **_TOKENS)),
    "led": lambda: LEDForConditionalGeneration(LEDConfig(
        vocab_size=29, d_model=12, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
        decoder_attention_heads=3, encoder_ffn_dim=20, decoder_ffn_dim=20, max_encoder_position_embeddings=32,
        max_decoder_position_embeddings=32, attention_window=4, decoder_start_token_id=EOS, **_TOKENS)),
}
ALWAYS = dict(return_dict_in_generate=True, output_scores=True)
DICT = dict(output_attentions=True, output_hidden_states=True)
CASES = {
    "contrastive": dict(penalty_alpha=0.6, top_k=4, max_new_tokens=6),
    "contrastive_processors_dict": dict(penalty_alpha=0.4, top_k=3, max_new_tokens=5, repetition_penalty=1.3,
                                        no_repeat_ngram_size=2, **DICT),
    "group_beam4x2": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.3, num_return_sequences=2,
                          max_new_tokens=6),
    "group_beam6x3_early": dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.5, early_stopping=True,
                                max_new_tokens=7, **DICT),
    "constrained_phrase": dict(num_beams=3, force_words_ids=[[5, 7]], max_new_tokens=6),
    "constrained_disjunctive": dict(num_beams=4, force_words_ids=[[[9], [11, 12]], [6]],
                                    max_new_tokens=8, no_repeat_ngram_size=3),
    "beam_sample": dict(do_sample=True, num_beams=3, top_k=10, max_new_tokens=5, num_return_sequences=2),
    "sample_dict": dict(do_sample=True, top_k=0, temperature=0.8, max_new_tokens=4, num_return_sequences=2, **DICT),
    "greedy_dict": dict(max_new_tokens=4, **DICT),
    "beam_dict": dict(num_beams=3, max_new_tokens=4, **DICT),
}
LED_CASES = {
    "greedy_decoder_prefix": dict(max_new_tokens=4),  # + decoder_input_ids (arrays)
    "beam_decoder_prefix_with_start": dict(num_beams=2, max_new_tokens=4),  # + decoder_input_ids starting with eos
    "greedy_head_masks": dict(max_new_tokens=4, **DICT),  # + head_mask, decoder_head_mask, cross_attn_head_mask
}
FIELDS = ("sequences", "sequences_scores", "scores", "beam_indices", "attentions", "hidden_states",
          "encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
          "decoder_hidden_states")


@contextlib.contextmanager
def float64_group_beam_scores():
    """Upstream's group_beam_search keeps its beam scores in a float32 tensor (`torch.full(..., -1e9,
    dtype=torch.float)`) and fails in float64 runs when it assigns float64 scores into it. Inside, that tensor
    is float64 in a float64 run: the computation refimpl reproduces (refimpl/generation/group_beam.py)."""
    original = torch.full

    def full(size, fill_value, *args, dtype=None, **kwargs):
        if dtype == torch.float32 and fill_value == -1e9 and torch.get_default_dtype() == torch.float64:
            dtype = torch.float64
        return original(size, fill_value, *args, dtype=dtype, **kwargs)

    torch.full = full
    try:
        yield
    finally:
        torch.full = original


@contextlib.contextmanager
def recorded_multinomial(calls):
    """Upstream's torch.multinomial, recording (probabilities, drawn indices) of every call."""
    original = torch.multinomial

    def multinomial(input, num_samples, replacement=False, *, generator=None):
        drawn = original(input, num_samples, replacement, generator=generator)
        calls.append((input.detach().numpy().copy(), drawn.numpy().copy()))
        return drawn

    torch.multinomial = multinomial
    try:
        yield
    finally:
        torch.multinomial = original


@contextlib.contextmanager
def upstream_in(model, family, dtype: torch.dtype):
    """Upstream in dtype; in float64 without its float32 islands (XGLM's sinusoid table, LED's softmax, group
    beam search's scores): the exact computation refimpl reproduces."""
    with contextlib.ExitStack() as stack:
        if family == "xglm":
            stack.enter_context(correctly_rounded_sinusoid())
        stack.enter_context(running_in(model, dtype))
        if dtype == torch.float64:
            stack.enter_context(float64_group_beam_scores())
        yield


def prompts(rng, family, vocab):  # decoder-only: left padding (5, 3, 4 real tokens); LED: right padding
    ids = rng.integers(3, vocab, size=(3, 5))
    mask = np.ones((3, 5), dtype=np.int64)
    for row, pads in ((1, 2), (2, 1)):
        if family == "led":
            ids[row, 5 - pads:], mask[row, 5 - pads:] = PAD, 0
        else:
            ids[row, :pads], mask[row, :pads] = PAD, 0
    return ids, mask


def led_arrays(name, rng, vocab):
    if name == "greedy_decoder_prefix":
        return {"decoder_input_ids": rng.integers(3, vocab, size=(3, 2))}
    if name == "beam_decoder_prefix_with_start":
        prefix = rng.integers(3, vocab, size=(3, 3))
        prefix[:, 0] = EOS
        return {"decoder_input_ids": prefix}
    masks = {}
    for arg in ("head_mask", "decoder_head_mask", "cross_attn_head_mask"):
        masks[arg] = (rng.random((2, 3)) < 0.6).astype(np.float64)
        masks[arg][:, 0] = 1.0
    return masks


@torch.no_grad()
def run(model, family, arrays, kwargs, dtype):
    calls = []
    with upstream_in(model, family, dtype), recorded_multinomial(calls):
        out = model.generate(**{k: to_torch(v, dtype) for k, v in arrays.items()}, **ALWAYS, **kwargs)
    result = {}
    for name in FIELDS:
        flatten(name, getattr(out, name, None), result)
    for i, (probs, drawn) in enumerate(calls):
        result[f"draw_probs.{i}"], result[f"draws.{i}"] = probs, drawn
    return result


def capture(manifest):
    for f, (family, build) in enumerate(MODELS.items()):
        torch.manual_seed(SEED + 700 + f)
        model = build().eval()
        randomize_(model, SEED + 800 + f)
        directory = ROOT / "generation_strategies" / family
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory, safe_serialization=True)
        rng = np.random.default_rng(SEED + 900 + f)
        cases = {**CASES, **(LED_CASES if family == "led" else {})}
        tensors, extra_arrays = {}, {}
        for name, kwargs in cases.items():
            ids, mask = prompts(rng, family, model.config.vocab_size)
            arrays = {"input_ids": ids, "attention_mask": mask}
            if name in LED_CASES:
                arrays.update(led_arrays(name, rng, model.config.vocab_size))
            extra_arrays[name] = sorted(set(arrays) - {"input_ids", "attention_mask"})
            for arg, value in arrays.items():
                tensors[f"{name}/input/{arg}"] = value
            for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
                for key, value in run(model, family, arrays, kwargs, torch_dtype).items():
                    tensors[f"{name}/{dtype}/{key}"] = value
        save_file({k: np.array(v, order="C") for k, v in sorted(tensors.items())},
                  str(directory / "results.safetensors"))
        (directory / "cases.json").write_text(json.dumps(
            {"architecture": type(model).__name__, "always": ALWAYS, "cases": cases, "arrays": extra_arrays},
            indent=1) + "\n")
        manifest.append({"family": family, "checkpoint": family, "architecture": type(model).__name__,
                         "cases": list(cases), "kind": "generate"})
