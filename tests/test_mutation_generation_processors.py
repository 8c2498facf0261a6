"""Logits processors, warpers and torch.sort's order of equal keys (refimpl/generation/processors.py,
torch_sort.py) against live upstream, at the bounds where each one switches on or off.

- build_processors / build_warpers: which processors, in which order, for options at and around their
  thresholds, against upstream's GenerationMixin._get_logits_processor / _get_logits_warper;
- the lists applied to the same scores (float32 and float64) at every sequence length around the lengths where
  a processor starts or stops acting (min lengths, forced tokens, n-gram bans, the decay start, ...);
- torch_sort_order against torch.sort on rows with ties, infinities, NaN and -0.0, including the
  patterns that send libstdc++'s introsort into its heapsort fallback.
"""
import itertools
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_generation_processors_live import upstream_lists as upstream_lists_live  # noqa: E402

from refimpl.generation import GenerationConfig  # noqa: E402
from refimpl.generation.processors import apply_all, build_processors, build_warpers  # noqa: E402
from refimpl.generation.torch_sort import torch_sort_order  # noqa: E402

VOCAB = 12


class ModelConfig:  # what validate() reads of a model's config
    vocab_size, max_position_embeddings = VOCAB, 10 ** 6


def upstream_lists(opts, prompt_length, encoder_ids):  # upstream's GenerationMixin builds the lists
    processors, warpers = upstream_lists_live(opts, prompt_length, encoder_ids)
    return processors, (warpers if opts.get("do_sample") else transformers.LogitsProcessorList())


