"""GenerationConfig (refimpl/generation/config.py): every validation message, the refused options, the
documented limits and generation_config.json checks, through generate() on the golden OPT / XGLM checkpoints
(vocabulary 29, 40 positions)."""
import json
import shutil

import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl.generation import GenerationConfig
from refimpl.generation.config import GENERATE_ARGUMENTS, LIMITS, REFUSED

GEN = GOLDEN / "generation"
PROMPT = np.array([[5, 6, 7]])
BIG = 2 ** 63  # reported as given, not wrapped to -9223372036854775808


@pytest.fixture(scope="module")
def opt(load_model):
    return load_model(GEN / "opt", None, "float32")


@pytest.fixture(scope="module")
def xglm(load_model):
    return load_model(GEN / "xglm", None, "float32")


REFUSED_VALUES = [  # (generate() kwargs, what the message must contain)
    (dict(top_p=-1.0), r"top_p must be a float in \(0, 1\]"),
    (dict(top_p=0.0), r"top_p must be a float in \(0, 1\].*0.0"),
    (dict(top_p=1.5), r"top_p must be a float in \(0, 1\]"),
    (dict(top_p="0.5"), r"top_p must be None or a real number.*'0.5' \(str\)"),
    (dict(top_k=-5), r"top_k must be None or an int >= 0, got -5"),
    (dict(top_k=2.5), r"top_k must be None or an int >= 0, got 2.5"),
    (dict(typical_p=0.0), r"typical_p must be a float in \(0, 1\]"),
    (dict(epsilon_cutoff=1.0), r"epsilon_cutoff must be a float in \[0, 1\)"),
    (dict(eta_cutoff=-0.1), r"eta_cutoff must be a float in \[0, 1\)"),
    (dict(do_sample=True, temperature=0.0), r"temperature \(=0.0 \(float\)\) has to be a strictly positive float.*"
                                            r"do_sample=False"),
    (dict(do_sample=True, temperature=2), r"temperature \(=2 \(int\)\) has to be a strictly positive float"),
    (dict(repetition_penalty=0), r"repetition_penalty has to be a strictly positive float.*got 0 \(int\)"),
    (dict(repetition_penalty=0.0), r"repetition_penalty has to be a strictly positive float"),
    (dict(repetition_penalty=-1.0), r"repetition_penalty has to be a strictly positive float"),
    (dict(repetition_penalty=2), r"repetition_penalty .*requires a float"),
    (dict(encoder_repetition_penalty=0.0), r"encoder_repetition_penalty has to be a strictly positive float"),
    (dict(num_beams=0), r"^num_beams must be None or an int >= 1, got 0"),
    (dict(num_beams="3"), r"^num_beams must be None or an int >= 1, got '3' \(str\)"),
    (dict(num_beams=2.0), r"^num_beams must be None or an int >= 1"),
    (dict(num_beams=True), r"^num_beams must be None or an int >= 1"),
    (dict(num_beams=2, num_return_sequences=3), r"`num_return_sequences` \(3\) has to be smaller or equal to "
                                                r"`num_beams` \(2\)"),
    (dict(num_return_sequences=2), r"Greedy methods without beam search do not support `num_return_sequences`"),
    (dict(num_return_sequences=0), r"num_return_sequences must be an int >= 1"),
    (dict(max_new_tokens=-1), r"max_new_tokens must be None or an int >= 0"),
    (dict(min_length=-1), r"min_length must be an int >= 0"),
    (dict(no_repeat_ngram_size=-2), r"no_repeat_ngram_size must be None or an int >= 0"),
    (dict(encoder_no_repeat_ngram_size=1.5), r"encoder_no_repeat_ngram_size must be None or an int >= 0"),
    (dict(early_stopping="yes"), r"early_stopping must be True, False or 'never'"),
    (dict(early_stopping=1), r"early_stopping must be True, False or 'never'"),
    (dict(do_sample=1), r"do_sample must be True or False"),
    (dict(bad_words_ids=[[29]]), r"bad_words_ids holds the token id 29, outside the vocabulary \[0, 29\)"),
    (dict(bad_words_ids=[[BIG]]), r"bad_words_ids holds the token id 9223372036854775808, outside"),
    (dict(bad_words_ids=[[-1]]), r"bad_words_ids must be None or a non-empty list of non-empty lists of token ids"),
    (dict(bad_words_ids=[]), r"bad_words_ids must be None or a non-empty list"),
    (dict(bad_words_ids=[[]]), r"bad_words_ids must be None or a non-empty list of non-empty lists"),
    (dict(bad_words_ids=[5]), r"bad_words_ids must be None or a non-empty list of non-empty lists"),
    (dict(bad_words_ids=[[2]], eos_token_id=2), r"bad_words_ids \[\[2\]\] holds only eos tokens"),
    (dict(force_words_ids=[[30]], num_beams=2), r"force_words_ids holds the token id 30, outside the vocabulary"),
    (dict(force_words_ids=[[[3], [BIG]]], num_beams=2), r"force_words_ids holds the token id 9223372036854775808"),
    (dict(forced_bos_token_id=29), r"forced_bos_token_id holds the token id 29, outside the vocabulary"),
    (dict(forced_bos_token_id=BIG), r"forced_bos_token_id holds the token id 9223372036854775808"),
    (dict(forced_eos_token_id=[2, 40]), r"forced_eos_token_id holds the token id 40"),
    (dict(eos_token_id=BIG), r"eos_token_id must be None, a token id or a non-empty list of token ids \(64-bit"),
    (dict(eos_token_id=2 ** 62, min_new_tokens=1), r"eos_token_id holds the token id 4611686018427387904, outside"),
    (dict(eos_token_id=-30, min_length=2), r"eos_token_id holds the token id -30, outside the vocabulary \[-29, 29\)"),
    (dict(eos_token_id=[2, -30], exponential_decay_length_penalty=(1, 1.5)), r"eos_token_id holds the token id -30"),
    (dict(eos_token_id=1.5), r"eos_token_id must be None, a token id or a non-empty list of token ids \(64-bit ints\)"),
    (dict(eos_token_id=[2, "3"]), r"eos_token_id must be None, a token id or a non-empty list of token ids"),
    (dict(eos_token_id=[]), r"eos_token_id must be None, a token id or a non-empty list of token ids"),
    (dict(pad_token_id=2.0), r"pad_token_id must be None or a 64-bit int, got 2.0 \(float\)"),
    (dict(pad_token_id=True), r"pad_token_id must be None or a 64-bit int"),
    (dict(pad_token_id=BIG), r"pad_token_id must be None or a 64-bit int, got 9223372036854775808"),  # torch: overflow
    (dict(bos_token_id=BIG), r"bos_token_id holds the token id 9223372036854775808"),
    (dict(decoder_start_token_id=-3), r"decoder_start_token_id must be None or an int >= 0"),
    (dict(suppress_tokens=[3, 29]), r"suppress_tokens holds the token id 29"),
    (dict(begin_suppress_tokens=[BIG]), r"begin_suppress_tokens holds the token id 9223372036854775808"),
    (dict(begin_suppress_tokens=3), r"begin_suppress_tokens must be None or a list of token ids"),
    (dict(sequence_bias={(3, 29): 1.0}), r"sequence_bias holds the token id 29"),
    (dict(sequence_bias={(BIG,): 1.0}), r"sequence_bias holds the token id 9223372036854775808"),
    (dict(sequence_bias={(3,): 1}), r"sequence_bias: each bias has to be a float, got 1 \(int\)"),
    (dict(sequence_bias={"3": 1.0}), r"sequence_bias: each key has to be a non-empty tuple of token ids"),
    (dict(sequence_bias={(): 1.0}), r"sequence_bias: each key has to be a non-empty tuple"),
    (dict(sequence_bias={}), r"sequence_bias has to be a non-empty dictionary"),
    (dict(sequence_bias=[((3,), 1.0)]), r"sequence_bias must be None or a dict"),
    (dict(forced_decoder_ids=[[0, 3]]), r"forced_decoder_ids must be None or a non-empty list of \[generation index"),
    (dict(forced_decoder_ids=[[1, 29]]), r"forced_decoder_ids holds the token id 29"),
    (dict(exponential_decay_length_penalty=(2, 1.5), eos_token_id=None), r"exponential_decay_length_penalty .*needs "
                                                                         r"eos_token_id"),
    (dict(exponential_decay_length_penalty=(2,)), r"exponential_decay_length_penalty must be None or a pair"),
    (dict(diversity_penalty=1.0), r"diversity_penalty=1.0 needs group beam search"),
    (dict(diversity_penalty=1, num_beams=4, num_beam_groups=2), r"diversity_penalty should be a float"),
    (dict(num_beams=4, num_beam_groups=3, diversity_penalty=1.0), r"`num_beams` should be divisible by "
                                                                  r"`num_beam_groups`"),
    (dict(num_beams=4, num_beam_groups=2), r"`diversity_penalty` should be greater than `0.0`"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, do_sample=True), r"`do_sample` must be set to "
                                                                                  r"`False`"),
    (dict(num_beams=2, num_beam_groups=3, diversity_penalty=1.0), r"num_beam_groups \(3\) has to be smaller or "
                                                                  r"equal to num_beams \(2\)"),
    (dict(num_beams=2, constraints=[object()], do_sample=True), r"`constraints` is not `None`.*`do_sample`"),
    (dict(renormalize_logits=1), r"renormalize_logits must be True or False"),
    (dict(remove_invalid_values="yes"), r"remove_invalid_values must be True or False"),
    (dict(max_new_tokens=41), r"max_new_tokens=41 exceeds this model's position limit 40"),
    (dict(max_length=10 ** 9, max_new_tokens=None), r"max_length=1000000000 exceeds this model's position limit 40"),
    (dict(num_beams=10 ** 6), r"1000000 rows exceeds refimpl's limit of 65536 rows"),
]


