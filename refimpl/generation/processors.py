"""Logits processors and warpers (transformers 4.37.2 `generation/logits_process.py`).

Each is a function (input_ids [N, S], scores [N, V]) -> scores [N, V], built by `build_processors` /
`build_warpers` in upstream's order (GenerationMixin._get_logits_processor / _get_logits_warper). Scores are
modified in place where upstream modifies them in place. Arithmetic follows upstream's dtypes: a Python float
meeting a float32 tensor is rounded to float32 first; the biases of SequenceBias and the diversity penalty are
float32 tensors upstream, so they are float32-rounded even in a float64 run. The values given here are
checked by GenerationConfig.validate before anything is built.
"""
from __future__ import annotations

import math

import numpy as np

from ..ops import log_softmax, softmax
from .config import GenerationConfig, _without_eos, eos_list
from .torch_sort import torch_sort_order


def _set(scores, tokens, value):  # scores[:, tokens] = value (in place)
    scores[:, list(tokens)] = value
    return scores


# --- processors (the order below is upstream's) -----------------------------------------------------------

def sequence_bias(bias: dict):  # SequenceBiasLogitsProcessor: bias {(token, ...): float}
    """Adds `bias` to the last token of every key whose other tokens end the sequence; a one-token key always."""
    single = [(key[0], np.float32(b)) for key, b in bias.items() if len(key) == 1]
    longer = [(np.array(key[:-1], dtype=np.int64), key[-1], np.float32(b)) for key, b in bias.items() if len(key) > 1]

    def apply(ids, scores):
        vocab = scores.shape[-1]
        length_1_bias = np.zeros(vocab, dtype=np.float32)  # [V]; upstream: torch.zeros(..., dtype=torch.float)
        for token, b in single:
            length_1_bias[token] = b
        total = np.zeros_like(scores)  # [N, V]
        total += length_1_bias
        for prefix, last, b in longer:
            if len(prefix) + 1 > ids.shape[1]:  # the sequence is longer than the context
                continue
            match = np.all(ids[:, ids.shape[1] - len(prefix):] == prefix, axis=1)  # [N]
            total[:, last] += np.where(match, b, np.float32(0.0))
        return scores + total
    return apply


def hamming_diversity(penalty, num_beams, num_beam_groups):  # HammingDiversityLogitsProcessor
    """Group beam search: a group's scores lose penalty * (how often the earlier groups of the same input chose
    each token at this step). Called with current_tokens [B * num_beams] and beam_group_idx."""
    sub_beams = num_beams // num_beam_groups

    def apply(ids, scores, current_tokens, beam_group_idx):
        batch = current_tokens.shape[0] // num_beams
        start = beam_group_idx * sub_beams
        group_size = min(start + sub_beams, num_beams) - start
        if start == 0:
            return scores
        for b in range(batch):
            previous = current_tokens[b * num_beams: b * num_beams + start]  # tokens of the earlier groups
            frequency = np.bincount(previous, minlength=scores.shape[-1]).astype(scores.dtype)  # [V]
            # upstream: penalty * an int64 tensor, in torch's default dtype (the scores' dtype in refimpl's runs)
            scores[b * group_size:(b + 1) * group_size] -= scores.dtype.type(penalty) * frequency
        return scores
    apply.takes_group = True
    return apply


def encoder_repetition_penalty(penalty, encoder_ids):  # EncoderRepetitionPenaltyLogitsProcessor
    """Favours (penalty > 1) the tokens of the encoder input (of the prompt, for a decoder-only model).
    encoder_ids [B, T] as upstream keeps them, not expanded: upstream's torch.gather / scatter_ with a [B, T]
    index touch the first B rows of the [B * beams, V] scores only, and so does this."""
    inverse = 1 / penalty  # upstream stores 1 / penalty

    def apply(ids, scores):
        rows = scores[:encoder_ids.shape[0]]  # [B, V] view
        seen = np.take_along_axis(rows, encoder_ids, axis=1)  # [B, T]
        p = scores.dtype.type(inverse)
        np.put_along_axis(rows, encoder_ids, np.where(seen < 0, seen * p, seen / p), axis=1)
        return scores
    return apply


