"""refimpl.diff_generate's rules one at a time, on the small golden OPT (vocabulary 29, 40 positions): the
validation of the candidate's tokens (each error names the argument and the value), the batch's verdict as the
worst row's, the tie/divergence boundary (margin <= noise), the sampling and beam-search ties (a `noise_model`
given on purpose makes the other run differ), end of sequence, the length options, and the report's text and
JSON. Expected values come from the rules in the module's docstring and from refimpl's own greedy decoding of
the same model (the argmax of its scores), never from a report pasted back."""
import json

import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl.diff_generate import (EXIT_CODES, GenerationDiff, RowVerdict, Undecidable, _ended, _judge_greedy,
                                   _judge_sample, _summary, diff_generate, in_dtype, score_noise)
from refimpl.generation import PhrasalConstraint
from refimpl.modeling import Model

EOS, PAD, VOCAB, POSITIONS = 2, 1, 29, 40  # golden/generation/opt/config.json


@pytest.fixture(scope="module")
def model():
    return refimpl.from_pretrained(GOLDEN / "generation" / "opt", dtype="float64")


@pytest.fixture(scope="module")
def inputs():  # two rows, the second left padded
    ids = np.array([[5, 6, 7, 8], [PAD, PAD, 9, 10]])
    return {"input_ids": ids, "attention_mask": (ids != PAD).astype(np.int64)}


def greedy(model, inputs, **kwargs):
    return model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)


def scaled(model, name, factor):  # the same model with one weight scaled (another implementation's bug)
    params = dict(model.params)
    params[name] = params[name] * factor
    return Model(model.config, params, model.architecture, model.dtype, source=model.source)


def no_eos(**kwargs):  # eos forbidden: every row runs to max_new_tokens
    return dict(kwargs, min_new_tokens=kwargs["max_new_tokens"])


# ------------------------------------------------------------------ the candidate's tokens: clear errors


@pytest.mark.parametrize("shape", [(0, 6), (2, 0), (6,), (1, 2, 6)])
def test_tokens_of_a_wrong_shape_name_the_shape(model, inputs, shape):
    with pytest.raises(ValueError, match=r"tokens must be a 2-D array .* got shape " + str(shape).replace("(", r"\(")
                       .replace(")", r"\)")):
        diff_generate(model, inputs, np.zeros(shape, np.int64))


@pytest.mark.parametrize("dtype", [np.float64, np.bool_, np.complex64])
def test_tokens_that_are_not_integers_name_the_dtype(model, inputs, dtype):
    with pytest.raises(ValueError, match=f"integer token ids, got dtype {np.dtype(dtype)}"):
        diff_generate(model, inputs, np.zeros((2, 6), dtype))


@pytest.mark.parametrize("value", [VOCAB, VOCAB + 7, -1])
def test_a_token_outside_the_vocabulary_is_named_with_its_place(model, inputs, value):
    tokens = greedy(model, inputs, **no_eos(max_new_tokens=3))
    tokens[1, 5] = value
    with pytest.raises(ValueError, match=rf"tokens\[1, 5\] = {value} is outside the vocabulary \[0, {VOCAB}\)"):
        diff_generate(model, inputs, tokens, **no_eos(max_new_tokens=3))


@pytest.mark.parametrize("value", [0, VOCAB - 1])
def test_the_vocabularys_first_and_last_ids_are_tokens(model, inputs, value):
    tokens = greedy(model, inputs, **no_eos(max_new_tokens=3))
    tokens = tokens.astype(np.uint16)  # unsigned ids are ids too
    tokens[0, 5] = value
    report = diff_generate(model, inputs, tokens, **no_eos(max_new_tokens=3))
    assert report.rows[1].verdict == "agree"
    assert report.rows[0].candidate_token in (None, value)