def our_lists(opts, prompt_length, encoder_ids):
    cfg = GenerationConfig(**opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg.validate(ModelConfig())
    return build_processors(cfg, prompt_length, encoder_ids), (build_warpers(cfg) if cfg.do_sample else [])


NAMES = {  # refimpl's builder -> the upstream classes it stands for
    "sequence_bias": {"SequenceBiasLogitsProcessor", "NoBadWordsLogitsProcessor"},
    "hamming_diversity": {"HammingDiversityLogitsProcessor"},
    "encoder_repetition_penalty": {"EncoderRepetitionPenaltyLogitsProcessor"},
    "repetition_penalty": {"RepetitionPenaltyLogitsProcessor"},
    "no_repeat_ngram": {"NoRepeatNGramLogitsProcessor"},
    "encoder_no_repeat_ngram": {"EncoderNoRepeatNGramLogitsProcessor"},
    "min_length": {"MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor"},
    "forced_token": {"ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor"},
    "remove_invalid_values": {"InfNanRemoveLogitsProcessor"},
    "exponential_decay_length_penalty": {"ExponentialDecayLengthPenalty"},
    "suppress_tokens": {"SuppressTokensLogitsProcessor"},
    "suppress_tokens_at_begin": {"SuppressTokensAtBeginLogitsProcessor"},
    "force_tokens": {"ForceTokensLogitsProcessor"},
    "logit_normalization": {"LogitNormalization"},
    "temperature": {"TemperatureLogitsWarper"}, "top_k": {"TopKLogitsWarper"}, "top_p": {"TopPLogitsWarper"},
    "typical_p": {"TypicalLogitsWarper"}, "epsilon_cutoff": {"EpsilonLogitsWarper"},
    "eta_cutoff": {"EtaLogitsWarper"},
}


def kinds(functions):
    return [f.__qualname__.split(".")[0] for f in functions]


def names_differ(ours, theirs):
    got, expected = kinds(ours), [type(p).__name__ for p in theirs]
    if len(got) != len(expected) or any(e not in NAMES[g] for g, e in zip(got, expected)):
        return f"refimpl builds {got}, upstream {expected}"
    return None


def differ(ours, theirs, where, dtype):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
        return f"{where}: {ours.dtype}{ours.shape} vs upstream {theirs.dtype}{theirs.shape}"
    finite = np.isfinite(theirs)
    if not np.array_equal(np.isfinite(ours), finite) or not np.array_equal(ours[~finite], theirs[~finite],
                                                                          equal_nan=True):
        bad = np.argwhere((np.isfinite(ours) != finite) | (~finite & (ours != theirs) & ~np.isnan(theirs)))
        return f"{where}: inf/NaN pattern differs at {bad[:4].tolist()}"
    diff = np.abs(ours[finite].astype(np.float64) - theirs[finite]) / np.maximum(1, np.abs(theirs[finite]))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    if diff.size and diff.max() > tol:
        return f"{where}: max relative difference {diff.max():.2e}"
    return None


def compare(opts, prompt_length=3, lengths=range(1, 9), encoder_ids=None, scores_scale=3.0, seed=0, rows=2,
            vocab=VOCAB, tied=False):
    """Both lists built from `opts`, then applied to the same scores at each length: problems found."""
    rng = np.random.default_rng(seed)
    encoder_ids = encoder_ids if encoder_ids is not None else rng.integers(0, 4, size=(rows, 5))
    ours_p, ours_w = our_lists(opts, prompt_length, encoder_ids)
    theirs_p, theirs_w = upstream_lists(opts, prompt_length, encoder_ids)
    found = [p for p in (names_differ(ours_p, theirs_p), names_differ(ours_w, theirs_w)) if p]
    if found:
        return [f"{opts}: {found}"]
    total_rows = rows * max(1, opts.get("num_beams", 1))
    for length, dtype in itertools.product(lengths, (np.float32, np.float64)):
        ids = rng.integers(0, 4, size=(total_rows, length))  # few tokens: repeated n-grams
        scores = rng.normal(size=(total_rows, vocab)) * scores_scale
        scores = (np.round(scores) if tied else scores).astype(dtype)  # rounded: runs of equal scores
        scores[0, 5] = scores[0, 6]  # a tie
        ours = apply_all(ours_w, ids, apply_all(ours_p, ids, scores.copy()))
        t_ids = torch.from_numpy(ids)
        with torch.no_grad():
            theirs = theirs_w(t_ids, theirs_p(t_ids, torch.from_numpy(scores.copy()))).numpy()
        problem = differ(ours, theirs, f"{opts} length {length} {dtype.__name__}", dtype)
        if problem:
            found.append(problem)
    return found


PROCESSOR_CASES = [
    dict(sequence_bias={(1,): 1.0, (2, 3): -2.0, (1, 2, 3): 0.5, (0, 1, 2, 3, 1, 2, 0): 4.0}),
    dict(repetition_penalty=1.3), dict(repetition_penalty=0.7), dict(repetition_penalty=1.0),
    dict(repetition_penalty=None), dict(encoder_repetition_penalty=1.4), dict(encoder_repetition_penalty=0.6),
    dict(encoder_repetition_penalty=1.0), dict(encoder_repetition_penalty=None),
    dict(encoder_repetition_penalty=1.4, num_beams=2), dict(encoder_no_repeat_ngram_size=2, num_beams=3),
    dict(no_repeat_ngram_size=1), dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=3),
    dict(no_repeat_ngram_size=0), dict(no_repeat_ngram_size=None),
    dict(encoder_no_repeat_ngram_size=1), dict(encoder_no_repeat_ngram_size=2), dict(encoder_no_repeat_ngram_size=3),
    dict(encoder_no_repeat_ngram_size=0), dict(encoder_no_repeat_ngram_size=None),
    dict(bad_words_ids=[[3], [1, 2], [0, 1, 2]], eos_token_id=2), dict(bad_words_ids=[[2], [3]], eos_token_id=2),
    dict(min_length=4, eos_token_id=2), dict(min_length=4, eos_token_id=[2, 5]), dict(min_length=1, eos_token_id=2),
    dict(min_length=0, eos_token_id=2), dict(min_length=4, eos_token_id=None),
    dict(min_new_tokens=2, eos_token_id=2), dict(min_new_tokens=1, eos_token_id=[2, 7]),
    dict(min_new_tokens=0, eos_token_id=2), dict(min_new_tokens=None, eos_token_id=2),
    dict(min_new_tokens=3, eos_token_id=None),
    dict(forced_bos_token_id=3), dict(forced_bos_token_id=0), dict(forced_eos_token_id=2, max_length=6),
    dict(forced_eos_token_id=[2, 4], max_length=5), dict(forced_eos_token_id=0, max_length=2),
    dict(remove_invalid_values=True), dict(remove_invalid_values=False),
    dict(exponential_decay_length_penalty=(1, 1.5), eos_token_id=2),
    dict(exponential_decay_length_penalty=(0, 0.5), eos_token_id=[2, 3]),
    dict(exponential_decay_length_penalty=(2, 2.0), eos_token_id=-1),
    dict(suppress_tokens=[1, 4]), dict(suppress_tokens=[]),
    dict(begin_suppress_tokens=[1, 4]), dict(begin_suppress_tokens=[2], forced_bos_token_id=3),
    dict(begin_suppress_tokens=[2], forced_decoder_ids=[[1, 5], [3, 6]]),
    dict(forced_decoder_ids=[[1, 5], [3, 6]]), dict(forced_decoder_ids=[[4, 0]]),
    dict(renormalize_logits=True), dict(renormalize_logits=True, suppress_tokens=[3]),
    dict(repetition_penalty=1.2, no_repeat_ngram_size=2, min_length=5, eos_token_id=2, forced_eos_token_id=2,
         max_length=7, renormalize_logits=True, sequence_bias={(1, 1): 2.0}),
]