def repetition_penalty(penalty):  # RepetitionPenaltyLogitsProcessor
    def apply(ids, scores):
        seen = np.take_along_axis(scores, ids, axis=1)  # [N, S], the logits of tokens already present
        p = scores.dtype.type(penalty)
        np.put_along_axis(scores, ids, np.where(seen < 0, seen * p, seen / p), axis=1)
        return scores
    return apply


def _ngrams(n, tokens):  # _get_ngrams for one row: {(n-1 tokens): [tokens that followed them]}
    table = {}
    if n > len(tokens):  # no n-gram (and no n slices built for a huge n)
        return table
    for gram in zip(*[tokens[i:] for i in range(n)]):
        table.setdefault(tuple(gram[:-1]), []).append(gram[-1])
    return table


def _banned(table, tokens, n):  # _get_generated_ngrams: what followed the last n-1 tokens (Python slicing)
    length = len(tokens)
    return table.get(tuple(tokens[length + 1 - n:length]), [])


def no_repeat_ngram(n):  # NoRepeatNGramLogitsProcessor: an n-gram may occur once in the whole sequence
    def apply(ids, scores):
        if ids.shape[1] + 1 < n:
            return scores
        for row, tokens in enumerate(ids.tolist()):
            scores[row, _banned(_ngrams(n, tokens), tokens, n)] = -np.inf
        return scores
    return apply