def test_rows_and_prefix_errors_name_what_was_expected(model, inputs):
    tokens = greedy(model, inputs, **no_eos(max_new_tokens=3))
    with pytest.raises(ValueError, match=r"tokens has 4 rows, expected 2 \(one per row of input_ids"):
        diff_generate(model, inputs, np.concatenate([tokens, tokens]), **no_eos(max_new_tokens=3))
    with pytest.raises(ValueError, match=r"tokens has 3 rows, not a multiple of the batch of input_ids \(2\)"):
        diff_generate(model, inputs, np.concatenate([tokens, tokens[:1]]), **no_eos(max_new_tokens=3))
    with pytest.raises(ValueError, match=r"tokens has 3 rows, not a multiple of the batch of input_ids \(2\)"):
        diff_generate(model, inputs, np.concatenate([tokens, tokens[:1]]), num_beams=2, max_new_tokens=3)
    bad = tokens.copy()
    bad[1, 3] = 11
    with pytest.raises(ValueError, match=r"tokens row 1 does not start with the prompt .*: column 3 holds 11, "
                                         r"expected 10"):
        diff_generate(model, inputs, bad, **no_eos(max_new_tokens=3))
    with pytest.raises(ValueError, match=r"tokens has 4 columns: no new token after the 4-token prefix"):
        diff_generate(model, inputs, tokens[:, :4], **no_eos(max_new_tokens=3))
    with pytest.raises(ValueError, match=r"got \['attention_mask'\]"):
        diff_generate(model, {"attention_mask": inputs["attention_mask"]}, tokens)


def test_the_position_limit_is_the_models(model, inputs):
    full = greedy(model, inputs, **no_eos(max_new_tokens=POSITIONS - 4))  # exactly the 40 positions: judged
    assert full.shape[1] == POSITIONS
    assert diff_generate(model, inputs, full, **no_eos(max_new_tokens=POSITIONS - 4)).verdict == "agree"
    over = np.concatenate([full, full[:, -1:]], axis=1)
    with pytest.raises(ValueError, match=rf"tokens has {POSITIONS + 1} columns, beyond this model's position "
                                         rf"limit {POSITIONS}"):
        diff_generate(model, inputs, over)


# ------------------------------------------------------------------ which strategies are judged


def test_constraints_and_contrastive_search_are_refused_by_name(model, inputs):
    tokens = greedy(model, inputs, max_new_tokens=3)
    with pytest.raises(NotImplementedError, match=r"constrained beam search \(constraints, force_words_ids\)"):
        diff_generate(model, inputs, tokens, num_beams=2, constraints=[PhrasalConstraint([5, 6])])
    with pytest.raises(NotImplementedError, match=r"contrastive search \(penalty_alpha with top_k > 1\)"):
        diff_generate(model, inputs, tokens, penalty_alpha=0.5, top_k=2)


@pytest.mark.parametrize("options", [dict(penalty_alpha=0.5, top_k=1), dict(penalty_alpha=0.0, top_k=4),
                                     dict(top_k=4)])
def test_what_is_not_contrastive_search_is_greedy_search(model, inputs, options):
    """upstream: contrastive search needs penalty_alpha > 0 and top_k > 1; otherwise it is greedy search."""
    kwargs = no_eos(max_new_tokens=5)
    tokens = greedy(model, inputs, **kwargs)
    report = diff_generate(model, inputs, tokens, **kwargs, **options)
    assert (report.verdict, report.strategy) == ("agree", "greedy")


# ------------------------------------------------------------------ the batch's verdict: the worst row's


def rows(*specs):  # (verdict, step) per row -> RowVerdicts
    return [RowVerdict(r, verdict, step, margin=None if step is None else 1.0 + r, noise=0.5)
            for r, (verdict, step) in enumerate(specs)]


@pytest.mark.parametrize("specs, verdict, row, step", [
    ([("agree", None), ("agree", None)], "agree", None, None),
    ([("possible", None), ("possible", None)], "possible", None, None),
    ([("agree", None), ("tie", 4)], "tie", 1, 4),
    ([("possible", None), ("tie", 4), ("possible", None)], "tie", 1, 4),
    ([("tie", 0), ("divergence", 5)], "divergence", 1, 5),
    ([("divergence", 6), ("tie", 0), ("divergence", 2)], "divergence", 2, 2),   # the earliest step
    ([("agree", None), ("divergence", 3), ("divergence", 3)], "divergence", 1, 3),  # then the earliest row
    ([("tie", 7), ("tie", 2), ("agree", None)], "tie", 1, 2),
])
def test_the_batch_verdict_is_the_worst_row_earliest_step_then_row(specs, verdict, row, step):
    report = _summary(rows(*specs), "greedy")
    assert (report.verdict, report.row, report.step) == (verdict, row, step)
    assert report.margin == (None if row is None else 1.0 + row)
    assert report.exit_code == (1 if verdict == "divergence" else 0)
    assert report.first_difference == step


