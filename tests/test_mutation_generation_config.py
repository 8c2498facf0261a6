"""GenerationConfig (refimpl/generation/config.py) rule by rule, each bound on both sides.

- validate()'s warnings and attribute-relation errors against live upstream's GenerationConfig.validate on a
  grid of option combinations (the same messages, in the same order);
- every field check of check_types(): the bound accepted, one past it refused with a message naming the field,
  what was expected and the value given (with its type);
- the processor-value checks, the token-id range checks, the position and memory limits and the options refimpl
  refuses, each at its bound;
- updated()'s handling of generate() arguments.
No model is run: the checks take a stand-in for the model's config (vocab_size, position table).
"""
import random
import re
import warnings

import numpy as np
import pytest

from refimpl.generation.config import (GENERATE_ARGUMENTS, LIMITS, REFUSED, GenerationConfig, eos_list,
                                       position_limit)

VOCAB, POSITIONS = 29, 40


class ModelConfig:  # what validate() reads of a model's config
    def __init__(self, vocab_size=VOCAB, max_position_embeddings=POSITIONS, **more):
        self.vocab_size, self.max_position_embeddings = vocab_size, max_position_embeddings
        self.__dict__.update(more)


def show(value):  # how a message shows a value: repr and type
    return f"{value!r} ({type(value).__name__})"


