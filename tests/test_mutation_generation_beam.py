"""Beam search's bookkeeping (refimpl/generation/beam.py) against live upstream's beam_search.py, fed the same
candidates step by step: BeamHypotheses (which finished sequences are kept, the worst score, when a row is done,
including exact ties with the best attainable score) and BeamSearchScorer.process / finalize (the next beams,
eos handling by rank, rows that are done receiving pad, the returned sequences, scores and beam indices) for
every early_stopping mode, positive, zero and negative length penalties, one or several eos tokens and
num_return_sequences up to num_beams.
"""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.generation.beam_search import BeamHypotheses as UpstreamHypotheses  # noqa: E402
from transformers.generation.beam_search import BeamSearchScorer as UpstreamScorer  # noqa: E402

from refimpl.generation.beam import BeamHypotheses, BeamSearchScorer  # noqa: E402
from refimpl.generation.config import GenerationConfig  # noqa: E402

NICE = [-8.0, -6.0, -4.0, -3.0, -2.0, -1.0, -0.5]  # sums whose ratios tie exactly


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 2.0, 0.0, -1.0, 0.5])
def test_hypotheses_keep_and_finish_as_upstreams(early_stopping, length_penalty):
    rng = np.random.default_rng(int(length_penalty * 10) + 17)
    prompt, max_length = 2, 7
    for beams, trial in itertools.product((1, 2, 3), range(30)):
        theirs = UpstreamHypotheses(beams, length_penalty, early_stopping, max_length)
        ours = BeamHypotheses(beams, length_penalty, early_stopping, max_length)
        for step in range(int(rng.integers(1, 7))):
            total, generated = float(rng.choice(NICE)), int(rng.integers(1, 5))
            hyp = torch.arange(generated + prompt)
            theirs.add(hyp, total, (step,), generated_len=generated)
            ours.add(hyp.numpy(), total, (step,), generated_len=generated)
            assert [(s, b) for s, _, b in ours.beams] == [(s, b) for s, _, b in theirs.beams], (beams, trial, step)
            assert ours.worst_score == theirs.worst_score
            for best, cur_len in itertools.product(NICE, range(prompt + 1, max_length + 1)):
                assert ours.is_done(best, cur_len, prompt) == theirs.is_done(best, cur_len, prompt), \
                    (beams, trial, step, best, cur_len)


def _cases():
    for beams, early, penalty, eos, keep in itertools.product(
            (2, 3), (True, False, "never"), (1.0, 0.0, -1.0, 2.0), (2, [2, 5]), (1, 2)):
        if keep <= beams:
            yield beams, early, penalty, eos, keep


@pytest.mark.parametrize("beams, early, penalty, eos, keep", list(_cases()))
def test_scorer_steps_and_finalizes_as_upstreams(beams, early, penalty, eos, keep):
    batch, prompt, max_length, vocab, pad = 3, 2, 8, 7, 1
    eos_list = eos if isinstance(eos, list) else [eos]
    rng = np.random.default_rng(beams * 100 + keep)
    cfg = GenerationConfig(num_beams=beams, early_stopping=early, length_penalty=penalty, eos_token_id=eos,
                           pad_token_id=pad, num_return_sequences=keep, max_length=max_length)
    ours = BeamSearchScorer(batch, cfg, prompt)
    theirs = UpstreamScorer(batch, beams, "cpu", length_penalty=penalty, do_early_stopping=early,
                            num_beam_hyps_to_keep=keep, max_length=max_length)
    input_ids = rng.integers(3, vocab, size=(batch * beams, prompt))
    scores = np.zeros(batch * beams, dtype=np.float32)
    indices = [()] * (batch * beams)
    where = f"beams {beams} early {early} penalty {penalty} eos {eos} keep {keep}"
    n = (1 + len(eos_list)) * beams
    for step in range(max_length - prompt):
        top_scores = np.sort(rng.choice([-0.5, -1.0, -1.5, -2.0, -3.0], size=(batch, n)), axis=1)[:, ::-1]
        top_scores = (top_scores + scores.reshape(batch, beams).min(axis=1, keepdims=True)).astype(np.float32)
        tokens = rng.integers(3, vocab, size=(batch, n))
        tokens[rng.random((batch, n)) < 0.3] = eos_list[0]
        tokens[:, -beams:] = 3 + np.arange(beams)  # enough candidates that are not eos
        sources = rng.integers(0, beams, size=(batch, n))
        up = theirs.process(torch.from_numpy(input_ids), torch.from_numpy(top_scores.copy()), torch.from_numpy(tokens),
                            torch.from_numpy(sources), pad_token_id=pad, eos_token_id=eos, beam_indices=tuple(indices),
                            decoder_prompt_len=prompt)
        new_scores, new_tokens, rows = ours.process(input_ids, top_scores, tokens, sources, indices)
        assert np.array_equal(new_tokens, up["next_beam_tokens"].numpy()), f"{where} step {step}: tokens"
        assert np.array_equal(rows, up["next_beam_indices"].numpy()), f"{where} step {step}: rows"
        assert np.array_equal(new_scores, up["next_beam_scores"].numpy()), f"{where} step {step}: scores"
        assert ours.done.tolist() == list(theirs._done), f"{where} step {step}: done"
        input_ids = np.concatenate([input_ids[rows], new_tokens[:, None]], axis=1)
        indices = [indices[i] + (i,) for i in rows]
        scores = new_scores
        if ours.done.all():
            break
    sequences, best, best_indices = ours.finalize(input_ids, scores, indices)
    up = theirs.finalize(torch.from_numpy(input_ids), torch.from_numpy(scores), None, None, max_length=max_length,
                         pad_token_id=pad, eos_token_id=eos, beam_indices=tuple(indices), decoder_prompt_len=prompt)
    assert np.array_equal(sequences, up["sequences"].numpy()), f"{where}: sequences\n{sequences}\n{up['sequences']}"
    assert np.array_equal(best, up["sequence_scores"].numpy()) and best.dtype == np.float32, f"{where}: scores"
    assert np.array_equal(best_indices, up["beam_indices"].numpy()), f"{where}: beam indices"