def test_exit_codes():
    assert EXIT_CODES == {"agree": 0, "possible": 0, "tie": 0, "divergence": 1}


# ------------------------------------------------------------------ one step: tie or divergence


def test_a_margin_equal_to_the_noise_is_a_tie():
    """scores 1 and 1 - 2**-20, no float32 error: the noise is the floor 8 ulps of 1.0 = 8 * 2**-23 = 2**-20."""
    scores = np.array([0.25, 1.0, 1.0 - 2.0 ** -20, -np.inf])
    assert score_noise(scores, scores) == 2.0 ** -20
    assert _judge_greedy(scores, scores, 2)[:4] == ("tie", 1, 2.0 ** -20, 2.0 ** -20)
    wider = scores.copy()
    wider[2] = 1.0 - 2.0 ** -19
    assert _judge_greedy(wider, wider, 2)[:4] == ("divergence", 1, 2.0 ** -19, 2.0 ** -20)
    assert _judge_greedy(scores, scores, 1) is None  # refimpl's own choice
    kind, choice, margin, noise, reason = _judge_greedy(scores, scores, 3)  # a token refimpl forbids
    assert (kind, choice, margin, noise) == ("divergence", 1, float("inf"), None) and "forbid" in reason
    assert _judge_greedy(scores, scores, 0)[:3] == ("divergence", 1, 0.75)


def test_noise_floor_and_error_terms_by_hand():
    s64 = np.array([-4.0, 2.0, -np.inf, 1.0])
    s32 = np.array([-4.0 + 2 ** -18, 2.0, -np.inf, 1.0 - 2 ** -20])  # the largest error 2**-18 at a negative score
    assert score_noise(s64, s32) == 4.0 * 2 * 2.0 ** -18
    assert score_noise(s64, s64) == 8 * 2.0 ** -23 * 4.0  # scale: the largest |score|, a negative one
    only_one = np.array([-4.0, np.inf, -np.inf, 1.0])  # a score finite in one run only is left out
    assert score_noise(s64, only_one) == 8 * 2.0 ** -23 * 4.0


def test_a_sampled_token_judged_by_its_probability_in_each_dtype():
    warped = np.array([0.5, -np.inf, 1.5, -np.inf])
    other = np.array([0.5, 0.1, 1.5, -np.inf])
    assert _judge_sample(warped, other, 0) is None
    kind, choice, margin, noise, reason = _judge_sample(warped, other, 1)  # on the cut: removed in one dtype
    assert (kind, choice, margin, noise) == ("tie", 2, None, None) and "one dtype" in reason
    kind, choice, margin, noise, reason = _judge_sample(warped, other, 3)  # removed in both
    assert (kind, choice, margin, noise) == ("divergence", 2, float("inf"), None) and "zero probability" in reason


# ------------------------------------------------------------------ the replay


def test_noise_comes_from_the_other_dtype_or_the_model_given(model, inputs):
    kwargs = no_eos(max_new_tokens=4)
    tokens = greedy(model, inputs, **kwargs)
    step = 2
    wrong = tokens.copy()
    scores = model(input_ids=tokens[:, :4 + step], attention_mask=np.ones_like(tokens[:, :4 + step]) *
                   np.concatenate([inputs["attention_mask"], np.ones((2, step), np.int64)], axis=1)).logits[0, -1]
    runner_up = int(np.argsort(scores)[-2])
    wrong[0, 4 + step] = runner_up
    assert in_dtype(model, np.float32).dtype == np.float32
    assert all(v.dtype == np.float32 for v in in_dtype(model, np.float32).params.values())
    cast = in_dtype(model, np.float32)  # the same checkpoint: its generation_config.json is read from `source`
    assert (cast.source, cast.architecture, cast.config) == (model.source, model.architecture, model.config)
    # the noise model itself: no float32 error, the floor; a very different model: every step within noise
    same = diff_generate(model, inputs, wrong, noise_model=model, **kwargs)
    floor = 8 * 2.0 ** -23 * float(np.max(np.abs(scores)))
    assert (same.verdict, same.row, same.step) == ("divergence", 0, step), same.text()
    assert same.noise == pytest.approx(floor, rel=1e-9)
    assert same.margin == pytest.approx(scores.max() - scores[runner_up], rel=1e-9)
    far = scaled(model, "lm_head.weight" if "lm_head.weight" in model.params else "model.decoder.embed_tokens.weight",
                 -3.0)
    report = diff_generate(model, inputs, wrong, noise_model=far, **kwargs)
    assert (report.verdict, report.step, report.rows[0].ties[0]) == ("tie", step, step), report.text()
    assert report.noise > report.margin
    # the default noise model of a float32 model is the float64 one, and a float32 model's own tokens agree
    model32 = in_dtype(model, np.float32)
    assert diff_generate(model32, inputs, greedy(model32, inputs, **kwargs), **kwargs).verdict in ("agree", "tie")
    report32 = diff_generate(model32, inputs, wrong, **kwargs)
    assert report32.step == step and 0 < report32.noise < 1e-4