@pytest.mark.parametrize("kwargs, message", REFUSED_VALUES, ids=[str(k)[:60] for k, _ in REFUSED_VALUES])
def test_generate_refuses_with_a_message_naming_the_problem(opt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        opt.generate(PROMPT, max_new_tokens=kwargs.pop("max_new_tokens", 3), **kwargs)


@pytest.mark.parametrize("never", [-1, -29, 29, BIG - 1, -BIG])
def test_pad_and_eos_may_be_any_int_as_upstream_and_an_eos_never_generated_changes_nothing(opt, never):
    """Upstream's recipes set pad_token_id = eos_token_id = -1 ("generate to max length"): an id no step can
    produce, so the result is generation without an eos (greedy and beam search)."""
    for options in (dict(), dict(num_beams=2)):
        expected = opt.generate(PROMPT, max_new_tokens=4, eos_token_id=None, **options)
        got = opt.generate(PROMPT, max_new_tokens=4, pad_token_id=never, eos_token_id=never, **options)
        np.testing.assert_array_equal(got, expected, err_msg=f"pad = eos = {never}, {options}")
    np.testing.assert_array_equal(opt.generate(PROMPT, max_new_tokens=4, pad_token_id=never, eos_token_id=[never, 1]),
                                  opt.generate(PROMPT, max_new_tokens=4, pad_token_id=0, eos_token_id=[1]))


def test_a_pad_outside_the_vocabulary_fed_back_to_the_model_is_refused(opt):
    """A row that finished (its eos drawn) then receives the pad, which the next step feeds to the model:
    upstream's embedding raises IndexError; refimpl says which id is outside the vocabulary."""
    first = int(opt.generate(PROMPT, max_new_tokens=1)[0, -1])  # the greedy first token, used as the eos
    with pytest.raises(ValueError, match=r"input_ids holds id -1, outside the vocabulary of 29"):
        opt.generate(np.concatenate([PROMPT, PROMPT + 1]), max_new_tokens=3, eos_token_id=first, pad_token_id=-1)


def test_xglm_with_no_eos_and_a_huge_max_new_tokens_is_refused_before_it_starts(xglm):
    """Upstream's XGLM would run until memory ends (its sinusoidal positions have no end)."""
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000000 exceeds this model's position limit 40"):
        xglm.generate(PROMPT, max_new_tokens=10 ** 9, eos_token_id=None)
    out = xglm.generate(PROMPT, max_new_tokens=40, eos_token_id=None)  # the limit itself is allowed
    assert out.shape == (1, 43)


def test_the_memory_bound_counts_the_vocabulary():
    cfg = GenerationConfig(num_beams=4096)
    with pytest.raises(ValueError, match=r"num_beams \(4096\) rows with a vocabulary of 131072 need 536870912 scores"):
        cfg.validate(type("C", (), {"vocab_size": 2 ** 17, "max_position_embeddings": 20})())


def test_the_score_bound_counts_the_batch():
    with pytest.raises(ValueError, match=r"batch \(64\) \* num_beams \(64\) rows with a vocabulary of 131072 need "
                                         r"536870912 scores"):
        GenerationConfig(num_beams=64).check_batch(64, 2 ** 17)
    GenerationConfig(num_beams=64).check_batch(16, 2 ** 17)  # 2**28 exactly: allowed


def test_the_memory_bound_counts_the_batch(opt):
    rows = LIMITS["max_rows"] // 64 + 1
    with pytest.raises(ValueError, match=rf"batch \(128\) \* num_beams or num_return_sequences \({rows}\)"):
        opt.generate(np.tile(PROMPT, (128, 1)), num_beams=rows, max_new_tokens=2)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_options_refimpl_does_not_implement_are_refused_by_name(opt, name):
    value = {"max_time": 1.0, "guidance_scale": 1.5, "num_assistant_tokens": 3,
             "num_assistant_tokens_schedule": "constant", "prompt_lookup_num_tokens": 2,
             "generation_kwargs": {"a": 1}}[name]
    with pytest.raises(ValueError, match=rf"^{name}=.* is not implemented by refimpl"):
        opt.generate(PROMPT, max_new_tokens=2, **{name: value})
    default = getattr(GenerationConfig(), name)
    opt.generate(PROMPT, max_new_tokens=2, **{name: default})  # the default is accepted


@pytest.mark.parametrize("name", sorted(GENERATE_ARGUMENTS))
def test_generate_arguments_refimpl_does_not_implement_are_refused_unless_no_op(opt, name):
    value = True if name == "synced_gpus" else [lambda ids, scores: scores] if name in (
        "logits_processor", "stopping_criteria") else np.array([[1]]) if "negative" in name else object()
    with pytest.raises(ValueError, match=rf"generate\(\): `{name}` is not implemented by refimpl"):
        opt.generate(PROMPT, max_new_tokens=2, **{name: value})
    expected = opt.generate(PROMPT, max_new_tokens=2)
    no_op = [] if name in ("logits_processor", "stopping_criteria") else False if name == "synced_gpus" else None
    np.testing.assert_array_equal(opt.generate(PROMPT, max_new_tokens=2, **{name: no_op}), expected)


def test_updated_splits_options_from_model_kwargs_and_keeps_the_original():
    base = GenerationConfig()
    new, model_kwargs = base.updated(num_beams=3, attention_mask=1, streamer=None)
    assert new.num_beams == 3 and base.num_beams == 1 and model_kwargs == {"attention_mask": 1}


def test_num_beams_none_means_one_as_upstream():
    cfg = GenerationConfig(num_beams=None)
    with pytest.warns(UserWarning, match="defaulting to 1"):
        cfg.validate(type("C", (), {"vocab_size": 10, "max_position_embeddings": 20})())
    assert cfg.num_beams == 1


# --- generation_config.json -------------------------------------------------------------------------------

@pytest.fixture()
def checkpoint(tmp_path):
    directory = tmp_path / "opt"
    shutil.copytree(GEN / "opt", directory)
    return directory


def write(directory, text):
    (directory / "generation_config.json").write_text(text)
    return refimpl.from_pretrained(directory)


@pytest.mark.parametrize("content, message", [
    ({"num_beams": "3"}, r"generation_config.json: num_beams must be None or an int >= 1, got '3' \(str\)"),
    ({"eos_token_id": "2"}, r"generation_config.json: eos_token_id must be None, a token id"),
    ({"bad_words_ids": {"a": 1}}, r"generation_config.json: bad_words_ids must be None or a non-empty list"),
    ({"do_sample": "true"}, r"generation_config.json: do_sample must be True or False"),
    ({"temperature": [1]}, r"generation_config.json: temperature must be None or a real number"),
    ({"max_length": 1.5}, r"generation_config.json: max_length must be an int >= 0"),
    ({"early_stopping": "sometimes"}, r"generation_config.json: early_stopping must be True, False or 'never'"),
    ({"transformers_version": 4}, r"generation_config.json: transformers_version must be None or a string"),
    ({"streamer": None}, r"generation_config.json: `streamer` is an argument of generate\(\)"),
])
def test_generation_config_json_fields_are_type_checked_naming_the_file(checkpoint, content, message):
    model = write(checkpoint, json.dumps(content))
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, max_new_tokens=2)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"generation_config.json is not valid JSON"),
    ("[1, 2]", r"generation_config.json must hold a JSON object, got list"),
    ("[" * 100000 + "]" * 100000, r"generation_config.json is not valid JSON"),
], ids=["syntax", "not an object", "nested 1e5 deep"])
def test_unreadable_generation_config_json_is_a_clear_error(checkpoint, text, message):
    model = write(checkpoint, text)
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, max_new_tokens=2)


