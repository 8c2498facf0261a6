"""Logits processors and warpers (refimpl/generation/processors.py) against hand-worked cases and independent
formulations (loops over tokens and rows, the definitions in upstream's docstrings), float32 and float64.
The comparison with upstream's own lists is tests/test_generation_processors_live.py."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from refimpl.generation import GenerationConfig
from refimpl.generation.processors import (
    apply_all, bad_words, build_processors, build_warpers, encoder_no_repeat_ngram, encoder_repetition_penalty,
    epsilon_cutoff, eta_cutoff, exponential_decay_length_penalty, force_tokens, forced_token, hamming_diversity,
    logit_normalization, min_length, no_repeat_ngram, remove_invalid_values, repetition_penalty, sequence_bias,
    suppress_tokens, suppress_tokens_at_begin, temperature, top_k, top_p, typical_p)

DTYPES = (np.float32, np.float64)
SETTINGS = settings(max_examples=60, deadline=None)
INF = np.inf


# ------------------------------------------------------------------------------------- hand-worked cases

@pytest.mark.parametrize("dtype", DTYPES)
def test_repetition_penalty_divides_positive_and_multiplies_negative_logits(dtype):
    scores = np.array([[2.0, -2.0, 1.0], [2.0, -2.0, 1.0]], dtype)
    out = repetition_penalty(2.0)(np.array([[0, 1], [2, 2]]), scores)
    np.testing.assert_array_equal(out, np.array([[1.0, -4.0, 1.0], [2.0, -2.0, 0.5]], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_encoder_repetition_penalty_favours_encoder_tokens_in_the_first_batch_rows_only(dtype):
    scores = np.array([[2.0, -2.0, 1.0]] * 4, dtype)  # batch 2 x 2 beams: upstream touches rows 0 and 1 only
    out = encoder_repetition_penalty(2.0, np.array([[0, 1], [2, 2]]))(None, scores)
    expected = np.array([[4.0, -1.0, 1.0], [2.0, -2.0, 2.0], [2.0, -2.0, 1.0], [2.0, -2.0, 1.0]], dtype)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forced_tokens_leave_one_token_at_zero(dtype):
    ids = np.zeros((2, 3), dtype=np.int64)
    cases = ((forced_token(4, 3), [4]), (forced_token([1, 2], 3), [1, 2]), (force_tokens([[3, 0], [5, 1]]), [0]))
    for f, token in cases:
        out = f(ids, np.ones((2, 6), dtype))
        assert (out[:, token] == 0).all() and np.isneginf(np.delete(out, token, axis=1)).all()
    untouched = forced_token(4, 2)(ids, np.ones((2, 6), dtype))  # another length: nothing happens
    assert (untouched == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_min_length_bans_every_eos_until_the_length_is_reached(dtype):
    for length, banned in ((3, True), (4, False)):
        out = min_length(4, [1, 3])(np.zeros((1, length), np.int64), np.zeros((1, 5), dtype))
        assert np.isneginf(out[0, [1, 3]]).all() == banned and (out[0, [0, 2, 4]] == 0).all()
    out = min_length(2, 1, prompt_length=3)(np.zeros((1, 4), np.int64), np.zeros((1, 5), dtype))  # 1 new token < 2
    assert np.isneginf(out[0, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_remove_invalid_values_writes_the_float_extremes(dtype):
    out = remove_invalid_values()(None, np.array([[np.nan, INF, -INF, 1.5]], dtype))
    info = np.finfo(dtype)
    np.testing.assert_array_equal(out, np.array([[0.0, info.max, info.min, 1.5]], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_exponential_decay_raises_eos_scores_after_the_start(dtype):
    f = exponential_decay_length_penalty(start=2, factor=2.0, eos=[1], prompt_length=3)  # regulation starts at 5
    before = f(np.zeros((1, 5), np.int64), np.array([[1.0, -3.0]], dtype))
    np.testing.assert_array_equal(before, np.array([[1.0, -3.0]], dtype))
    after = f(np.zeros((1, 7), np.int64), np.array([[1.0, -3.0]], dtype))  # 2 past: -3 + 3 * (2 ** 2 - 1) = 6
    np.testing.assert_array_equal(after, np.array([[1.0, 6.0]], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_suppress_tokens_always_and_at_the_beginning_only(dtype):
    ids = np.zeros((1, 3), np.int64)
    assert np.isneginf(suppress_tokens([0, 2])(ids, np.zeros((1, 4), dtype))[0, [0, 2]]).all()
    assert np.isneginf(suppress_tokens_at_begin([1], 3)(ids, np.zeros((1, 4), dtype))[0, 1])
    assert (suppress_tokens_at_begin([1], 2)(ids, np.zeros((1, 4), dtype)) == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_hamming_diversity_penalises_the_tokens_earlier_groups_chose(dtype):
    f = hamming_diversity(0.5, num_beams=4, num_beam_groups=2)  # 2 groups of 2 beams, batch 1
    current = np.array([3, 3, 0, 0])  # group 0 chose token 3 twice
    first = apply_all([f], None, np.zeros((2, 5), dtype), current_tokens=current, beam_group_idx=0)
    assert (first == 0).all(), "the first group is never penalised"
    second = apply_all([f], None, np.zeros((2, 5), dtype), current_tokens=current, beam_group_idx=1)
    np.testing.assert_array_equal(second, np.tile(np.array([0, 0, 0, -1.0, 0], dtype), (2, 1)))


def test_bad_words_never_ban_a_lone_eos_and_need_the_whole_prefix():
    f = bad_words([[2], [4], [1, 3]], eos=2)
    out = f(np.array([[0, 1], [1, 0]]), np.zeros((2, 5)))
    assert np.isneginf(out[:, 4]).all() and (out[:, 2] == 0).all()
    assert np.isneginf(out[0, 3]) and out[1, 3] == 0


# ------------------------------------------------------------------------------ independent formulations

@st.composite
def ids_and_scores(draw, max_vocab=8, max_len=7, rows_max=3):
    vocab = draw(st.integers(2, max_vocab))
    n, length = draw(st.integers(1, rows_max)), draw(st.integers(1, max_len))
    ids = np.array(draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length),
                                 min_size=n, max_size=n)), dtype=np.int64)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    scores = np.random.default_rng(seed).normal(0, 2, size=(n, vocab))
    return vocab, ids, scores


@SETTINGS
@given(ids_and_scores(), st.integers(1, 4))
def test_no_repeat_ngram_bans_exactly_the_tokens_that_would_repeat_an_ngram(data, n):
    vocab, ids, scores = data
    out = no_repeat_ngram(n)(ids, scores.copy())
    for r, row in enumerate(ids.tolist()):
        grams = {tuple(row[i:i + n]) for i in range(len(row) - n + 1)}
        for t in range(vocab):
            repeats = len(row) + 1 >= n and tuple((row + [t])[len(row) + 1 - n:]) in grams
            assert np.isneginf(out[r, t]) == repeats or np.isneginf(scores[r, t]), (row, n, t)


@SETTINGS
@given(ids_and_scores(), st.integers(1, 3), st.integers(1, 3), st.data())
def test_encoder_no_repeat_ngram_bans_the_encoders_ngrams(data, n, beams, more):
    vocab, ids, scores = data
    batch = ids.shape[0]
    length = more.draw(st.integers(1, 6))
    encoder = np.array(more.draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length),
                                          min_size=batch, max_size=batch)))
    ids, scores = np.repeat(ids, beams, axis=0), np.repeat(scores, beams, axis=0)
    out = encoder_no_repeat_ngram(n, encoder)(ids, scores.copy())
    for r, row in enumerate(ids.tolist()):
        enc = encoder[r // beams].tolist()
        grams = {tuple(enc[i:i + n]) for i in range(len(enc) - n + 1)}
        for t in range(vocab):
            banned = len(row) + 1 >= n and tuple((row + [t])[len(row) + 1 - n:]) in grams
            assert np.isneginf(out[r, t]) == banned, (row, enc, n, t)


@SETTINGS
@given(ids_and_scores(), st.dictionaries(st.lists(st.integers(0, 7), min_size=1, max_size=3).map(tuple),
                                         st.floats(-3, 3), min_size=1, max_size=5), st.sampled_from(DTYPES))
def test_sequence_bias_adds_each_bias_where_its_prefix_ends_the_sequence(data, bias, dtype):
    vocab, ids, scores = data
    bias = {k: v for k, v in bias.items() if max(k) < vocab}
    if not bias:
        return
    scores = scores.astype(dtype)
    out = sequence_bias(bias)(ids, scores.copy())
    expected = scores.astype(np.float64)
    for r, row in enumerate(ids.tolist()):
        added = np.zeros(vocab)
        for key, b in bias.items():
            if len(key) == 1 or len(key) <= len(row) and tuple(row[len(row) - len(key) + 1:]) == key[:-1]:
                added[key[-1]] += float(np.float32(b))  # upstream's biases are float32 tensors
        expected[r] += added
    np.testing.assert_allclose(out, expected.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)


@SETTINGS
@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 30), st.integers(1, 35), st.integers(1, 3), st.sampled_from(DTYPES))
def test_top_k_keeps_the_k_largest(seed, vocab, k, min_keep, dtype):
    scores = np.random.default_rng(seed).normal(size=(3, vocab)).astype(dtype)
    out = top_k(k, min_keep)(None, scores.copy())
    keep = min(max(k, min_keep), vocab)
    for r in range(3):
        ranked = np.argsort(-scores[r])
        assert set(np.flatnonzero(np.isfinite(out[r]))) == set(ranked[:keep].tolist())
        np.testing.assert_array_equal(out[r, ranked[:keep]], scores[r, ranked[:keep]])


def scores_and_probs(seed, vocab):  # 2 rows of random logits [2, V] and their softmax
    scores = np.random.default_rng(seed).normal(0, 2, size=(2, vocab))
    return scores, np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)


def mass_at_or_below(probs, i):  # sum of the probabilities of tokens scoring no higher than token i
    return probs[probs <= probs[i]].sum()


@SETTINGS
@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 30), st.floats(0.01, 0.99), st.integers(1, 3))
def test_top_p_removes_the_low_tail_of_mass_at_most_one_minus_p(seed, vocab, p, min_keep):
    scores, probs = scores_and_probs(seed, vocab)
    out = top_p(p, min_keep)(None, scores.copy())
    for r in range(2):
        top = set(np.argsort(-scores[r])[:min_keep].tolist())
        for i in range(vocab):
            tail = mass_at_or_below(probs[r], i)
            if abs(tail - (1 - p)) < 1e-9:
                continue  # on the boundary: rounding decides
            assert np.isneginf(out[r, i]) == (tail <= 1 - p and i not in top), (r, i, tail, p)


@SETTINGS
@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 30), st.floats(0.05, 0.99), st.integers(1, 3))
def test_typical_p_keeps_the_most_typical_tokens_until_mass(seed, vocab, mass, min_keep):
    scores, probs = scores_and_probs(seed, vocab)
    out = typical_p(mass, min_keep)(None, scores.copy())
    for r in range(2):
        entropy = -(probs[r] * np.log(probs[r])).sum()
        order = np.argsort(np.abs(-np.log(probs[r]) - entropy))  # most typical first
        kept, total = [], 0.0
        for i in order:  # up to and including the token that makes the mass reach `mass`
            kept.append(i)
            total += probs[r, i]
            if total >= mass:
                break
        if abs(total - mass) < 1e-9:
            continue
        kept = set(kept) | set(order[:min_keep].tolist())
        assert set(np.flatnonzero(np.isfinite(out[r]))) == kept


@SETTINGS
@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 30), st.floats(0.001, 0.3), st.integers(1, 3))
def test_epsilon_and_eta_cutoffs_remove_improbable_tokens(seed, vocab, epsilon, min_keep):
    scores, probs = scores_and_probs(seed, vocab)
    entropy = -(probs * np.log(probs)).sum(-1, keepdims=True)
    eps32 = float(np.float32(epsilon))
    eta = np.minimum(eps32, float(np.sqrt(np.float32(epsilon))) * np.exp(-entropy))
    for f, cut in ((epsilon_cutoff(epsilon, min_keep), eps32), (eta_cutoff(epsilon, min_keep), eta)):
        out = f(None, scores.copy())
        top = np.argsort(-scores, axis=-1)[:, :min_keep]
        expected = probs < cut
        np.put_along_axis(expected, top, False, axis=-1)
        assert (np.isneginf(out) == expected).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_temperature_and_normalization(dtype):
    scores = np.array([[1.0, 2.0, 4.0]], dtype)
    np.testing.assert_array_equal(temperature(2.0)(None, scores.copy()), scores / dtype(2.0))
    out = logit_normalization()(None, scores.copy())
    assert out.dtype == dtype and abs(float(np.log(np.exp(out.astype(np.float64)).sum())) - 0) < 1e-6


def test_beam_sampling_keeps_at_least_one_token_besides_eos():  # upstream's min_tokens_to_keep
    scores = np.log(np.array([[0.6, 0.25, 0.1, 0.05]]))
    for eos, beams, kept in ((None, 1, 1), (None, 2, 2), (3, 2, 2), ([2, 3], 2, 3), ([2, 3], 1, 1)):
        cfg = GenerationConfig(do_sample=True, top_k=1, num_beams=beams, eos_token_id=eos)
        assert np.isfinite(apply_all(build_warpers(cfg), None, scores.copy())).sum() == kept, (eos, beams)


def test_renormalize_is_the_last_processor_and_the_last_warper():
    cfg = GenerationConfig(renormalize_logits=True, do_sample=True, temperature=0.5, top_k=0,
                           sequence_bias={(1,): 3.0})
    procs, warps = build_processors(cfg, 1, np.zeros((1, 1), np.int64)), build_warpers(cfg)
    scores = np.array([[0.0, 1.0, 2.0]])
    after = apply_all(procs, np.zeros((1, 1), np.int64), scores.copy())
    np.testing.assert_allclose(np.exp(after).sum(), 1.0)
    np.testing.assert_allclose(apply_all(warps, None, after), np.log(np.exp(after * 2) / np.exp(after * 2).sum()))


def test_begin_suppression_index_follows_upstreams_rule():
    """begin index = prompt length, + 1 after a forced BOS on a one-token start, + the last forced index."""
    scores = np.zeros((1, 5))
    for kwargs, prompt, begin in (({}, 3, 3), ({"forced_bos_token_id": 0}, 1, 2), ({"forced_bos_token_id": 0}, 3, 3),
                                  ({"forced_decoder_ids": [[1, 4], [2, 4]]}, 1, 3)):
        cfg = GenerationConfig(begin_suppress_tokens=[3], **kwargs)
        f = [p for p in build_processors(cfg, prompt) if p.__qualname__.startswith("suppress_tokens_at_begin")][0]
        for length in range(1, 6):
            assert np.isneginf(f(np.zeros((1, length), np.int64), scores.copy())[0, 3]) == (length == begin)


def test_exponential_decay_overflow_is_inf_not_an_exception():
    f = exponential_decay_length_penalty(0, 1e300, [0], 0)
    out = f(np.zeros((1, 3), np.int64), np.array([[1.0, 1.0]]))
    assert out[0, 0] == math.inf


def test_huge_ngram_sizes_cost_nothing():
    ids, encoder = np.array([[1, 2, 1, 2]]), np.array([[1, 2, 3]])
    for f in (no_repeat_ngram(10 ** 12), encoder_no_repeat_ngram(10 ** 12, encoder)):
        assert (f(ids, np.zeros((1, 4))) == 0).all()