def test_a_divergence_decides_its_row_later_steps_are_not_judged(model, inputs):
    kwargs = no_eos(max_new_tokens=8)
    tokens = greedy(model, inputs, **kwargs)
    width = 4
    wrong = tokens.copy()
    forbidden = EOS  # min_new_tokens forbids eos: a divergence of infinite margin wherever it stands
    wrong[1, width + 2] = forbidden
    wrong[1, width + 5] = forbidden
    report = diff_generate(model, inputs, wrong, noise_model=model, **kwargs)
    row = report.rows[1]
    assert (row.verdict, row.step, row.candidate_token, row.margin, row.noise, row.ties) == \
        ("divergence", 2, EOS, float("inf"), None, [])
    assert row.refimpl_token == int(tokens[1, width + 2])
    assert report.rows[0].verdict == "agree" and (report.row, report.step) == (1, 2)


def test_after_eos_only_padding_and_the_refimpl_token_is_pad(model, inputs):
    kwargs = dict(max_new_tokens=8, sequence_bias={(EOS,): 20.0})  # every row ends at once
    tokens = greedy(model, inputs, **kwargs)
    width = 4
    assert tokens.shape[1] == width + 1 and (tokens[:, width] == EOS).all()  # generate() stops there
    assert diff_generate(model, inputs, tokens, **kwargs).verdict == "agree"
    tokens = np.concatenate([tokens, np.full((2, 4), PAD)], axis=1)  # pad columns after every row ended: accepted
    assert diff_generate(model, inputs, tokens, **kwargs).verdict == "agree"
    after = tokens.copy()
    after[1, width + 3] = 7
    report = diff_generate(model, inputs, after, **kwargs)
    row = report.rows[1]
    assert (report.verdict, report.row, report.step) == ("divergence", 1, 3)
    assert (row.candidate_token, row.refimpl_token, row.margin, row.noise) == (7, PAD, float("inf"), None)
    assert f"pad_token_id {PAD}" in row.reason and report.rows[0].verdict == "agree"


@pytest.mark.parametrize("limit", [dict(max_length=4 + 5), dict(max_new_tokens=5)])
def test_max_length_and_max_new_tokens_both_limit(model, inputs, limit):
    tokens = greedy(model, inputs, **no_eos(max_new_tokens=7))
    options = dict(limit, min_new_tokens=5)
    report = diff_generate(model, inputs, tokens, **options)
    assert (report.verdict, report.row, report.step) == ("divergence", 0, 5), report.text()
    assert "past max_new_tokens=5" in report.rows[0].reason and report.rows[0].candidate_token == tokens[0, 9]
    assert report.rows[0].refimpl_token is None
    assert diff_generate(model, inputs, tokens[:, :9], **options).verdict == "agree"
    short = diff_generate(model, inputs, tokens[:, :8], **options)
    assert (short.verdict, short.row, short.step) == ("divergence", 0, 4)
    assert short.rows[0].candidate_token is None and "stopped after 4 new tokens" in short.rows[0].reason
    assert "max_new_tokens=5" in short.rows[1].reason


def test_without_a_limit_the_candidates_length_is_the_limit(model, inputs):
    tokens = greedy(model, inputs, **no_eos(max_new_tokens=25))  # beyond generate()'s default max_length 20
    assert diff_generate(model, inputs, tokens, min_new_tokens=25).verdict == "agree"
    assert diff_generate(model, inputs, tokens[:, :10], min_new_tokens=25).verdict == "agree"