def test_generation_config_json_that_is_not_a_regular_file_is_refused(checkpoint):
    (checkpoint / "generation_config.json").unlink(missing_ok=True)
    (checkpoint / "generation_config.json").mkdir()
    with pytest.raises(ValueError, match="generation_config.json is not a regular file"):
        refimpl.from_pretrained(checkpoint).generate(PROMPT, max_new_tokens=2)


def test_generation_config_json_replaces_the_model_config_as_upstream(checkpoint):
    """Upstream's from_pretrained: GenerationConfig.from_pretrained (defaults plus the file), not the model
    config's eos; unknown keys are kept aside, as upstream keeps them, and change nothing."""
    model = write(checkpoint, json.dumps({"max_length": 9, "some_future_option": 1}))
    cfg = GenerationConfig.for_model(model)
    assert cfg.eos_token_id is None and cfg.max_length == 9
    assert model.generate(PROMPT).shape == (1, 9)


@pytest.mark.parametrize("kwargs, name", [(dict(temperature=0.5), "temperature"), (dict(top_k=3), "top_k"),
                                          (dict(eta_cutoff=0.1), "eta_cutoff"),
                                          (dict(early_stopping=True), "early_stopping"),
                                          (dict(length_penalty=2.0), "length_penalty")])
def test_options_the_mode_does_not_use_warn_as_upstream(opt, kwargs, name):
    with pytest.warns(UserWarning, match=rf"`{name}` is set to .* this flag is only used in"):
        opt.generate(PROMPT, max_new_tokens=2, **kwargs)
