"""Hostile configs, tokenizer files and model inputs: each is refused with the library's own error naming the
file or argument, the field or value, and what was expected; or it behaves as upstream does (README "Safety").
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import refimpl
from refimpl.config import ConfigError
from refimpl.models import load_config

from hostile import GOLDEN_FORMATS, ROOT, assert_clean_error, run_limited

FAMILIES = {  # model_type -> a small checkpoint directory (config.json + weights)
    "opt": GOLDEN_FORMATS / "opt-OPTForCausalLM" / "safetensors",
    "xglm": GOLDEN_FORMATS / "xglm-XGLMForCausalLM" / "safetensors",
    "nezha": GOLDEN_FORMATS / "nezha-NezhaForMaskedLM" / "safetensors",
    "led": GOLDEN_FORMATS / "led-LEDForConditionalGeneration" / "safetensors",
}
TOKENIZERS = ROOT / "golden" / "tokenizers"
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _config(family):
    return json.loads((FAMILIES[family] / "config.json").read_text())


def _write_config(tmp_path, family, **changes):
    directory = tmp_path / family
    shutil.copytree(FAMILIES[family], directory, dirs_exist_ok=True)
    (directory / "config.json").write_text(json.dumps(dict(_config(family), **changes)))
    return directory


# ---------------------------------------------------------------- config.json


@pytest.mark.parametrize("family, field, value, expected", [
    ("opt", "hidden_size", "16", "an integer"),
    ("opt", "hidden_size", 16.0, "an integer"),
    ("opt", "num_hidden_layers", -1, "from 1"),
    ("opt", "num_hidden_layers", 0, "from 1"),
    ("opt", "num_hidden_layers", True, "an integer"),
    ("opt", "num_attention_heads", 5, "divisor of hidden_size"),
    ("opt", "id2label", ["NEG", "POS"], "an object"),
    ("opt", "id2label", {"zero": "NEG"}, "label index"),
    ("opt", "num_labels", "3", "integer"),
    ("opt", "activation_function", "softmaxx", "one of"),
    ("opt", "do_layer_norm_before", "yes", "true or false"),
    ("opt", "pad_token_id", 10**9, "token id"),
    ("opt", "eos_token_id", -5, "token id"),
    ("opt", "problem_type", "clustering", "one of"),
    ("opt", "vocab_size", 0, ">= 1"),
    ("xglm", "attention_heads", 0, "from 1"),
    ("xglm", "num_layers", -1, "from 1"),
    ("xglm", "num_hidden_layers", -1, "the same value as 'num_layers'"),  # upstream's alias would win silently
    ("xglm", "scale_embedding", 1, "true or false"),
    ("nezha", "max_relative_position", -3, ">= 0"),
    ("nezha", "hidden_act", 7, "a string"),
    ("nezha", "layer_norm_eps", "1e-12", "number"),
    ("nezha", "type_vocab_size", 0, ">= 1"),
    ("led", "attention_window", 3, "even"),
    ("led", "attention_window", [4], "one window per encoder layer"),
    ("led", "attention_window", [4, -4], "even integer > 0"),
    ("led", "decoder_attention_heads", 5, "divisor of d_model"),
    ("led", "encoder_layers", 10**9, "from 1"),
    ("led", "model_type", ["led"], "a string"),
])
def test_bad_config_fields_are_named(tmp_path, family, field, value, expected):
    directory = _write_config(tmp_path, family, **{field: value})
    with pytest.raises(ConfigError) as err:
        refimpl.from_pretrained(directory)
    message = str(err.value)
    assert str(directory / "config.json") in message and field.split("[")[0] in message and expected in message, message


_WRONG_VALUES = st.one_of(st.text(max_size=5), st.floats(allow_nan=True), st.booleans(), st.none(),
                          st.lists(st.integers(), max_size=2),
                          st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                          st.integers(-10**12, 10**12))


@HYPOTHESIS
@given(family=st.sampled_from(sorted(FAMILIES)), data=st.data())
def test_any_field_any_value_is_a_clean_error_or_a_working_model(tmp_path, family, data):
    """One config field replaced by an arbitrary JSON value: a ConfigError naming the field, or (when the
    value is valid) a config that builds; never another exception from deep inside."""
    raw = _config(family)
    field = data.draw(st.sampled_from(sorted(raw)))
    value = data.draw(_WRONG_VALUES)
    raw[field] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    try:
        load_config(tmp_path)
    except ConfigError as err:
        assert repr(field) in str(err) or f"{field} = {value!r}" in str(err) or field in ("num_labels", "id2label", "num_hidden_layers", "hidden_size",
                                                     "num_attention_heads"), str(err)
    except ValueError as err:  # the family lookup: an unsupported model_type
        assert field == "model_type" and "model_type" in str(err), str(err)


def test_valid_configs_still_load():
    for family, directory in FAMILIES.items():
        assert load_config(directory).model_type == family


# ---------------------------------------------------------------- tokenizer_config.json


@pytest.mark.parametrize("name, field, value", [
    ("opt", "padding_side", 3), ("opt", "padding_side", "middle"), ("opt", "model_max_length", "512"),
    ("opt", "model_max_length", -1), ("opt", "add_prefix_space", "yes"), ("opt", "clean_up_tokenization_spaces", 1),
    ("opt", "errors", "nonsense"), ("opt", "add_bos_token", None), ("opt", "bos_token", {"content": 5}),
    ("opt", "eos_token", {"content": "</s>", "lstrip": "no"}), ("opt", "pad_token", {"content": "<pad>", "special": 1}),
    ("bert-uncased", "do_lower_case", "true"),
    ("bert-uncased", "never_split", "abc"), ("bert-uncased", "strip_accents", 0),
    ("opt", "model_input_names", [1, 2]), ("opt", "tokenizer_class", ["GPT2Tokenizer"]),
    ("opt", "additional_special_tokens", "<x>"), ("opt", "added_tokens_decoder", [{"content": "<x>"}]),
    ("opt", "added_tokens_decoder", {"one": {"content": "<x>"}}), ("opt", "unk_token", 5),
])
def test_bad_tokenizer_config_fields_are_named(tmp_path, name, field, value):
    directory = tmp_path / name
    shutil.copytree(TOKENIZERS / name, directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps(dict(config, **{field: value})))
    with pytest.raises(ValueError) as err:
        refimpl.load_tokenizer(directory)
    message = str(err.value)
    named = [field] + ([f"{k} = {v!r}" for k, v in value.items() if k != "content"] if isinstance(value, dict) else [])
    assert any(n in message for n in named) or repr(value)[:20] in message, message


def test_tokenizer_json_nested_deep_is_a_clean_error(tmp_path):
    directory = tmp_path / "opt"
    shutil.copytree(TOKENIZERS / "opt", directory)
    (directory / "vocab.json").write_text("[" * 100_000 + "]" * 100_000)
    result = run_limited(f"import refimpl\nreport(lambda: refimpl.load_tokenizer({str(directory)!r}))")
    assert_clean_error(result, "vocab.json|nested")


def test_garbage_sentencepiece_model_is_a_clean_error(tmp_path):
    directory = tmp_path / "xglm"
    shutil.copytree(TOKENIZERS / "xglm-bpe", directory)
    (directory / "sentencepiece.bpe.model").write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    with pytest.raises(ValueError, match="not a valid sentencepiece model"):
        refimpl.load_tokenizer(directory)


# ---------------------------------------------------------------- the other tokenizer JSON files


def _tokenizer_dir(tmp_path, name="opt", files=None):
    """A copy of a golden tokenizer whose tokenizer_config.json has no added_tokens_decoder (so that
    special_tokens_map.json and added_tokens.json are read, as upstream reads them), with `files` written."""
    directory = tmp_path / name
    shutil.copytree(TOKENIZERS / name, directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("added_tokens_decoder", None)
    config_file.write_text(json.dumps(config))
    for file, text in (files or {}).items():
        (directory / file).write_text(text)
    return directory


@pytest.mark.parametrize("file, text, expected", [
    ("config.json", "[1, 2]", "config.json must hold a JSON object, found list"),
    ("config.json", '"opt"', "config.json must hold a JSON object, found str"),
    ("config.json", '{"model_type": ["opt"]}', "config.json: field 'model_type' = ['opt']: expected a string"),
    ("special_tokens_map.json", '["<s>", "</s>"]', "special_tokens_map.json must hold a JSON object, found list"),
    ("special_tokens_map.json", "7", "special_tokens_map.json must hold a JSON object, found int"),
    ("special_tokens_map.json", '{"bos_token": 5}', "special_tokens_map.json: field 'bos_token' = 5: expected a token"),
    ("special_tokens_map.json", '{"pad_token": {"content": 5}}', "field 'pad_token'"),
    ("special_tokens_map.json", '{"additional_special_tokens": "<x>"}',
     "field 'additional_special_tokens' = '<x>': expected a list of tokens"),
    ("special_tokens_map.json", '{"additional_special_tokens": [1]}', "field 'additional_special_tokens' = [1]"),
    ("added_tokens.json", '["<x>"]', "added_tokens.json must hold a JSON object, found list"),
    ("added_tokens.json", "null", "added_tokens.json must hold a JSON object, found NoneType"),
    ("added_tokens.json", '{"<x>": "5"}', "added_tokens.json: token '<x>' has id '5': expected an integer >= 0"),
    ("added_tokens.json", '{"<x>": 1.5}', "added_tokens.json: token '<x>' has id 1.5"),
    ("added_tokens.json", '{"<x>": -3}', "added_tokens.json: token '<x>' has id -3"),
    ("added_tokens.json", '{"<x>": %d}' % 2 ** 70, "added_tokens.json: token '<x>' has id 1180591620717411303424"),
])
def test_tokenizer_json_files_of_the_wrong_shape_are_named(tmp_path, file, text, expected):
    """Each file is refused naming the file, the field and the value (they were accepted silently or failed
    with "'list' object has no attribute 'get'")."""
    directory = _tokenizer_dir(tmp_path, files={file: text})
    if file == "config.json":  # read only to find the class: leave tokenizer_class out
        config = json.loads((directory / "tokenizer_config.json").read_text())
        config.pop("tokenizer_class")
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        refimpl.load_tokenizer(directory)
    assert str(directory / file) in str(err.value) and expected in str(err.value), str(err.value)


def test_the_well_formed_files_still_load(tmp_path):
    directory = _tokenizer_dir(tmp_path, files={"added_tokens.json": '{"<extra>": 50265}',
                                                "special_tokens_map.json": '{"additional_special_tokens": ["<extra>"]}'})
    tok = refimpl.load_tokenizer(directory)
    assert tok.convert_tokens_to_ids("<extra>") == 50265


@pytest.mark.parametrize("index", [2 ** 70, 2 ** 63, -2 ** 63 - 1])
def test_a_vocab_id_beyond_64_bits_is_named_not_an_overflow_when_encoding(tmp_path, index):
    directory = _tokenizer_dir(tmp_path)
    vocab = json.loads((directory / "vocab.json").read_text())
    token = next(iter(vocab))
    vocab[token] = index
    (directory / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError) as err:
        refimpl.load_tokenizer(directory)("Hello world", return_tensors="np")
    assert str(directory / "vocab.json") in str(err.value) and f"has id {index}" in str(err.value), str(err.value)


def test_a_vocab_id_at_the_64_bit_edge_is_kept_as_given(tmp_path):
    directory = _tokenizer_dir(tmp_path)
    vocab = json.loads((directory / "vocab.json").read_text())
    vocab["Ġhostile"] = 2 ** 63 - 1
    (directory / "vocab.json").write_text(json.dumps(vocab))
    tok = refimpl.load_tokenizer(directory)
    assert tok.convert_tokens_to_ids("Ġhostile") == 2 ** 63 - 1


# ---------------------------------------------------------------- tokenizers on hostile text


@pytest.mark.parametrize("name", ["opt", "led", "xglm-bpe"])
def test_lone_surrogates_are_a_clear_error(name):
    tok = refimpl.load_tokenizer(TOKENIZERS / name)
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at position 2"):
        tok("ab\ud800c")


def test_a_megabyte_pre_token_does_not_hang():
    """3 * 10^5 spaces, letters and "=" in one pre-token each, on the real roberta-base merges (50,000
    merges: many rounds): the subprocess limit catches a quadratic merge loop."""
    vocab = ROOT / "tests" / "data" / "vocab" / "roberta-base"
    load = (f"from refimpl.tokenizers import GPT2Tokenizer\n"
            f"tok = GPT2Tokenizer({str(vocab / 'vocab.json')!r}, {str(vocab / 'merges.txt')!r})\n")
    code = load + "report(lambda: [len(tok(c * 300_000)['input_ids']) for c in (' ', 'a', '=')])"
    result = run_limited(code, timeout=120)
    assert result[0] == "ok", result


# ---------------------------------------------------------------- model inputs


@pytest.fixture(scope="module")
def models():
    return {family: refimpl.from_pretrained(directory, dtype="float32") for family, directory in FAMILIES.items()}


def _call(model, family, **kwargs):
    if family == "led" and "input_ids" in kwargs:
        ids = kwargs["input_ids"]
        batch = len(ids) if isinstance(ids, list) else np.shape(ids)[0] if np.ndim(ids) else 1
        kwargs.setdefault("decoder_input_ids", np.array([[2, 5]] * batch))
    return model(**kwargs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("value", [2, -1, 0.5, np.nan])
def test_masks_must_hold_zero_or_one(models, family, value):
    mask = np.array([[1, 1, value, 1]], dtype=np.float64 if isinstance(value, float) else np.int64)
    with pytest.raises(ValueError, match="0/1"):
        _call(models[family], family, input_ids=np.array([[3, 4, 5, 6]]), attention_mask=mask)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("ids, match", [
    (np.array([[True, False, True]]), "dtype bool"),
    (np.array([[1.5, 2.0, 3.0]]), "non-integral value 1.5"),
    (np.array([[np.inf, 2.0, 3.0]]), "non-integral value inf"),
    (np.array([[2**63, 1, 1]], dtype=np.uint64), "id 9223372036854775808"),
    (np.array([[2**64, 1, 1]], dtype=object), "id 18446744073709551616"),
    (np.array([[-(2**63), 1, 1]]), "id -9223372036854775808"),
    (np.array([["a", "b", "c"]]), "integer token ids"),
    (np.zeros((0, 3), np.int64), "empty"),
    (np.zeros((2, 0), np.int64), "empty"),
    (np.array([1, 2, 3]), "2 dimensions"),
    ([[1, 2], [3]], "rectangular"),
    ("hello", "2 dimensions"),
])
def test_bad_ids_are_reported_as_given(models, family, ids, match):
    with pytest.raises(ValueError, match=match):
        _call(models[family], family, input_ids=ids)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_empty_inputs_embeds_batch(models, family):
    width = models[family].config.d_model if family in ("led", "xglm") else models[family].config.hidden_size
    kwargs = {"inputs_embeds": np.zeros((0, 3, width), np.float32)}
    if family == "led":
        kwargs["decoder_input_ids"] = np.zeros((0, 1), np.int64)
    with pytest.raises(ValueError, match="batch >= 1|empty"):
        models[family](**kwargs)


def _past(model, family):
    """A real cache from one forward, as lists so single arrays can be replaced."""
    ids = np.array([[3, 4, 5]])
    out = _call(model, family, input_ids=ids, use_cache=True)
    return [list(layer) for layer in out.past_key_values], ids


@pytest.mark.parametrize("family", ["opt", "xglm", "led"])
def test_a_consistent_past_is_accepted(models, family):
    past, _ = _past(models[family], family)
    kwargs = dict(input_ids=np.array([[6]]), past_key_values=past, attention_mask=np.ones((1, 4), np.int64))
    if family == "led":
        kwargs = dict(input_ids=np.array([[3, 4, 5]]), decoder_input_ids=np.array([[6]]), past_key_values=past)
    models[family](**kwargs)


@HYPOTHESIS
@given(family=st.sampled_from(["opt", "xglm", "led"]), data=st.data())
def test_every_layer_of_the_past_is_checked(models, family, data):
    """One array of one layer (any layer, key or value, self or cross) given a wrong dimension, or a layer
    with a wrong number of arrays, or a wrong number of layers: a ValueError naming past_key_values."""
    model = models[family]
    past, ids = _past(model, family)
    kind = data.draw(st.sampled_from(["dim", "arrays", "layers", "dtype"]))
    layer = data.draw(st.integers(0, len(past) - 1))
    if kind == "dim":
        j = data.draw(st.integers(0, len(past[layer]) - 1))
        axis = data.draw(st.integers(0, 3))
        shape = list(past[layer][j].shape)
        shape[axis] += data.draw(st.sampled_from([-1, 1, 2]))
        assume(shape[axis] >= 0 and not (axis == 2 and all(a.shape[2] + 1 == shape[2] for a in past[layer][:2])))
        past[layer][j] = np.zeros(shape, np.float32)
    elif kind == "arrays":
        past[layer] = past[layer][:3] if len(past[layer]) == 4 else past[layer][:1] + past[layer]
    elif kind == "layers":
        past = past[:-1] if data.draw(st.booleans()) else past + past[:1]
    else:
        past[layer][0] = past[layer][0].astype(np.int64)
    kwargs = dict(input_ids=np.array([[6]]), past_key_values=past)
    if family == "led":
        kwargs = dict(input_ids=ids, decoder_input_ids=np.array([[6]]), past_key_values=past)
    with pytest.raises(ValueError, match="past_key_values"):
        model(**kwargs)


def test_led_past_with_three_arrays_per_layer_is_refused(models):
    past, ids = _past(models["led"], "led")
    past = [layer[:3] for layer in past]
    with pytest.raises(ValueError, match=r"past_key_values\[0\] must hold 4 arrays"):
        models["led"](input_ids=ids, decoder_input_ids=np.array([[6]]), past_key_values=past)


@pytest.mark.parametrize("family", ["opt", "xglm"])
def test_mask_must_span_past_and_new_tokens(models, family):
    past, _ = _past(models[family], family)
    with pytest.raises(ValueError, match="past"):
        models[family](input_ids=np.array([[6]]), past_key_values=past, attention_mask=np.ones((1, 2), np.int64))
