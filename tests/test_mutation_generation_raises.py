"""The generation checks that generate() itself never reaches (its preparation sets or refuses the value first)
but that guard the pieces used on their own: each refuses with a message naming what is missing or wrong.
"""
import re

import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl.generation.beam import BeamSearchScorer
from refimpl.generation.config import GenerationConfig
from refimpl.generation.constrained import ConstrainedBeamSearchScorer
from refimpl.generation.constraints import Constraint, PhrasalConstraint
from refimpl.generation.search import Unfinished, draw


def refused(match, fn, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"


def test_rows_that_finish_need_a_pad():
    unfinished = Unfinished(GenerationConfig(eos_token_id=2, pad_token_id=None), 2)
    refused(r"^eos_token_id is set, so pad_token_id must be set too$", unfinished.append,
            np.zeros((2, 1), np.int64), np.array([2, 3]))
    grown = Unfinished(GenerationConfig(eos_token_id=None, pad_token_id=None), 2).append(
        np.zeros((2, 1), np.int64), np.array([2, 3]))  # no eos: nothing finishes, no pad needed
    assert grown.tolist() == [[0, 2], [0, 3]]


def test_beams_of_different_lengths_need_a_pad():
    cfg = GenerationConfig(num_beams=2, eos_token_id=2, pad_token_id=None, max_length=9, num_return_sequences=2)
    scorer = BeamSearchScorer(1, cfg, 1)
    scorer.done[:] = True
    scorer.hyps[0].add(np.array([5, 6]), -1.0, (0,), 1)
    scorer.hyps[0].add(np.array([5, 6, 7]), -2.0, (0, 1), 2)
    refused(r"^pad_token_id must be set when beams have different lengths$", scorer.finalize,
            np.zeros((2, 3), np.int64), np.zeros(2), [(), ()])


def test_sampling_distinct_tokens_needs_enough_of_them():
    probs = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    refused(r"^cannot draw 2 distinct tokens: fewer have a non-zero probability$", draw, probs, 2,
            np.random.default_rng(0))
    both = draw(probs[1:], 2, np.random.default_rng(0))
    assert sorted(both[0].tolist()) == [0, 1]
    assert draw(probs[:1], 1, np.random.default_rng(0)).tolist() == [[1]]


def test_constrained_scorer_needs_beams_and_constraints():
    refused(r"^constrained beam search needs at least one constraint$", ConstrainedBeamSearchScorer, 1,
            GenerationConfig(num_beams=2), 1, [])
    refused(r"^constrained beam search \(force_words_ids / constraints\) needs num_beams > 1, got 1$",
            ConstrainedBeamSearchScorer, 1, GenerationConfig(num_beams=1), 1, [PhrasalConstraint([1])])
    assert ConstrainedBeamSearchScorer(1, GenerationConfig(num_beams=2), 1, [PhrasalConstraint([1])]).beams == 2


@pytest.mark.parametrize("call", ["advance", "does_advance", "update", "reset", "remaining", "copy"])
def test_the_abstract_constraint_implements_nothing(call):
    args = (1,) if call in ("does_advance", "update") else ()
    with pytest.raises(NotImplementedError):
        getattr(Constraint(), call)(*args)


def test_an_encoder_decoder_model_needs_a_start_token():
    led = refimpl.from_pretrained(GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration", dtype="float64")
    refused(r"^`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation\.$",
            led.generate, np.array([[0, 5, 6, 2]]), decoder_start_token_id=None, bos_token_id=None, max_new_tokens=1)
    assert led.generate(np.array([[0, 5, 6, 2]]), decoder_start_token_id=None, bos_token_id=3,
                        max_new_tokens=1)[0, 0] == 3  # the bos then starts the decoder


def test_a_constraint_that_does_not_step_when_it_says_it_advances_is_refused():
    from refimpl.generation.constraints import ConstraintListState

    class Stuck(PhrasalConstraint):
        def update(self, token_id):
            return False, False, False

        def copy(self, stateful=False):
            return Stuck(self.token_ids)

    state = ConstraintListState([Stuck([4])])
    refused(r"^constraint\.update\(token_id\) made no progress although does_advance\(token_id\)$", state.add, 4)
    assert ConstraintListState([Stuck([4])]).add(3) == (False, False)  # a token it does not advance: no step
