"""Every decoding strategy of generate() against live upstream on chosen cases at the points where the
search changes course: when beams finish (early_stopping True / False / "never" with positive, zero and
negative length penalties), several eos tokens, as many return sequences as beams, groups of one beam,
constraints met early or never, contrastive search's returned cache, sampling with several sequences, batches
with padding, and no cache. Every field of the dict output is compared (tests/test_generation_strategies_live.py's
comparison: token ids and beam indices exactly, scores, attentions, hidden states and caches within float
tolerance), float32 and float64.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from test_generation_strategies_live import EOS, PAD, check, model_pair  # noqa: E402

VOCAB = 24


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutation-strategies")
    return lambda family, vocab, seed: model_pair(family, vocab, seed, str(root / f"{family}-{vocab}-{seed}"))


def prompt(family, batch=2, length=4, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=(batch, length))
    mask = np.ones_like(ids)
    if batch > 1:
        if family == "led":  # right padding
            mask[1, length - 1:] = 0
        else:  # left padding
            mask[1, :1] = 0
        ids[mask == 0] = PAD
    return dict(input_ids=ids, attention_mask=mask)


DICT = dict(return_dict_in_generate=True, output_scores=True)
ALL = dict(DICT, output_attentions=True, output_hidden_states=True)

CASES = {
    "greedy": dict(max_new_tokens=5, **ALL),
    "greedy no cache": dict(max_new_tokens=3, use_cache=False, **DICT),
    "greedy two eos": dict(max_new_tokens=6, eos_token_id=[EOS, 5], pad_token_id=PAD, min_new_tokens=2, **DICT),
    "sample": dict(do_sample=True, top_k=5, num_return_sequences=2, max_new_tokens=4, **ALL),
    "contrastive": dict(penalty_alpha=0.6, top_k=3, max_new_tokens=4, **ALL),
    "contrastive alpha 1": dict(penalty_alpha=1.0, top_k=2, max_new_tokens=3, **DICT),
    "beam early": dict(num_beams=3, early_stopping=True, num_return_sequences=3, max_new_tokens=6, **ALL),
    "beam heuristic": dict(num_beams=3, early_stopping=False, length_penalty=2.0, max_new_tokens=6, **DICT),
    "beam never": dict(num_beams=2, early_stopping="never", length_penalty=1.5, num_return_sequences=2,
                       max_new_tokens=6, **DICT),
    "beam never negative": dict(num_beams=3, early_stopping="never", length_penalty=-1.0, max_new_tokens=5, **DICT),
    "beam zero penalty": dict(num_beams=2, length_penalty=0.0, max_new_tokens=5, **DICT),
    "beam two eos": dict(num_beams=2, eos_token_id=[EOS, 7], pad_token_id=PAD, max_new_tokens=5, **DICT),
    "beam sample": dict(num_beams=2, do_sample=True, top_k=0, max_new_tokens=4, **DICT),
    "group beam": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.5, num_return_sequences=2,
                       max_new_tokens=5, **ALL),
    "group beam of ones": dict(num_beams=3, num_beam_groups=3, diversity_penalty=0.3, max_new_tokens=4, **DICT),
    "constrained": dict(num_beams=3, force_words_ids=[[5, 6], [[7], [8, 9]]], max_new_tokens=6,
                        num_return_sequences=2, **ALL),
    "constrained objects": dict(num_beams=2, constraints=[("phrase", [9]), ("disjunctive", [[4, 5], [11]])],
                                max_new_tokens=5, **DICT),
    "contrastive top_k 1 is greedy": dict(penalty_alpha=0.6, top_k=1, max_new_tokens=3, **DICT),
    "contrastive alpha 0 is greedy": dict(penalty_alpha=0.0, top_k=3, max_new_tokens=3, **DICT),
    "contrastive without cache": dict(penalty_alpha=0.6, top_k=3, max_new_tokens=3, use_cache=False),
    "constrained far apart": dict(num_beams=3, force_words_ids=[[5], [[7], [8, 9]]], repetition_penalty=60.0,
                                  max_new_tokens=6, **DICT),
    "beam dict without scores": dict(num_beams=2, return_dict_in_generate=True, output_attentions=True,
                                     max_new_tokens=3),
    "greedy dict hidden states only": dict(return_dict_in_generate=True, output_hidden_states=True, max_new_tokens=3),
    "constrained never met": dict(num_beams=2, force_words_ids=[[5, 6, 7, 8, 9, 10]], max_new_tokens=3,
                                  num_return_sequences=2, **DICT),
}


@pytest.mark.parametrize("name", list(CASES))
def test_strategy_cases_match_upstream(models, name):
    kwargs = dict(prompt("opt"), **CASES[name])
    for dtype in ("float32", "float64"):
        check(models, "opt", VOCAB, 1, dtype, kwargs)


@pytest.mark.parametrize("name", ["greedy", "contrastive", "beam early", "group beam", "constrained",
                                  "beam dict without scores"])
def test_encoder_decoder_cases_match_upstream(models, name):
    """LED: the encoder's outputs, the decoder start token, cross attentions."""
    check(models, "led", VOCAB, 1, "float64", dict(prompt("led"), **CASES[name]))


@pytest.mark.parametrize("name", ["beam early", "beam heuristic", "beam never", "greedy two eos"])
def test_finishing_early_matches_upstream(models, name):
    """A model that favours eos (its eos logit raised): beams finish at the first steps."""
    kwargs = dict(prompt("opt", batch=3, seed=2), **CASES[name], sequence_bias={(EOS,): 4.0})
    check(models, "opt", VOCAB, 2, "float64", kwargs)


def test_inputs_prepared_as_upstream(models):
    """generate()'s preparation: the attention mask derived from padding when none is given (not when the pad is
    also an eos), LED's decoder prefix with and without the start token, a given decoder mask extended."""
    ids = prompt("opt")["input_ids"]  # row 1 starts with a pad
    check(models, "opt", VOCAB, 1, "float64", dict(input_ids=ids, max_new_tokens=3, **DICT))
    check(models, "opt", VOCAB, 1, "float64", dict(input_ids=ids, max_new_tokens=3, pad_token_id=EOS, **DICT))
    check(models, "opt", VOCAB, 1, "float64", dict(input_ids=ids, max_new_tokens=3, pad_token_id=PAD,
                                                   eos_token_id=[EOS, PAD], **DICT))
    led = prompt("led")
    for prefix in ([[EOS, 7], [EOS, 9]], [[7, 8], [9, 10]], [[EOS, 7], [9, 10]]):
        check(models, "led", VOCAB, 1, "float64", dict(led, decoder_input_ids=np.array(prefix), max_new_tokens=2,
                                                       **DICT))
    check(models, "led", VOCAB, 1, "float64", dict(led, decoder_input_ids=np.array([[7, 8], [9, 10]]),
                                                   decoder_attention_mask=np.array([[1, 1], [0, 1]]),
                                                   max_new_tokens=2, **DICT))