def test_sampling_on_the_cut_is_a_tie(model, inputs):
    """top_k=1 keeps only each dtype's argmax: a token that is the noise model's argmax but not refimpl's is on the
    cut (a tie); a token that is neither is a divergence of infinite margin."""
    kwargs = dict(do_sample=True, top_k=1, max_new_tokens=1, min_new_tokens=1)
    ref = greedy(model, inputs, **no_eos(max_new_tokens=1))
    factor = next(f for f in (-1.0, -2.0, 0.5, 3.0)
                  if (greedy(other := scaled(model, "model.decoder.layers.1.fc2.weight", f), inputs,
                             **no_eos(max_new_tokens=1))[:, 4] != ref[:, 4]).any())
    theirs = greedy(other, inputs, **no_eos(max_new_tokens=1))
    r = int(np.flatnonzero(theirs[:, 4] != ref[:, 4])[0])
    assert diff_generate(model, inputs, ref, noise_model=other, **kwargs).verdict == "possible"
    report = diff_generate(model, inputs, theirs, noise_model=other, **kwargs)
    assert (report.verdict, report.row, report.step, report.strategy) == ("tie", r, 0, "sampling"), factor
    assert (report.rows[r].candidate_token, report.rows[r].refimpl_token) == (theirs[r, 4], ref[r, 4])
    neither = ref.copy()
    neither[r, 4] = next(t for t in range(3, VOCAB) if t not in (ref[r, 4], theirs[r, 4]))
    report = diff_generate(model, inputs, neither, noise_model=other, **kwargs)
    assert (report.verdict, report.row, report.step, report.margin) == ("divergence", r, 0, float("inf"))
    three = greedy(model, inputs, seed=0, num_return_sequences=3, do_sample=True, top_k=3, max_new_tokens=4)
    assert diff_generate(model, inputs, three, do_sample=True, top_k=3, max_new_tokens=4).verdict == "possible"
    with pytest.raises(ValueError, match=r"tokens has 5 rows, not a multiple of the batch of input_ids \(2\)"):
        diff_generate(model, inputs, three[:5], do_sample=True, top_k=3, max_new_tokens=4)


# ------------------------------------------------------------------ beam search


def test_beam_search_tie_when_the_other_run_ends_in_the_candidates_sequence(model, inputs):
    kwargs = dict(num_beams=3, max_new_tokens=6)
    ours = greedy(model, inputs, **kwargs)
    for factor in (-1.0, 0.5, 2.0, -3.0):
        other = scaled(model, "model.decoder.layers.1.fc2.weight", factor)
        theirs = greedy(other, inputs, **kwargs)
        if not np.array_equal(theirs, ours):
            break
    step, r = min((int(np.flatnonzero(theirs[r, 4:] != ours[r, 4:])[0]), r)  # the earliest step, then row
                  for r in np.flatnonzero((theirs != ours).any(axis=1)))
    report = diff_generate(model, inputs, theirs, noise_model=other, **kwargs)
    assert (report.verdict, report.row, report.step, report.strategy) == ("tie", r, step, "beam search")
    assert "other dtype" in report.rows[r].reason
    assert diff_generate(model, inputs, ours, noise_model=other, **kwargs).verdict == "agree"


def test_beam_search_rows_as_generate_returns_them(model, inputs):
    kwargs = dict(num_beams=3, max_new_tokens=6, num_return_sequences=2)
    ours = greedy(model, inputs, **kwargs)
    assert ours.shape[0] == 4
    padded = np.concatenate([ours, np.full((4, 2), PAD)], axis=1)  # pad columns after every row: the same rows
    assert diff_generate(model, inputs, padded, num_beams=3, max_new_tokens=6).verdict == "agree"


@pytest.mark.parametrize("new, expected", [
    ([5, 6, 7], [5, 6, 7]), ([5, 6, PAD, PAD], [5, 6]), ([5, EOS, PAD, PAD], [5, EOS]), ([EOS], [EOS]),
    ([5, EOS, 7, PAD], [5, EOS, 7, PAD]), ([5, EOS, EOS], [5, EOS, EOS]), ([PAD, PAD], []), ([], []),
    ([5, PAD, 6, PAD], [5, PAD, 6])])