def encoder_no_repeat_ngram(n, encoder_ids):  # EncoderNoRepeatNGramLogitsProcessor
    """No n-gram of the encoder input (of the prompt, for a decoder-only model) is repeated; row i of the
    [B * beams, V] scores belongs to input i // beams."""
    tables = [_ngrams(n, row) for row in encoder_ids.tolist()]

    def apply(ids, scores):
        beams = scores.shape[0] // len(tables)
        for row, tokens in enumerate(ids.tolist()):
            scores[row, _banned(tables[row // beams], tokens, n)] = -np.inf
        return scores
    return apply


def bad_words(bad_words_ids, eos):  # NoBadWordsLogitsProcessor: a SequenceBias of -inf; [eos] is never banned
    return sequence_bias({tuple(word): float("-inf") for word in _without_eos(bad_words_ids, eos)})


def min_length(minimum, eos, prompt_length=0):  # MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor
    def apply(ids, scores):
        if ids.shape[1] - prompt_length < minimum:
            _set(scores, eos_list(eos), -np.inf)
        return scores
    return apply


def forced_token(token, at_length):  # ForcedBOSTokenLogitsProcessor / ForcedEOSTokenLogitsProcessor
    """At length `at_length` (1 for BOS, max_length - 1 for EOS) only `token` (a token or a list) may come."""
    def apply(ids, scores):
        if ids.shape[1] == at_length:
            scores[:] = -np.inf
            _set(scores, eos_list(token), 0)
        return scores
    return apply


def remove_invalid_values():  # InfNanRemoveLogitsProcessor: nan -> 0, +-inf -> the largest finite values
    def apply(ids, scores):
        info = np.finfo(scores.dtype)
        scores[np.isnan(scores)] = 0.0
        scores[scores == np.inf] = info.max
        scores[scores == -np.inf] = info.min
        return scores
    return apply


def exponential_decay_length_penalty(start, factor, eos, prompt_length):  # ExponentialDecayLengthPenalty
    """After `start` new tokens, eos scores grow by |score| * (factor ** (tokens past start) - 1)."""
    regulation_start = start + prompt_length

    def apply(ids, scores):
        steps = ids.shape[1] - regulation_start
        if steps > 0:
            try:
                growth = math.pow(factor, steps) - 1
            except OverflowError:  # upstream: a Python OverflowError; refimpl: the float overflow, inf
                growth = math.inf
            for token in eos_list(eos):
                scores[:, token] = scores[:, token] + np.abs(scores[:, token]) * scores.dtype.type(growth)
        return scores
    return apply


def suppress_tokens(tokens):  # SuppressTokensLogitsProcessor
    return lambda ids, scores: _set(scores, tokens, -np.inf)


def suppress_tokens_at_begin(tokens, begin_index):  # SuppressTokensAtBeginLogitsProcessor
    def apply(ids, scores):
        return _set(scores, tokens, -np.inf) if ids.shape[1] == begin_index else scores
    return apply


def force_tokens(forced_decoder_ids):  # ForceTokensLogitsProcessor: {generation index: the only allowed token}
    forced = dict((index, token) for index, token in forced_decoder_ids)

    def apply(ids, scores):
        token = forced.get(ids.shape[1])
        if token is not None:
            scores[:] = -np.inf
            scores[:, token] = 0
        return scores
    return apply


def logit_normalization():  # LogitNormalization: log_softmax, always last
    return lambda ids, scores: log_softmax(scores)


# --- warpers (sampling) ---------------------------------------------------------------------------------

def temperature(t):  # TemperatureLogitsWarper
    return lambda ids, scores: scores / scores.dtype.type(t)


def _kth_largest(scores, k):  # [N, V] -> [N, 1]: torch.topk(scores, k)[0][..., -1, None] (NaN is the largest)
    index = scores.shape[-1] - min(k, scores.shape[-1])
    return np.partition(scores, index, axis=-1)[:, index:index + 1]


def _cumulative_probs(sorted_scores):  # softmax(...).cumsum(-1): torch's CPU cumsum accumulates in double
    return np.cumsum(softmax(sorted_scores).astype(np.float64), axis=-1).astype(sorted_scores.dtype)


def _filter(scores, remove):  # masked_fill(remove, -inf), a new array
    return np.where(remove, scores.dtype.type(-np.inf), scores)


def _unsort(remove_sorted, order):  # scatter(1, sorted_indices, sorted_indices_to_remove)
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return remove


def top_k(k, min_keep=1):  # TopKLogitsWarper
    k = max(k, min_keep)
    return lambda ids, scores: _filter(scores, scores < _kth_largest(scores, k))


def _sorted_removal(keys, decide):  # -> remove [N, V] bool, in token order
    """The sorting warpers: `decide(order)` flags tokens for removal in the order of torch.sort(keys) (ascending).
    refimpl sorts stably; where equal keys get different flags (the cut falls inside a run of equal keys), the
    result depends on torch's own order of equal keys, so those rows are re-sorted as torch sorts (torch_sort.py)."""
    order = np.argsort(keys, axis=-1, kind="stable")  # [N, V]
    remove_sorted = decide(order)
    sorted_keys = np.take_along_axis(keys, order, axis=-1)
    after, before = sorted_keys[:, 1:], sorted_keys[:, :-1]
    equal_next = (after == before) | np.isnan(after) & np.isnan(before)  # [N, V - 1]
    rows = np.flatnonzero((equal_next & (remove_sorted[:, 1:] != remove_sorted[:, :-1])).any(axis=-1))
    if rows.size and keys.shape[-1] > 16:  # up to 16 entries std::sort is an insertion sort: stable
        for r in rows:
            order[r] = torch_sort_order(keys[r].tolist())
        remove_sorted = decide(order)
    return _unsort(remove_sorted, order)


def top_p(p, min_keep=1):  # TopPLogitsWarper: drop the low tail whose total probability is <= 1 - p
    def apply(ids, scores):
        def decide(order):  # [N, V] ascending -> remove flags in that order
            cumulative = _cumulative_probs(np.take_along_axis(scores, order, axis=-1))
            remove_sorted = cumulative <= scores.dtype.type(1 - p)
            remove_sorted[:, -min_keep:] = False
            return remove_sorted
        return _filter(scores, _sorted_removal(scores, decide))
    return apply


def typical_p(mass, min_keep=1):  # TypicalLogitsWarper (locally typical sampling)
    def apply(ids, scores):
        normalized = log_softmax(scores)  # [N, V]
        p = np.exp(normalized)
        entropy = -np.nansum(normalized * p, axis=-1, keepdims=True)  # [N, 1]
        shifted = np.abs(-normalized - entropy)  # how far each token's surprise is from the entropy

        def decide(order):  # [N, V] most typical first -> remove flags in that order
            sorted_shifted = np.take_along_axis(shifted, order, axis=-1)
            cumulative = _cumulative_probs(np.take_along_axis(scores, order, axis=-1))
            last = np.minimum((cumulative < scores.dtype.type(mass)).sum(axis=1), scores.shape[-1] - 1)  # [N]
            remove_sorted = sorted_shifted > np.take_along_axis(sorted_shifted, last[:, None], axis=1)
            remove_sorted[:, :min_keep] = False
            return remove_sorted
        return _filter(scores, _sorted_removal(shifted, decide))
    return apply


def epsilon_cutoff(epsilon, min_keep=1):  # EpsilonLogitsWarper: drop tokens of probability < epsilon
    def apply(ids, scores):
        remove = softmax(scores) < scores.dtype.type(epsilon)
        return _filter(scores, remove & (scores < _kth_largest(scores, min_keep)))
    return apply


def eta_cutoff(epsilon, min_keep=1):  # EtaLogitsWarper: drop tokens of probability < min(eps, sqrt(eps) e^-H)
    eps32 = np.float32(epsilon)  # upstream: torch.tensor(epsilon), float32, and its sqrt in float32
    root32 = np.sqrt(eps32)

    def apply(ids, scores):
        dtype = scores.dtype.type
        probabilities = softmax(scores)
        normalized = np.maximum(log_softmax(scores), np.finfo(scores.dtype).min)  # Categorical(logits=...)
        entropy = -(normalized * probabilities).sum(axis=-1)  # [N]
        eta = np.minimum(dtype(eps32), dtype(root32) * np.exp(-entropy))[:, None]  # [N, 1]
        return _filter(scores, (probabilities < eta) & (scores < _kth_largest(scores, min_keep)))
    return apply


# --- the lists -----------------------------------------------------------------------------------------

def build_processors(cfg: GenerationConfig, prompt_length: int, encoder_input_ids=None):
    """GenerationMixin._get_logits_processor: the processors `cfg` asks for, in upstream's order.
    prompt_length: upstream's input_ids_seq_length (the decoder's start for an encoder-decoder model);
    encoder_input_ids [B, T]: upstream's inputs_tensor (LED's encoder input, or a decoder-only prompt)."""
    eos = cfg.eos_token_id
    procs = []
    if cfg.sequence_bias is not None:
        procs.append(sequence_bias(cfg.sequence_bias))
    if cfg.diversity_penalty is not None and cfg.diversity_penalty > 0.0:
        procs.append(hamming_diversity(cfg.diversity_penalty, cfg.num_beams, cfg.num_beam_groups))
    if cfg.encoder_repetition_penalty is not None and cfg.encoder_repetition_penalty != 1.0:
        procs.append(encoder_repetition_penalty(cfg.encoder_repetition_penalty,
                                                _encoder_ids(encoder_input_ids, "encoder_repetition_penalty")))
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        procs.append(repetition_penalty(cfg.repetition_penalty))
    if cfg.no_repeat_ngram_size is not None and cfg.no_repeat_ngram_size > 0:
        procs.append(no_repeat_ngram(cfg.no_repeat_ngram_size))
    if cfg.encoder_no_repeat_ngram_size is not None and cfg.encoder_no_repeat_ngram_size > 0:
        procs.append(encoder_no_repeat_ngram(cfg.encoder_no_repeat_ngram_size,
                                             _encoder_ids(encoder_input_ids, "encoder_no_repeat_ngram_size")))
    if cfg.bad_words_ids is not None:
        procs.append(bad_words(cfg.bad_words_ids, eos))
    if cfg.min_length is not None and eos is not None and cfg.min_length > 0:
        procs.append(min_length(cfg.min_length, eos))
    if cfg.min_new_tokens is not None and eos is not None and cfg.min_new_tokens > 0:
        procs.append(min_length(cfg.min_new_tokens, eos, prompt_length))
    if cfg.forced_bos_token_id is not None:
        procs.append(forced_token(cfg.forced_bos_token_id, 1))
    if cfg.forced_eos_token_id is not None:
        procs.append(forced_token(cfg.forced_eos_token_id, cfg.max_length - 1))
    if cfg.remove_invalid_values is True:
        procs.append(remove_invalid_values())
    if cfg.exponential_decay_length_penalty is not None:
        start, factor = cfg.exponential_decay_length_penalty
        procs.append(exponential_decay_length_penalty(start, factor, eos, prompt_length))
    if cfg.suppress_tokens is not None:
        procs.append(suppress_tokens(cfg.suppress_tokens))
    if cfg.begin_suppress_tokens is not None:
        begin = prompt_length if prompt_length > 1 or cfg.forced_bos_token_id is None else prompt_length + 1
        if cfg.forced_decoder_ids is not None:
            begin += cfg.forced_decoder_ids[-1][0]  # generation starts after the last forced token
        procs.append(suppress_tokens_at_begin(cfg.begin_suppress_tokens, begin))
    if cfg.forced_decoder_ids is not None:
        procs.append(force_tokens(cfg.forced_decoder_ids))
    if cfg.renormalize_logits is True:
        procs.append(logit_normalization())
    return procs


def build_warpers(cfg: GenerationConfig):
    """GenerationMixin._get_logits_warper (sampling): beam sampling keeps at least one non-eos token
    (min_keep = len(eos list) + 1, or 2 when eos_token_id is not a list)."""
    if cfg.num_beams > 1:
        min_keep = len(cfg.eos_token_id) + 1 if isinstance(cfg.eos_token_id, list) else 2
    else:
        min_keep = 1
    warpers = []
    if cfg.temperature is not None and cfg.temperature != 1.0:
        warpers.append(temperature(cfg.temperature))
    if cfg.top_k is not None and cfg.top_k != 0:
        warpers.append(top_k(cfg.top_k, min_keep))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        warpers.append(top_p(cfg.top_p, min_keep))
    if cfg.typical_p is not None and cfg.typical_p < 1.0:
        warpers.append(typical_p(cfg.typical_p, min_keep))
    if cfg.epsilon_cutoff is not None and 0.0 < cfg.epsilon_cutoff < 1.0:
        warpers.append(epsilon_cutoff(cfg.epsilon_cutoff, min_keep))
    if cfg.eta_cutoff is not None and 0.0 < cfg.eta_cutoff < 1.0:
        warpers.append(eta_cutoff(cfg.eta_cutoff, min_keep))
    if cfg.renormalize_logits is True:
        warpers.append(logit_normalization())
    return warpers


def _encoder_ids(encoder_input_ids, option):  # [B, T] int64, or a clear error
    if encoder_input_ids is None:
        raise ValueError(f"{option} needs the encoder input ids (upstream's inputs_tensor)")
    return np.asarray(encoder_input_ids, dtype=np.int64)


def apply_all(functions, ids, scores, **group):
    """Applies the processors in order. `group` (group beam search only: current_tokens, beam_group_idx) is
    passed to the processors that take it (HammingDiversityLogitsProcessor)."""
    for f in functions:
        scores = f(ids, scores, **group) if getattr(f, "takes_group", False) else f(ids, scores)
    return scores