@pytest.mark.parametrize("opts", PROCESSOR_CASES, ids=[str(o)[:70] for o in PROCESSOR_CASES])
def test_processors_are_upstreams_at_every_length(opts):
    problems = compare(opts, prompt_length=3)
    assert not problems, problems[:3]


@pytest.mark.parametrize("prompt_length", [1, 2, 4])
def test_processors_that_count_from_the_prompt(prompt_length):
    problems = []
    for opts in (dict(min_new_tokens=2, eos_token_id=2),
                 dict(exponential_decay_length_penalty=(1, 1.5), eos_token_id=2),
                 dict(begin_suppress_tokens=[1, 4]), dict(begin_suppress_tokens=[1], forced_bos_token_id=3),
                 dict(begin_suppress_tokens=[1], forced_bos_token_id=3, forced_decoder_ids=[[2, 5]])):
        problems += compare(opts, prompt_length=prompt_length)
    assert not problems, problems[:3]


def test_float_infinities_and_nan_are_replaced_as_upstream():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        scores = rng.normal(size=(3, VOCAB)).astype(dtype)
        scores[0, 1], scores[1, 2], scores[2, 3], scores[2, 4] = np.inf, -np.inf, np.nan, np.inf
        ids = rng.integers(0, 4, size=(3, 2))
        ours_p, _ = our_lists(dict(remove_invalid_values=True), 2, ids)
        theirs_p, _ = upstream_lists(dict(remove_invalid_values=True), 2, ids)
        ours = apply_all(ours_p, ids, scores.copy())
        theirs = theirs_p(torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()
        assert np.array_equal(ours, theirs), (dtype, ours, theirs)


def test_hamming_diversity_is_upstreams_for_every_group():
    from transformers.generation.logits_process import HammingDiversityLogitsProcessor
    from refimpl.generation.processors import hamming_diversity

    rng = np.random.default_rng(4)
    for beams, groups, batch in ((4, 2, 2), (6, 3, 1), (6, 2, 2), (3, 3, 2)):
        size = beams // groups
        current = rng.integers(0, 4, size=batch * beams)
        for g in range(groups):
            for dtype in (np.float32, np.float64):
                scores = rng.normal(size=(batch * size, VOCAB)).astype(dtype)
                ids = rng.integers(0, 4, size=(batch * size, 3))
                ours = hamming_diversity(0.75, beams, groups)(ids, scores.copy(), current, g)
                theirs = HammingDiversityLogitsProcessor(0.75, beams, groups)(
                    torch.from_numpy(ids), torch.from_numpy(scores.copy()), torch.from_numpy(current), g).numpy()
                assert differ(ours, theirs, f"beams {beams} groups {groups} group {g}", dtype) is None


WARPER_CASES = [
    dict(temperature=0.7), dict(temperature=1.0), dict(temperature=None), dict(temperature=1.6),
    dict(top_k=1), dict(top_k=3), dict(top_k=VOCAB), dict(top_k=VOCAB + 5), dict(top_k=0), dict(top_k=None),
    dict(top_p=0.5), dict(top_p=0.9), dict(top_p=1.0), dict(top_p=None), dict(top_p=0.01),
    dict(typical_p=0.5), dict(typical_p=0.95), dict(typical_p=1.0), dict(typical_p=None), dict(typical_p=0.01),
    dict(epsilon_cutoff=0.05), dict(epsilon_cutoff=0.3), dict(epsilon_cutoff=0.0), dict(epsilon_cutoff=None),
    dict(epsilon_cutoff=0.9),
    dict(eta_cutoff=0.05), dict(eta_cutoff=0.3), dict(eta_cutoff=0.0), dict(eta_cutoff=None), dict(eta_cutoff=0.9),
    dict(renormalize_logits=True, top_k=4, top_p=0.8),
    dict(temperature=0.5, top_k=5, top_p=0.7, typical_p=0.9, epsilon_cutoff=0.01, eta_cutoff=0.01),
]


@pytest.mark.parametrize("beams, eos", [(1, None), (2, 2), (2, [2, 5]), (3, [1, 2, 3]), (2, None)])
@pytest.mark.parametrize("opts", WARPER_CASES, ids=[str(o)[:60] for o in WARPER_CASES])
def test_warpers_are_upstreams_and_keep_what_beam_sampling_needs(opts, beams, eos):
    base = dict(top_k=0) if "top_k" not in opts else {}
    full = dict(do_sample=True, num_beams=beams, eos_token_id=eos, **base, **opts)
    problems = []
    for scale in (0.5, 3.0, 12.0):  # flat to peaked: the min-keep rules decide in peaked rows
        problems += compare(full, lengths=[2], scores_scale=scale, seed=int(scale * 10))
    assert not problems, problems[:3]


@pytest.mark.parametrize("opts", [dict(top_p=0.5), dict(top_p=0.8), dict(typical_p=0.5), dict(typical_p=0.9),
                                  dict(top_p=0.6, typical_p=0.7)], ids=str)
def test_sorting_warpers_cut_runs_of_equal_scores_as_torch_sorts_them(opts):
    """More than 16 tokens (torch.sort is then not stable: libstdc++'s introsort partitions above 16 entries
    and insertion-sorts up to 16) with many equal scores: where the cut falls inside a run of equal scores,
    which of them survive is torch.sort's order (torch_sort.py). 16 and 17 tokens are the two sides of that
    bound."""
    problems = []
    for vocab in (16, 17, 40):
        for beams, seed in ((1, 0), (2, 1), (1, 2), (2, 3), (1, 4), (1, 5)):
            full = dict(do_sample=True, top_k=0, num_beams=beams, eos_token_id=2, **opts)
            problems += compare(full, lengths=[2], scores_scale=1.5, seed=seed, vocab=vocab, rows=4, tied=True)
    assert not problems, problems[:3]


def test_a_decay_past_the_float_range_makes_eos_certain():
    """ExponentialDecayLengthPenalty with factor ** steps beyond the float range: the eos scores grow without
    bound, +inf (upstream's Python float power raises OverflowError instead)."""
    from refimpl.generation.processors import exponential_decay_length_penalty

    for dtype in (np.float32, np.float64):
        scores = np.array([[-2.0, 1.5, 3.0], [0.5, -1.0, 2.0]], dtype)
        out = exponential_decay_length_penalty(0, 1e300, [0, 1], 1)(np.zeros((2, 4), np.int64), scores.copy())
        assert np.array_equal(out[:, :2], np.full((2, 2), np.inf, dtype)) and np.array_equal(out[:, 2], scores[:, 2])
        assert out.dtype == dtype


# --- torch.sort's order of equal keys ----------------------------------------------------------------------

def _rows():
    rng = np.random.default_rng(7)
    for n in list(range(1, 40)) + [64, 100, 257]:
        yield f"ties {n}", rng.integers(0, 4, size=n).astype(np.float32)
        yield f"two values {n}", rng.integers(0, 2, size=n).astype(np.float32)
        yield f"descending {n}", np.sort(rng.integers(0, 5, size=n))[::-1].astype(np.float32)
        specials = rng.integers(0, 3, size=n).astype(np.float32)
        specials[rng.random(n) < 0.2] = np.nan
        specials[rng.random(n) < 0.2] = -np.inf
        specials[rng.random(n) < 0.1] = np.inf
        specials[rng.random(n) < 0.2] = -0.0  # equal to 0.0
        yield f"nan/inf/-0 {n}", specials
    for n in (200, 400, 401, 1000):  # organ pipes: introsort's depth runs out, heapsort takes over
        half = np.arange(n // 2)
        yield f"organ pipe {n}", np.concatenate([half, half[::-1], [0] * (n % 2)]).astype(np.float32)
        yield f"organ pipe with ties {n}", (np.concatenate([half, half[::-1], [0] * (n % 2)]) // 3).astype(np.float32)


def test_torch_sort_order_is_torchs():
    wrong = []
    for name, keys in _rows():
        expected = torch.sort(torch.from_numpy(keys)).indices.tolist()
        got = torch_sort_order(keys.tolist())
        if got != expected:
            first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            wrong.append(f"{name}: first difference at {first} (ours {got[first]}, torch {expected[first]})")
    assert not wrong, wrong[:5]