def test_a_beam_rows_new_tokens_end_at_the_first_eos_trailing_padding_dropped(new, expected):
    assert _ended(np.array(new, np.int64), [EOS], PAD) == expected


def test_when_pad_is_eos_a_row_ends_at_its_first_eos():
    assert _ended([5, 2, 2, 2], [2], 2) == [5, 2]
    assert _ended([5, 6], [2], 2) == [5, 6]
    assert _ended([5, 6, 1], [2, 3], 1) == [5, 6] and _ended([5, 3, 1], [2, 3], 1) == [5, 3]


# ------------------------------------------------------------------ the report


def test_text_and_json_of_a_divergence(model, inputs):
    kwargs = no_eos(max_new_tokens=4)
    tokens = greedy(model, inputs, **kwargs)
    wrong = tokens.copy()
    wrong[1, 4 + 1] = EOS
    report = diff_generate(model, inputs, wrong, **kwargs)
    lines = report.text().splitlines()
    assert lines[0].split() == ["row", "verdict", "step", "margin", "noise", "tokens", "(candidate", "/", "refimpl)"]
    assert lines[1].split() == ["0", "agree", "-", "-", "-"]
    assert lines[2].split()[:6] == ["1", "divergence", "1", "inf", "-", str(EOS)]
    assert lines[2].split()[6:8] == ["/", str(tokens[1, 5])] and "forbid" in lines[2]
    assert lines[-1] == "greedy: divergence: row 1 diverges at new token 1, beyond float32 noise"
    data = report.to_json()
    assert json.loads(json.dumps(data)) == data  # JSON has no infinity: written as a string
    assert (data["verdict"], data["row"], data["step"], data["margin"], data["noise"]) == \
        ("divergence", 1, 1, "inf", None)
    assert data["rows"][1]["margin"] == "inf" and data["rows"][0]["margin"] is None
    assert data["first_difference"] == 1 and data["strategy"] == "greedy"


def test_text_of_a_tie_and_of_agreement():
    tie = GenerationDiff("tie", 3, 1.5e-7, 2.5e-7, 0, "greedy",
                         [RowVerdict(0, "tie", 3, 1.5e-7, 2.5e-7, 4, 9, "within float32 noise", [3])])
    lines = tie.text().splitlines()
    assert lines[1].split() == ["0", "tie", "3", "1.50e-07", "2.50e-07", "4", "/", "9", "within", "float32", "noise"]
    assert lines[-1] == "greedy: tie: differences only where the margin is within float32 noise"
    assert tie.to_json()["margin"] == 1.5e-7 and tie.first_difference == 3
    agree = GenerationDiff("agree", None, None, None, None, "beam search", [RowVerdict(0, "agree")])
    assert agree.text().splitlines()[-1] == "beam search: agree: every token is refimpl's choice"
    assert agree.first_difference is None and agree.to_json()["first_difference"] is None
    possible = GenerationDiff("possible", None, None, None, None, "sampling", [RowVerdict(0, "possible")])
    assert "non-zero probability" in possible.text().splitlines()[-1]
    later = GenerationDiff("divergence", 5, float("-inf"), None, 0, "greedy",
                           [RowVerdict(0, "divergence", 5, float("-inf"), None, 1, 2, "", [1, 3])])
    assert later.first_difference == 1 and later.to_json()["margin"] == "-inf"


def test_an_undecidable_beam_row_shows_five_tokens_from_where_it_parts(model, inputs):
    kwargs = dict(num_beams=2, max_new_tokens=7, min_new_tokens=7)
    ours = greedy(model, inputs, **kwargs)
    bad = ours.copy()
    bad[1, 4 + 1:] = [20, 21, 22, 23, 24, 25]  # not refimpl's run in either dtype
    assert ours[1, 5] != 20
    message = (f"beam search: row 1 differs from refimpl's beam search at new token 1 (candidate [20, 21, 22, 23, 24], "
               f"refimpl {[int(t) for t in ours[1, 5:10]]}), and refimpl's run in the other dtype")
    with pytest.raises(Undecidable) as info:
        diff_generate(model, inputs, bad, **kwargs)
    assert str(info.value).startswith(message) and "num_beams=1" in str(info.value)