def refused(match, fn, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"
    return str(info.value)


def validate(**kwargs):
    cfg = GenerationConfig(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg.validate(ModelConfig())
    return cfg


# --- validate()'s warnings and relation errors against upstream ---------------------------------------------

GRID = dict(do_sample=[False, True], num_beams=[1, 2, 4], num_beam_groups=[1, 2, 3], diversity_penalty=[0.0, 0.5],
            temperature=[1.0, 0.7], top_p=[1.0, 0.9], typical_p=[1.0, 0.9], top_k=[50, 10],
            penalty_alpha=[None, 0.6], epsilon_cutoff=[0.0, 0.1], eta_cutoff=[0.0, 0.1],
            early_stopping=[False, True, "never"], length_penalty=[1.0, 2.0], constraints=[None, "phrase"],
            num_return_sequences=[1, 2, 3, 5])


def _grid(n, seed):
    rng = random.Random(seed)
    names = list(GRID)
    cases = [dict(zip(names, values)) for values in
             (tuple(rng.choice(GRID[k]) for k in names) for _ in range(n))]
    for name, values in GRID.items():  # each value alone, the rest at upstream's defaults
        cases += [{name: v} for v in values]
    return cases


def test_warnings_and_relation_errors_are_upstreams():
    transformers = pytest.importorskip("transformers")
    from refimpl.generation import PhrasalConstraint

    constraint = [PhrasalConstraint([3, 4])]
    mismatches = []
    for case in _grid(400, 2025):
        case = {k: (constraint if v == "phrase" else v) for k, v in case.items()}
        theirs = transformers.GenerationConfig()
        for k, v in case.items():
            setattr(theirs, k, v)
        with warnings.catch_warnings(record=True) as upstream_warnings:
            warnings.simplefilter("always")
            try:
                theirs.validate()
                upstream_error = None
            except ValueError as err:
                upstream_error = str(err)
        ours = GenerationConfig(**case)
        with warnings.catch_warnings(record=True) as our_warnings:
            warnings.simplefilter("always")
            ours._warn_unused()
            try:
                ours._check_relations()
                our_error = None
            except ValueError as err:
                our_error = str(err)
        expected = [str(w.message) for w in upstream_warnings]
        got = [str(w.message) for w in our_warnings]
        if expected != got or upstream_error != our_error:
            mismatches.append(f"{case}: warnings {got} vs upstream {expected}; "
                              f"error {our_error!r} vs {upstream_error!r}")
    assert not mismatches, f"{len(mismatches)} cases differ, first: {mismatches[:2]}"


def test_num_beams_none_warns_and_means_one_as_upstream():
    cfg = GenerationConfig(num_beams=None)
    with pytest.warns(UserWarning, match=r"^`num_beams` is set to None - defaulting to 1\.$"):
        cfg.validate(ModelConfig())
    assert cfg.num_beams == 1 and type(cfg.num_beams) is int


# --- check_types: every field, the bound accepted and one past it refused -----------------------------------

INTS = {  # field: (minimum, None allowed)
    "max_length": (0, False), "max_new_tokens": (0, True), "min_length": (0, False), "min_new_tokens": (0, True),
    "num_beams": (1, True), "num_beam_groups": (1, False), "top_k": (0, True), "no_repeat_ngram_size": (0, True),
    "encoder_no_repeat_ngram_size": (0, True), "forced_bos_token_id": (0, True), "num_return_sequences": (1, False),
    "bos_token_id": (0, True), "decoder_start_token_id": (0, True), "num_assistant_tokens": (0, False),
    "prompt_lookup_num_tokens": (0, True),
}
REALS = {"max_time": True, "penalty_alpha": True, "temperature": True, "top_p": True, "typical_p": True,
         "epsilon_cutoff": True, "eta_cutoff": True, "diversity_penalty": True, "repetition_penalty": True,
         "encoder_repetition_penalty": True, "length_penalty": False, "guidance_scale": True}
BOOLS = {"do_sample": False, "use_cache": False, "renormalize_logits": False, "remove_invalid_values": False,
         "output_attentions": False, "output_hidden_states": False, "output_scores": False,
         "return_dict_in_generate": False, "_from_model_config": False, "low_memory": True}


def accepted(name, value):
    GenerationConfig(**{name: value}).check_types()


def rejected(name, value, expected):
    message = refused(re.escape(f"{name} {expected}, got {show(value)}"), GenerationConfig(**{name: value}).check_types)
    assert message.startswith(name)


def check_field(name, optional, kind, oks, bads):
    """Every value in oks is taken, every one in bads refused with "must be [None or ]<kind>"; None follows
    `optional`."""
    expected = f"must be {'None or ' if optional else ''}{kind}"
    for ok in oks:
        accepted(name, ok)
    for bad in bads:
        rejected(name, bad, expected)
    if optional:
        accepted(name, None)
    else:
        rejected(name, None, expected)


@pytest.mark.parametrize("name", list(INTS))
def test_int_fields_are_bounded_below(name):
    minimum, optional = INTS[name]
    check_field(name, optional, f"an int >= {minimum}", (minimum, minimum + 1, minimum + 7, np.int64(minimum)),
                (minimum - 1, minimum - 5, float(minimum), True, False, "3"))


@pytest.mark.parametrize("name", list(REALS))
def test_real_fields_take_real_numbers_only(name):
    check_field(name, REALS[name], "a real number", (0.5, 2, -1.5, 0), ("0.5", True, float("nan"), [1.0]))


@pytest.mark.parametrize("name", list(BOOLS))
def test_bool_fields_take_true_or_false_only(name):
    check_field(name, BOOLS[name], "True or False", (True, False), (1, 0, "True", np.float64(1.0)))


def test_token_list_fields():
    for name in ("suppress_tokens", "begin_suppress_tokens"):
        for ok in (None, [], [0, 3], (1, 2), [10 ** 6]):
            accepted(name, ok)
        for bad in (3, [-1], [0, -1], [1.0], [True], "12", [[1]]):
            rejected(name, bad, "must be None or a list of token ids (ints >= 0)")
    single = "must be None, a token id or a non-empty list of token ids"
    for ok in (None, 0, 5, [1, 2], (3,)):
        accepted("forced_eos_token_id", ok)
    for bad in ([], -1, [-1], [1, -1], "3", 2.0, True, [True]):
        rejected("forced_eos_token_id", bad, single + " (ints >= 0)")
    for ok in (None, -1, 0, 2 ** 63 - 1, -2 ** 63, [-1, 5], [2 ** 63 - 1, -2 ** 63]):
        accepted("eos_token_id", ok)
    for bad in (2 ** 63, -2 ** 63 - 1, [], [2 ** 63], [-2 ** 63 - 1], 1.5, True, ["1"]):
        rejected("eos_token_id", bad, single + " (64-bit ints)")
    for ok in (None, -1, 0, 2 ** 63 - 1, -2 ** 63):
        accepted("pad_token_id", ok)
    for bad in (2 ** 63, -2 ** 63 - 1, True, 2.0, [1]):
        rejected("pad_token_id", bad, "must be None or a 64-bit int")


def test_word_list_fields():
    flat = "must be None or a non-empty list of non-empty lists of token ids (ints >= 0)"
    for ok in (None, [[0]], [[1, 2], [3]]):
        accepted("bad_words_ids", ok)
    for bad in ([], [[]], [5], [[-1]], [[1], [True]], "x", [(1,)], [[1], []], [[[1]]]):
        rejected("bad_words_ids", bad, flat)
    nested = flat + ", or of lists of such lists (disjunctive constraints)"
    for ok in (None, [[1, 2]], [[[1], [2, 3]]], [[1], [[2], [3]]]):
        accepted("force_words_ids", ok)
    for bad in ([], [[]], [[[]]], [[[1], []]], [[[-1]]], [[[1], [2.0]]], [[[1], 2]], [5], [[(1,)]]):
        rejected("force_words_ids", bad, nested)


def test_structured_fields():
    pairs = "must be None or a non-empty list of [generation index >= 1, token id] pairs"
    for ok in (None, [[1, 0]], ((2, 5),), [[1, 3], [4, 7]]):
        accepted("forced_decoder_ids", ok)
    for bad in ([], [[0, 1]], [[1, -1]], [[1]], [[1, 2, 3]], [[True, 1]], [[1.0, 1]], [[1, 1.0]], [1], "12"):
        rejected("forced_decoder_ids", bad, pairs)
    decay = "must be None or a pair (start_index: int >= 0, decay_factor: float)"
    for ok in (None, (0, 1.5), [3, 2.0], (1, 1)):
        accepted("exponential_decay_length_penalty", ok)
    for bad in ((-1, 1.5), (1,), (1, 2.0, 3), (1.0, 1.5), (1, "x"), (1, float("nan")), (True, 1.5), 1.5):
        rejected("exponential_decay_length_penalty", bad, decay)
    for ok in (None, {}, {(1,): 1.0}):
        accepted("sequence_bias", ok)
    for bad in ([((1,), 1.0)], "x"):
        rejected("sequence_bias", bad, "must be None or a dict {(token id, ...): float bias}")
    accepted("constraints", None)
    accepted("constraints", [object()])
    for bad in ([], "x", (object(),)):
        rejected("constraints", bad, "must be None or a non-empty list of constraints")
    accepted("generation_kwargs", {})
    rejected("generation_kwargs", None, "must be a dict")
    accepted("num_assistant_tokens_schedule", "constant")
    rejected("num_assistant_tokens_schedule", None, "must be a string")
    for name in ("_commit_hash", "transformers_version"):
        accepted(name, None)
        accepted(name, "4.37.2")
        rejected(name, 4, "must be None or a string")
    for ok in (True, False, "never"):
        accepted("early_stopping", ok)
    for bad in (1, 0, "yes", None, "Never"):
        rejected("early_stopping", bad, "must be True, False or 'never'")


def test_a_long_value_is_cut_at_200_characters_in_messages():
    at_limit = "x" * 198  # repr: 200 characters
    message = refused("pad_token_id", GenerationConfig(pad_token_id=at_limit).check_types)
    assert message.endswith(f"got '{at_limit}' (str)")
    over = "x" * 199  # repr: 201 characters
    message = refused("pad_token_id", GenerationConfig(pad_token_id=over).check_types)
    assert message.endswith(f"got '{over[:199]}... (str)")


def test_check_types_prefixes_the_messages_with_where():
    message = refused("^file.json: max_length must be an int >= 0, got -1 \\(int\\)$",
                      GenerationConfig(max_length=-1).check_types, where="file.json: ")
    assert message


# --- validate(): the processors' values, each at its bound --------------------------------------------------

def test_repetition_penalties_must_be_positive_floats():
    for name in ("repetition_penalty", "encoder_repetition_penalty"):
        for ok in (1.0, 1, 1e-9, 2.5, None):
            validate(**{name: ok})
        for bad in (0.0, -0.5, 0, 2, -1):
            refused(rf"^{name} has to be a strictly positive float \(upstream requires a float, e\.g\. 1\.2\), "
                    rf"got {re.escape(show(bad))}$", validate, **{name: bad})


def test_top_p_and_typical_p_lie_in_zero_one():
    for name in ("top_p", "typical_p"):
        for ok in (1.0, 1, 1e-9, 0.5, None):
            validate(**{name: ok})
        for bad in (0.0, 0, -0.1, 1.0 + 1e-9, 2):
            refused(rf"^{name} must be a float in \(0, 1\] \(1 disables it\), got {re.escape(show(bad))}$",
                    validate, **{name: bad})


def test_cutoffs_lie_in_zero_one():
    for name in ("epsilon_cutoff", "eta_cutoff"):
        for ok in (0.0, 0, 1e-9, 0.999999, None):
            validate(**{name: ok})
        for bad in (1.0, 1, -1e-9, 3.0):
            refused(rf"^{name} must be a float in \[0, 1\) \(0 disables it\), got {re.escape(show(bad))}$",
                    validate, **{name: bad})


def test_sampling_temperature_must_be_a_positive_float():
    for ok in (1.0, 1, 0.5, 1e-9, None):
        validate(do_sample=True, temperature=ok)
    hint = " If you're looking for greedy decoding, set do_sample=False."
    for bad, tail in ((0.0, hint), (0, hint), (-1.0, ""), (2, ""), (-3, "")):
        message = refused(rf"^temperature \(={re.escape(show(bad))}\) has to be a strictly positive float, "
                          r"otherwise your next token scores will be invalid\.", validate, do_sample=True,
                          temperature=bad)
        assert message.endswith("invalid." + tail), message
    validate(do_sample=False, temperature=0.0)  # not sampling: a warning only (upstream's)
    validate(do_sample=False, temperature=-2)


def test_diversity_penalty_needs_group_beam_search():
    for ok in (0, 0.0, None):
        validate(diversity_penalty=ok)
    validate(diversity_penalty=0.5, num_beams=2, num_beam_groups=2)
    for bad in (1, -0.5, -1):
        refused(rf"^diversity_penalty should be a float strictly larger than 0, got {re.escape(show(bad))}$",
                validate, diversity_penalty=bad, num_beams=4, num_beam_groups=2)
    for beams, groups in ((1, 1), (2, 1), (4, 1)):
        refused(rf"^diversity_penalty=0\.5 needs group beam search: num_beams \({beams}\) and num_beam_groups "
                rf"\({groups}\) must both be > 1$", validate, diversity_penalty=0.5, num_beams=beams,
                num_beam_groups=groups)


def test_num_beam_groups_at_most_num_beams():
    validate(num_beams=3, num_beam_groups=3, diversity_penalty=1.0)
    refused(r"^num_beam_groups \(4\) has to be smaller or equal to num_beams \(3\)$", validate, num_beams=3,
            num_beam_groups=4, diversity_penalty=1.0)


def test_bad_words_of_eos_only_are_refused():
    validate(bad_words_ids=[[2, 2]], eos_token_id=2)
    validate(bad_words_ids=[[2], [3]], eos_token_id=2)
    validate(bad_words_ids=[[2]], eos_token_id=None)
    validate(bad_words_ids=[[2]], eos_token_id=[3])
    refused(r"^bad_words_ids \[\[2\]\] holds only eos tokens", validate, bad_words_ids=[[2]], eos_token_id=2)
    refused(r"^bad_words_ids \[\[2\], \[3\]\] holds only eos tokens", validate, bad_words_ids=[[2], [3]],
            eos_token_id=[3, 2])


def test_decay_needs_eos():
    validate(exponential_decay_length_penalty=(2, 1.5), eos_token_id=2)
    refused("^exponential_decay_length_penalty raises the eos score: it needs eos_token_id$", validate,
            exponential_decay_length_penalty=(2, 1.5), eos_token_id=None)


def test_refused_options_accept_exactly_their_no_op_values():
    for name, (no_ops, what) in REFUSED.items():
        for ok in no_ops:
            validate(**{name: ok})
    bad_values = {"max_time": [1.0, 0], "guidance_scale": [1.5, 0, 2, -1.0], "num_assistant_tokens": [4, 6],
                  "num_assistant_tokens_schedule": ["constant", "Heuristic"], "prompt_lookup_num_tokens": [0, 3],
                  "generation_kwargs": [{"a": 1}]}
    assert set(bad_values) == set(REFUSED)
    for name, values in bad_values.items():
        no_ops, what = REFUSED[name]
        for bad in values:
            refused(rf"^{name}={re.escape(show(bad))} is not implemented by refimpl \(upstream: {re.escape(what)}\); "
                    rf"leave it at {re.escape(repr(no_ops[0]))}$", validate, **{name: bad})


# --- validate(): token ids within the vocabulary -----------------------------------------------------------

TOKEN_FIELDS = {  # field: a value holding the token t
    "bos_token_id": lambda t: t, "decoder_start_token_id": lambda t: t, "forced_bos_token_id": lambda t: t,
    "forced_eos_token_id": lambda t: [1, t], "bad_words_ids": lambda t: [[1], [2, t]],
    "force_words_ids": lambda t: [[1], [[2], [t]]], "suppress_tokens": lambda t: [0, t],
    "begin_suppress_tokens": lambda t: [t], "forced_decoder_ids": lambda t: [[1, 0], [2, t]],
    "sequence_bias": lambda t: {(1,): 1.0, (2, t): -1.0},
}


@pytest.mark.parametrize("name", list(TOKEN_FIELDS))
def test_token_ids_lie_in_the_vocabulary(name):
    extra = {"num_beams": 2} if name == "force_words_ids" else {}
    for ok in (0, VOCAB - 1):
        validate(**{name: TOKEN_FIELDS[name](ok)}, **extra)
    for bad in (VOCAB, VOCAB + 10, 2 ** 70):
        refused(rf"^{name} holds the token id {bad}, outside the vocabulary \[0, {VOCAB}\) of this model$",
                validate, **{name: TOKEN_FIELDS[name](bad)}, **extra)


@pytest.mark.parametrize("uses", [dict(min_length=1), dict(min_new_tokens=1),
                                  dict(exponential_decay_length_penalty=(1, 1.5))])
def test_an_eos_that_indexes_the_scores_lies_in_the_vocabulary_counted_from_either_end(uses):
    for ok in (-VOCAB, -1, 0, VOCAB - 1, [2, -VOCAB]):
        validate(eos_token_id=ok, **uses)
    for bad in (VOCAB, -VOCAB - 1):
        refused(rf"^eos_token_id holds the token id {bad}, outside the vocabulary \[-{VOCAB}, {VOCAB}\) of this "
                r"model$", validate, eos_token_id=[2, bad], **uses)


def test_an_eos_only_compared_may_be_any_int():
    for eos in (VOCAB, -VOCAB - 1, 2 ** 62, -1):
        validate(eos_token_id=eos, min_length=0, min_new_tokens=0)
        validate(eos_token_id=eos, min_new_tokens=None)


# --- validate(): the documented limits ----------------------------------------------------------------------

def test_lengths_within_the_position_table():
    validate(max_new_tokens=POSITIONS)
    validate(max_length=POSITIONS)
    validate(max_length=10 ** 9, max_new_tokens=5)  # max_new_tokens decides
    refused(rf"^max_new_tokens={POSITIONS + 1} exceeds this model's position limit {POSITIONS} "
            r"\(max_position_embeddings\): refimpl generates at most that many positions$", validate,
            max_new_tokens=POSITIONS + 1)
    refused(rf"^max_length={POSITIONS + 1} exceeds this model's position limit {POSITIONS}", validate,
            max_length=POSITIONS + 1)
    cfg = GenerationConfig(max_length=10 ** 6)
    cfg.validate(ModelConfig(max_position_embeddings=None))  # no table (XGLM's sinusoid): no limit


def test_position_limit_prefers_the_decoders_table():
    assert position_limit(ModelConfig(max_position_embeddings=7)) == 7
    assert position_limit(ModelConfig(max_position_embeddings=7, max_decoder_position_embeddings=5)) == 5
    assert position_limit(ModelConfig(max_position_embeddings=7, max_decoder_position_embeddings=None)) == 7
    assert position_limit(ModelConfig(max_position_embeddings=None)) is None


def test_rows_decoded_side_by_side_are_bounded():
    rows = LIMITS["max_rows"]
    assert rows == 2 ** 16 and LIMITS["max_score_elements"] == 2 ** 28
    GenerationConfig(num_beams=2).check_batch(rows // 2, 1)
    GenerationConfig(num_beams=1).check_batch(10 ** 9, 10 ** 9)  # one row per input: nothing kept per beam
    GenerationConfig(do_sample=True, num_return_sequences=4).check_batch(rows // 4, 1)
    refused(rf"^batch \({rows // 2 + 1}\) \* num_beams or num_return_sequences \(2\) = {rows + 2} rows exceeds "
            rf"refimpl's limit of {rows} rows decoded side by side$",
            GenerationConfig(num_beams=2).check_batch, rows // 2 + 1, 1)
    refused(rf"num_return_sequences \(4\) = {rows + 4} rows", GenerationConfig(
        do_sample=True, num_return_sequences=4).check_batch, rows // 4 + 1, 1)
    refused(r"^batch \(1\) \* num_beams or num_return_sequences \(65537\)", validate, num_beams=rows + 1)
    validate(num_beams=rows)


def test_scores_per_step_are_bounded():
    limit = LIMITS["max_score_elements"]
    GenerationConfig(num_beams=4).check_batch(2, limit // 8)
    refused(rf"^batch \(2\) \* num_beams \(4\) rows with a vocabulary of {limit // 8 + 1} need {8 * (limit // 8 + 1)} "
            rf"scores per step, above refimpl's limit of {limit}$",
            GenerationConfig(num_beams=4).check_batch, 2, limit // 8 + 1)
    refused(r"with a vocabulary of", lambda: GenerationConfig(num_beams=2).validate(
        ModelConfig(vocab_size=limit // 2 + 1)))
    GenerationConfig(num_beams=2).validate(ModelConfig(vocab_size=limit // 2))


# --- updated(): generate() arguments ------------------------------------------------------------------------

def test_generate_arguments_pass_only_as_their_no_op_values():
    base = GenerationConfig()
    for name in GENERATE_ARGUMENTS:
        cfg, rest = base.updated(**{name: None}, max_length=7, foo=3)
        assert cfg.max_length == 7 and rest == {"foo": 3} and base.max_length == 20
    base.updated(synced_gpus=False)
    base.updated(logits_processor=[], stopping_criteria=[])
    bad = {"synced_gpus": [True], "logits_processor": [[1], ()], "stopping_criteria": [[0]],
           "prefix_allowed_tokens_fn": [[], False], "assistant_model": [False], "streamer": [0],
           "negative_prompt_ids": [np.array([1])], "negative_prompt_attention_mask": [[]]}
    assert set(bad) == set(GENERATE_ARGUMENTS)
    for name, values in bad.items():
        for value in values:
            refused(rf"^generate\(\): `{name}` is not implemented by refimpl; it must be "
                    rf"{re.escape(GENERATE_ARGUMENTS[name])}, got ", base.updated, **{name: value})


def test_eos_list():
    assert eos_list(None) == [] and eos_list(3) == [3] and eos_list(np.int64(4)) == [4]
    assert eos_list([1, 2]) == [1, 2] and eos_list((5,)) == [5] and eos_list(0) == [0]
