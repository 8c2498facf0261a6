"""Logits processors and warpers (transformers 4.37.2 `generation/logits_process.py`).

Each is a function (input_ids [N, S], scores [N, V]) -> scores, applied in upstream's order
(GenerationMixin._get_logits_processor / _get_logits_warper). Scores are modified in place, as upstream does.
"""
from __future__ import annotations

import numpy as np

from ..ops import softmax
from .config import GenerationConfig, eos_list


def repetition_penalty(penalty):  # RepetitionPenaltyLogitsProcessor
    def apply(ids, scores):
        seen = np.take_along_axis(scores, ids, axis=1)  # [N, S], the logits of tokens already present
        seen = np.where(seen < 0, seen * scores.dtype.type(penalty), seen / scores.dtype.type(penalty))
        np.put_along_axis(scores, ids, seen, axis=1)
        return scores
    return apply


def no_repeat_ngram(n):  # NoRepeatNGramLogitsProcessor: an n-gram may occur once in the whole sequence
    def apply(ids, scores):
        length = ids.shape[1]
        if length + 1 < n:
            return scores
        for row, tokens in enumerate(ids.tolist()):
            prefix = tuple(tokens[length + 1 - n:])
            banned = [gram[-1] for gram in zip(*[tokens[i:] for i in range(n)]) if tuple(gram[:-1]) == prefix]
            scores[row, banned] = -np.inf
        return scores
    return apply


def bad_words(bad_words_ids, eos):  # NoBadWordsLogitsProcessor (a SequenceBiasLogitsProcessor of -inf)
    sequences = [list(seq) for seq in bad_words_ids if not any(seq == [e] for e in eos)]

    def apply(ids, scores):
        for seq in sequences:
            if len(seq) == 1:
                scores[:, seq[0]] = -np.inf
            elif len(seq) - 1 <= ids.shape[1]:
                match = np.all(ids[:, ids.shape[1] - (len(seq) - 1):] == np.array(seq[:-1]), axis=1)
                scores[match, seq[-1]] = -np.inf
        return scores
    return apply


def min_length(minimum, eos, prompt_length=0):  # MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor
    def apply(ids, scores):
        if ids.shape[1] - prompt_length < minimum:
            scores[:, eos] = -np.inf
        return scores
    return apply


def forced_token(token, at_length):  # ForcedBOSTokenLogitsProcessor / ForcedEOSTokenLogitsProcessor
    tokens = eos_list(token)

    def apply(ids, scores):
        if ids.shape[1] == at_length:
            scores[:] = -np.inf
            scores[:, tokens] = 0
        return scores
    return apply


def temperature(t):  # TemperatureLogitsWarper
    return lambda ids, scores: scores / scores.dtype.type(t)


def top_k(k, min_keep=1):  # TopKLogitsWarper
    k = max(k, min_keep)

    def apply(ids, scores):
        kth = -np.sort(-scores, axis=-1)[:, min(k, scores.shape[-1]) - 1:min(k, scores.shape[-1])]  # [N, 1]
        return np.where(scores < kth, -np.inf, scores).astype(scores.dtype)
    return apply


def top_p(p, min_keep=1):  # TopPLogitsWarper: drop the low tail whose total probability is <= 1 - p
    def apply(ids, scores):
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending
        sorted_scores = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(softmax(sorted_scores), axis=-1)
        remove_sorted = cumulative <= scores.dtype.type(1 - p)
        remove_sorted[:, -min_keep:] = False
        remove = np.zeros_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)
        return np.where(remove, -np.inf, scores).astype(scores.dtype)
    return apply


def hamming_diversity(penalty, num_beams, num_beam_groups):  # HammingDiversityLogitsProcessor (group beam search)
    # (i13a: a bridge until i13c's processors.py is merged; keep i13c's version)
    size = num_beams // num_beam_groups

    def apply(ids, scores, current_tokens, beam_group_idx):
        if beam_group_idx == 0:
            return scores
        for b in range(current_tokens.shape[0] // num_beams):
            previous = current_tokens[b * num_beams:b * num_beams + beam_group_idx * size]
            # upstream: penalty * bincount is in torch's default dtype (float64 in the float64 runs refimpl follows)
            frequency = np.bincount(previous, minlength=scores.shape[-1]).astype(scores.dtype)
            scores[b * size:(b + 1) * size] -= scores.dtype.type(penalty) * frequency
        return scores
    apply.takes_group = True
    return apply


def build_processors(cfg: GenerationConfig, prompt_length: int, encoder_input_ids=None):
    eos = eos_list(cfg.eos_token_id)
    procs = []
    if cfg.diversity_penalty is not None and cfg.diversity_penalty > 0.0:
        procs.append(hamming_diversity(cfg.diversity_penalty, cfg.num_beams, cfg.num_beam_groups))
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        procs.append(repetition_penalty(cfg.repetition_penalty))
    if cfg.no_repeat_ngram_size:
        procs.append(no_repeat_ngram(cfg.no_repeat_ngram_size))
    if cfg.bad_words_ids is not None:
        procs.append(bad_words(cfg.bad_words_ids, eos))
    if cfg.min_length and eos:
        procs.append(min_length(cfg.min_length, eos))
    if cfg.min_new_tokens and eos:
        procs.append(min_length(cfg.min_new_tokens, eos, prompt_length))
    if cfg.forced_bos_token_id is not None:
        procs.append(forced_token(cfg.forced_bos_token_id, 1))
    if cfg.forced_eos_token_id is not None:
        procs.append(forced_token(cfg.forced_eos_token_id, cfg.max_length - 1))
    return procs


def build_warpers(cfg: GenerationConfig):  # GenerationMixin._get_logits_warper (sampling only)
    min_keep = 1 if cfg.num_beams == 1 else len(eos_list(cfg.eos_token_id)) + 1
    warpers = []
    if cfg.temperature is not None and cfg.temperature != 1.0:
        if not cfg.temperature > 0:
            raise ValueError(f"temperature must be a strictly positive float, got {cfg.temperature}")
        warpers.append(temperature(cfg.temperature))
    if cfg.top_k is not None and cfg.top_k != 0:
        warpers.append(top_k(cfg.top_k, min_keep))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        warpers.append(top_p(cfg.top_p, min_keep))
    return warpers


def apply_all(functions, ids, scores, **group):
    """Applies the processors in order. `group` (group beam search only: current_tokens, beam_group_idx) is
    passed to the processors that take it (HammingDiversityLogitsProcessor)."""
    for f in functions:
        scores = f(ids, scores, **group) if getattr(f, "takes_group", False) else f(ids, scores)
    return scores