def test_done_row_without_pad_is_refused_as_upstream():
    cfg = GenerationConfig(num_beams=2, early_stopping=True, eos_token_id=2, max_length=9)
    scorer = BeamSearchScorer(1, cfg, 1)
    ids = np.array([[5], [6]])
    candidates = (np.array([[-1.0, -2.0, -3.0, -4.0]], np.float32), np.array([[2, 2, 4, 5]]), np.array([[0, 1, 0, 1]]))
    scorer.process(ids, *candidates, [(), ()])
    assert scorer.done.all()
    with pytest.raises(ValueError, match="generated beams >= num_beams, but eos_token_id and pad_token_id are not "
                                         "both set"):
        scorer.process(ids, *candidates, [(), ()])


def test_too_many_eos_candidates_are_refused():
    cfg = GenerationConfig(num_beams=2, eos_token_id=2, pad_token_id=1, max_length=9)
    scorer = BeamSearchScorer(1, cfg, 1)
    with pytest.raises(ValueError, match=r"at most 2 of the candidates \[2, 2, 2, 4\] may be eos tokens"):
        scorer.process(np.array([[5], [6]]), np.array([[-1.0, -2.0, -3.0, -4.0]], np.float32),
                       np.array([[2, 2, 2, 4]]), np.array([[0, 1, 0, 1]]), [(), ()])


def test_hypotheses_without_beam_indices_leave_their_row_at_minus_one():
    """Constrained search's fallback adds live beams without beam indices: when the best hypothesis has some,
    the others' rows of beam_indices stay -1 (upstream's fill)."""
    cfg = GenerationConfig(num_beams=2, eos_token_id=2, pad_token_id=1, max_length=9, num_return_sequences=2)
    scorer = BeamSearchScorer(1, cfg, 1)
    scorer.done[:] = True
    scorer.hyps[0].add(np.array([5, 6, 7]), -1.0, (0, 1), 2)
    scorer.hyps[0].add(np.array([5, 8, 9]), -3.0, None, 2)
    sequences, scores, indices = scorer.finalize(np.zeros((2, 3), np.int64), np.zeros(2), [(), ()])
    assert sequences.tolist() == [[5, 6, 7, 2], [5, 8, 9, 2]] and scores.tolist() == [-0.5, -1.5]  # eos appended
    assert indices.tolist() == [[0, 1, -1, -1], [-1, -1, -1, -1]]
    scorer = BeamSearchScorer(1, cfg, 1)
    scorer.done[:] = True
    scorer.hyps[0].add(np.array([5, 6]), -1.0, None, 1)
    scorer.hyps[0].add(np.array([5, 8, 9]), -3.0, (1, 0), 2)
    sequences, scores, indices = scorer.finalize(np.zeros((2, 3), np.int64), np.zeros(2), [(), ()])
    assert indices is None and sequences.tolist() == [[5, 6, 2, 1], [5, 8, 9, 2]]  # eos, then pad
