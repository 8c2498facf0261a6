"""Every refusal of refimpl.tokenizers, reached and read: the message names the argument (or file and
field) and the value given, and says what was expected. Also the loader's choices (class from
tokenizer_config.json, config.json's model_type, or the files present) and documented behaviours that
need no upstream (arrays when padded, the cache bounds)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st
import pytest

import refimpl.tokenizers as rt
from refimpl.tokenizers import base, bpe, spm, wordpiece

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden" / "tokenizers"
OPT = GOLDEN / "opt"
VOCAB, MERGES = str(OPT / "vocab.json"), str(OPT / "merges.txt")


def refused(match, fn, *args, error=ValueError, **kwargs):
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"


def copy_dir(src, dst, drop=(), config=None):
    """A copy of a golden tokenizer directory without the files in `drop`, its tokenizer_config.json
    replaced by `config` when given."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name not in drop:
            shutil.copy(f, dst / f.name)
    if config is not None:
        (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


# ---------------------------------------------------------------------------------------------- loader
def test_loader_refuses_bad_json_files(tmp_path):
    d = copy_dir(OPT, tmp_path / "a")
    (d / "special_tokens_map.json").write_text("[1]")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    refused(r"special_tokens_map\.json must hold a JSON object, found list", rt.load_tokenizer, d)
    (d / "special_tokens_map.json").write_text(json.dumps({"additional_special_tokens": "<x>"}))
    refused(r"special_tokens_map\.json: field 'additional_special_tokens' = '<x>': expected a list of tokens",
            rt.load_tokenizer, d)
    (d / "special_tokens_map.json").write_text(json.dumps({"additional_special_tokens": ["<x>", 3]}))
    refused(r"field 'additional_special_tokens' = \['<x>', 3\]: expected a list of tokens", rt.load_tokenizer, d)
    (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": 7}))
    refused(r"special_tokens_map\.json: field 'pad_token' = 7: expected a token \(a string or a", rt.load_tokenizer, d)
    (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": 7}}))
    refused(r"field 'pad_token' = \{'content': 7\}: expected a token", rt.load_tokenizer, d)
    (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": None, "mask_token": {"content": "<m>"},
                                                          "additional_special_tokens": [{"content": "<y>"}, "<z>"]}))
    tok = rt.load_tokenizer(d)
    assert tok.pad_token is None and tok.mask_token == "<m>" and tok.additional_special_tokens == ["<y>", "<z>"]
    (d / "added_tokens.json").write_text(json.dumps({"<q>": -1}))
    refused(r"added_tokens\.json: token '<q>' has id -1: expected an integer >= 0", rt.load_tokenizer, d)
    (d / "added_tokens.json").write_text(json.dumps({"<q>": True}))
    refused(r"added_tokens\.json: token '<q>' has id True: expected an integer >= 0", rt.load_tokenizer, d)
    (d / "added_tokens.json").write_text(json.dumps({"<q>": 2 ** 63}))
    refused(r"token '<q>' has id 9223372036854775808: expected an integer >= 0 \(below 2\*\*63\)",
            rt.load_tokenizer, d)
    (d / "added_tokens.json").write_text(json.dumps({"<q>": 2 ** 63 - 1, "<z>": 0}))
    tok = rt.load_tokenizer(d)
    assert tok.convert_tokens_to_ids("<q>") == 2 ** 63 - 1 and tok.convert_tokens_to_ids("<z>") == 0
    assert tok.added_tokens_decoder[0].special and not tok.added_tokens_decoder[2 ** 63 - 1].special
    assert tok.added_tokens_decoder[2 ** 63 - 1].normalized and not tok.added_tokens_decoder[0].normalized


def test_loader_picks_the_class(tmp_path):
    d = copy_dir(OPT, tmp_path / "bpe", config={})
    refused(r"vocab\.json \+ merges\.txt serve both GPT-2/OPT and BART/LED rules .* pass model_type='opt' or 'led'",
            rt.load_tokenizer, d)
    assert type(rt.load_tokenizer(d, model_type="opt")) is rt.GPT2Tokenizer
    assert rt.load_tokenizer(d, model_type="opt").add_bos_token  # facebook/opt-* defaults for what is left out
    assert rt.load_tokenizer(d, model_type="opt").pad_token == "<pad>"
    assert not rt.load_tokenizer(d, model_type="gpt2").add_bos_token
    assert type(rt.load_tokenizer(d, model_type="led")) is rt.LEDTokenizer
    assert type(rt.load_tokenizer(d, model_type="roberta")) is rt.BartTokenizer
    refused(r"model_type 'llama' is not supported; supported: \['bart', 'bert'", rt.load_tokenizer, d,
            model_type="llama")
    (d / "config.json").write_text(json.dumps({"model_type": "led"}))
    assert type(rt.load_tokenizer(d)) is rt.LEDTokenizer
    assert type(rt.load_tokenizer(d, model_type="opt")) is rt.GPT2Tokenizer  # the argument wins
    (d / "config.json").write_text(json.dumps({"model_type": 3}))
    refused(r"config\.json: field 'model_type' = 3: expected a string", rt.load_tokenizer, d)
    (d / "config.json").write_text(json.dumps({"model_type": None}))
    refused(r"serve both GPT-2/OPT and BART/LED rules", rt.load_tokenizer, d)
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LEDTokenizerFast"}))
    assert type(rt.load_tokenizer(d)) is rt.LEDTokenizer
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    refused(r"tokenizer_class 'T5Tokenizer' is not supported; supported: \['BartTokenizer'", rt.load_tokenizer, d)
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Fast"}))
    refused(r"tokenizer_class 'Fast' is not supported", rt.load_tokenizer, d)
    x = copy_dir(GOLDEN / "xglm-bpe", tmp_path / "spm", config={})
    assert type(rt.load_tokenizer(x)) is rt.XGLMTokenizer
    b = copy_dir(GOLDEN / "bert-cased", tmp_path / "wp", config={})
    assert type(rt.load_tokenizer(b)) is rt.BertTokenizer
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(r"empty: no tokenizer files found \(expected vocab\.json \+ merges\.txt", rt.load_tokenizer, empty)
    (empty / "vocab.json").write_text("{}")
    refused(r"no tokenizer files found", rt.load_tokenizer, empty)  # vocab.json alone is not enough
    refused(r"tokenizer path '.*nowhere' is not a directory", rt.load_tokenizer, tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    refused(r"tokenizer path '.*file' is not a directory", rt.load_tokenizer, tmp_path / "file")


def test_loader_options_and_overrides(tmp_path):
    d = copy_dir(OPT, tmp_path / "o")
    cfg = json.loads((OPT / "tokenizer_config.json").read_text())
    decoder = cfg["added_tokens_decoder"]
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "added_tokens_decoder": {**decoder, "9": "<x>"}}))
    refused(r"tokenizer_config\.json: field 'added_tokens_decoder' = .*expected \{\"<token id>\"", rt.load_tokenizer, d)
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "added_tokens_decoder": {**decoder, "9": {"x": 1}}}))
    refused(r"tokenizer_config\.json: added_tokens_decoder\['9'\] must be a dict with 'content'", rt.load_tokenizer, d)
    (d / "tokenizer_config.json").write_text(json.dumps({
        **cfg, "padding_side": "left", "truncation_side": "left", "model_max_length": 9, "add_prefix_space": True,
        "errors": "strict", "clean_up_tokenization_spaces": False, "split_special_tokens": True,
        "model_input_names": ["input_ids"], "add_bos_token": False, "do_lower_case": True}))
    tok = rt.load_tokenizer(d)
    assert (tok.padding_side, tok.truncation_side, tok.model_max_length, tok.add_prefix_space, tok.errors) == \
        ("left", "left", 9, True, "strict")
    assert not tok.clean_up_tokenization_spaces and tok.split_special_tokens and not tok.add_bos_token
    assert tok.model_input_names == ["input_ids"] and not hasattr(tok, "do_lower_case")
    assert "attention_mask" not in tok("a b")  # model_input_names decides the default masks
    tok = rt.load_tokenizer(d, padding_side="right", pad_token="</s>")
    assert tok.padding_side == "right" and tok.pad_token == "</s>" and tok.pad_token_id == 2
    # a special token given as a string takes the saved added token's flags
    dec = {**decoder, "50265": {"content": "<m>", "lstrip": True, "rstrip": False, "normalized": False,
                                "single_word": False, "special": True, "__type": "AddedToken"}}
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "added_tokens_decoder": dec, "mask_token": "<m>"}))
    tok = rt.load_tokenizer(d)
    assert tok.mask_token_id == 50265 and tok.tokenize("a <m>") == ["a", "<m>"]  # lstrip ate the space
    assert tok._special["mask_token"].lstrip


def test_tokenizer_config_checks():
    refused(r"cfg\.json must hold a JSON object, found list", base.check_tokenizer_config, [1], "cfg.json")
    refused(r"cfg\.json: tokenizer option model_max_length = -1 ", base.check_tokenizer_config,
            {"model_max_length": -1}, "cfg.json")
    refused(r"cfg\.json: tokenizer option model_max_length = True .*expected an integer >= 0 \(or null\)",
            base.check_tokenizer_config, {"model_max_length": True}, "cfg.json")
    refused(r"cfg\.json: field 'bos_token' = 3: expected a string, \{\"content\": \.\.\.\} or null",
            base.check_tokenizer_config, {"bos_token": 3}, "cfg.json")
    refused(r"field 'bos_token' = \{'x': 1\}: expected a string", base.check_tokenizer_config, {"bos_token": {"x": 1}},
            "cfg.json")
    refused(r"cfg\.json: field 'tokenizer_class' = 3: expected a class name", base.check_tokenizer_config,
            {"tokenizer_class": 3}, "cfg.json")
    refused(r"field 'additional_special_tokens' = 'x': expected a list of tokens", base.check_tokenizer_config,
            {"additional_special_tokens": "x"}, "cfg.json")
    refused(r"field 'added_tokens_decoder' = \[\]: expected", base.check_tokenizer_config,
            {"added_tokens_decoder": []}, "cfg.json")
    refused(r"field 'added_tokens_decoder' = \{'a': \{\}\}", base.check_tokenizer_config,
            {"added_tokens_decoder": {"a": {}}}, "cfg.json")
    refused(r"field 'added_tokens_decoder' = \{'1234567890123456789': \{\}\}", base.check_tokenizer_config,
            {"added_tokens_decoder": {"1234567890123456789": {}}}, "cfg.json")
    refused(r"field 'added_tokens_decoder' = \{'1': 'x'\}", base.check_tokenizer_config,
            {"added_tokens_decoder": {"1": "x"}}, "cfg.json")
    base.check_tokenizer_config({"added_tokens_decoder": {"123456789012345678": {}}, "bos_token": None,
                                 "eos_token": {"content": "x"}, "tokenizer_class": None,
                                 "additional_special_tokens": None, "model_max_length": None, "other": 1}, "c")
    refused(r"tokenizer option never_split = \['a', 1\]: expected a list of strings", base.check_option,
            "never_split", ["a", 1])
    refused(r"tokenizer option do_lower_case = 'yes' \(tokenizer_config\.json or an argument\): expected true or false",
            base.check_option, "do_lower_case", "yes")
    refused(r"tokenizer option x = 'y' .*expected true or false", base.check_option, "x", "y", bool)
    assert base.check_option("model_max_length", 0) == 0 and base.check_option("strip_accents", None) is None


def test_added_token_values():
    assert base.as_added_token(None) is None
    tok = rt.AddedToken("x", lstrip=True)
    assert base.as_added_token(tok) is tok and str(tok) == "x"
    assert base.as_added_token("y", rstrip=True) == rt.AddedToken("y", rstrip=True)
    assert base.as_added_token({"content": "z", "lstrip": True}, special=True) == \
        rt.AddedToken("z", lstrip=True, special=True)
    refused(r"tokenizer option 'z'\.lstrip = 'no' .*expected true or false", base.as_added_token,
            {"content": "z", "lstrip": "no"})
    refused(r"special token must be a string or a dict with a string 'content', got \{'content': 1\}",
            base.as_added_token, {"content": 1})
    refused(r"special token must be a string .* got 3\.5", base.as_added_token, 3.5)


# ---------------------------------------------------------------------------------------------- files
def test_vocabulary_files_are_checked(tmp_path):
    refused(r"vocabulary file not found: .*none\.json \(expected a vocab\.json mapping token -> id\)",
            rt.GPT2Tokenizer, str(tmp_path / "none.json"), MERGES)
    (tmp_path / "v.json").write_text(json.dumps({"a": True}))
    refused(r"v\.json must be a JSON object mapping token strings to integer ids", rt.GPT2Tokenizer,
            str(tmp_path / "v.json"), MERGES)
    for bad in (2 ** 63, -2 ** 63 - 1):
        (tmp_path / "v.json").write_text(json.dumps({"a": 1, "bb": bad}))
        refused(rf"v\.json: token 'bb' has id {bad}, beyond the 64-bit integers", rt.GPT2Tokenizer,
                str(tmp_path / "v.json"), MERGES)
    (tmp_path / "v.json").write_text(json.dumps({"a": 2 ** 63 - 1, "b": -2 ** 63}))
    assert bpe.load_vocab_json(str(tmp_path / "v.json")) == {"a": 2 ** 63 - 1, "b": -2 ** 63}
    (tmp_path / "m.txt").write_bytes(b"#version\n\xff\xfe a\n")
    refused(r"m\.txt is not valid UTF-8", rt.GPT2Tokenizer, VOCAB, str(tmp_path / "m.txt"))
    (tmp_path / "m.txt").write_text("a b\nc d\ne f\nc d\n")  # first line dropped even without #version
    assert bpe.load_merges(str(tmp_path / "m.txt")) == {("c", "d"): 2, ("e", "f"): 1}
    refused(r"tokenizer option errors = 'nonsense': not a codec error handler", rt.GPT2Tokenizer, VOCAB, MERGES,
            errors="nonsense")
    refused(r"tokenizer option errors = 3 ", rt.GPT2Tokenizer, VOCAB, MERGES, errors=3)
    refused(r"tokenizer option add_prefix_space = 1 ", rt.GPT2Tokenizer, VOCAB, MERGES, add_prefix_space=1)
    refused(r"tokenizer option add_bos_token = 'y' ", rt.GPT2Tokenizer, VOCAB, MERGES, add_bos_token="y")
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n\xff\n")
    refused(r"vocab\.txt is not valid UTF-8", rt.BertTokenizer, str(tmp_path / "vocab.txt"))
    (tmp_path / "vocab.txt").write_text("a\nb\na\n")
    assert wordpiece.load_vocab_txt(str(tmp_path / "vocab.txt")) == {"a": 2, "b": 1}  # a repeat keeps its last line
    (tmp_path / "vocab.txt").write_text("\n")
    assert wordpiece.load_vocab_txt(str(tmp_path / "vocab.txt")) == {"": 0}
    refused(r"tokenizer option max_input_chars_per_word = -1 .*expected an integer >= 0", rt.BertTokenizer,
            str(GOLDEN / "bert-cased" / "vocab.txt"), max_input_chars_per_word=-1)
    for name in ("do_lower_case", "do_basic_tokenize", "tokenize_chinese_chars", "strip_accents"):
        refused(rf"tokenizer option {name} = 'x' ", rt.BertTokenizer, str(GOLDEN / "bert-cased" / "vocab.txt"),
                **{name: "x"})


def test_sentencepiece_files_are_checked(tmp_path, monkeypatch):
    (tmp_path / "bad.model").write_bytes(b"not a model")
    refused(r"bad\.model is not a valid sentencepiece model", rt.XGLMTokenizer, vocab_file=str(tmp_path / "bad.model"))
    monkeypatch.setattr(spm, "MAX_MODEL_BYTES", 5)
    refused(r"bad\.model is larger than 5 bytes; not a sentencepiece model", rt.XGLMTokenizer,
            vocab_file=str(tmp_path / "bad.model"))
    (tmp_path / "five.model").write_bytes(b"12345")
    refused(r"five\.model is not a valid sentencepiece model", rt.XGLMTokenizer, vocab_file=str(tmp_path / "five.model"))


def test_xglm_ids_and_layout():
    tok = rt.load_tokenizer(GOLDEN / "xglm-bpe")
    n = len(tok.sp_model)
    assert tok.vocab_size == n + 1 + 7
    assert [tok.convert_tokens_to_ids(f"<madeupword{i}>") for i in range(7)] == list(range(n + 1, n + 8))
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok.convert_ids_to_tokens(4) == tok.sp_model.IdToPiece(3)
    assert tok.convert_ids_to_tokens(n) == tok.sp_model.IdToPiece(n - 1)
    assert tok.convert_tokens_to_ids(tok.sp_model.IdToPiece(n - 1)) == n
    assert tok.convert_tokens_to_ids("no-such-piece-zzz") == 3
    refused(rf"token id {n + 8} is outside the vocabulary \[0, {n + 8}\)", tok._id_to_token, n + 8)
    refused(r"token id -1 is outside the vocabulary", tok._id_to_token, -1)
    assert tok.build_inputs_with_special_tokens([7]) == [2, 7]
    assert tok.build_inputs_with_special_tokens([7], [8]) == [2, 7, 2, 2, 8]


def test_xglm_reports_sentencepiece_failures():
    tok = rt.load_tokenizer(GOLDEN / "xglm-bpe")

    class Broken:
        def encode(self, text, out_type):
            raise RuntimeError("internal")

    tok.sp_model = Broken()
    refused(r"sentencepiece could not encode the text \(RuntimeError: internal\)", tok.tokenize, "abc")


# ---------------------------------------------------------------------------------------------- calls
@pytest.fixture(scope="module")
def opt():
    return rt.load_tokenizer(OPT)


def test_call_argument_checks(opt):
    refused(r"text must be a str, a list of str \(batch\), or a list of lists of str .* got int", opt, 3)
    refused(r"got dict", opt, {"a": 1})
    refused(r"got list", opt, [[1, 2]])
    refused(r"text_pair must be of the same kind as text, got int", opt, "a", 5)
    refused(r"text is a batch \(list\) but text_pair is a single string", opt, ["a", "b"], "c")
    refused(r"batch length of text \(2\) does not match text_pair \(1\)", opt, ["a", "b"], ["c"])
    refused(r"padding must be True, False or one of \('longest', 'max_length', 'do_not_pad'\), got 'most'", opt, "a",
            padding="most")
    refused(r"truncation must be True, False or one of \('only_first', .*\), got 'all'", opt, "a", truncation="all")
    refused(r"return_tensors must be None or 'np' \(refimpl is NumPy only\), got 'pt'", opt, "a", return_tensors="pt")
    refused(r"return_tensors must be None or 'np' .* got 'tf'", opt, ["a", "b c"], padding=True, return_tensors="tf")
    refused(r"return_token_type_ids=True needs add_special_tokens=True", opt, "a", return_token_type_ids=True,
            add_special_tokens=False)
    refused(r"overflowing tokens are not available for pairs with truncation='longest_first'", opt, "a b", "c d",
            truncation=True, max_length=3, return_overflowing_tokens=True)
    refused(r"cannot make a rectangular array of 'input_ids': sequences have different lengths \[2, 3\]", opt,
            ["a", "a b"], return_tensors="np")
    refused(r"text must be a str, got int", opt.tokenize, 5)
    refused(r"unrecognised keyword arguments \['colour', 'size'\]", opt, "a", colour=1, size=2)
    refused(r"input \{'a': 1\} is not valid: expected a string, a list of strings", opt.encode, {"a": 1})
    refused(r"input \[\] is not valid", opt.encode, [])
    refused(r"input \[1\.5\] is not valid", opt.encode, [1.5])
    refused(r"text holds a lone surrogate U\+D800 at position 2", opt, "ab\ud800c")
    refused(r"lone surrogate U\+DFFF at position 0", rt.load_tokenizer(GOLDEN / "xglm-bpe"), "\udfff")
    bert = rt.load_tokenizer(GOLDEN / "bert-cased")
    assert bert.tokenize("a\ud800b") == bert.tokenize("ab")  # WordPiece: a surrogate is a control-like char


def test_padding_needs_a_pad_token(tmp_path):
    tok = rt.GPT2Tokenizer(VOCAB, MERGES)  # GPT-2 has no pad token
    assert tok.pad_token is None and tok.pad_token_id is None
    refused(r"asked to pad but the tokenizer has no pad_token", tok, ["a", "a b"], padding=True)
    refused(r"asked to pad but the tokenizer has no pad_token", tok.pad, {"input_ids": [[1], [1, 2]]})
    assert tok(["a", "a b"], padding=False)["input_ids"] == [tok.encode("a"), tok.encode("a b")]
    tok = rt.GPT2Tokenizer(VOCAB, MERGES, pad_token="<pad>", model_max_length=4)
    assert tok("a b c d e f", padding="max_length")["input_ids"].tolist() == tok.encode("a b c d e f")
    assert len(tok("a b c d e f", truncation=True)["input_ids"]) == 4  # model_max_length applies
    assert tok("a", padding="max_length")["attention_mask"].tolist() == [1, 0, 0, 0]
    refused(r"truncation length \(4\) is not a multiple of pad_to_multiple_of \(3\)", tok, "a b", truncation=True,
            padding=True, pad_to_multiple_of=3)


def test_pad_checks(opt):
    refused(r"pad\(\) needs a dict \(or list of dicts\) with an 'input_ids' entry", opt.pad, [[1, 2]])
    refused(r"pad\(\) needs a dict", opt.pad, "abc")
    refused(r"every entry of the batch dict must have the same batch size", opt.pad,
            {"input_ids": [[1], [2]], "attention_mask": [[1]]})
    assert dict(opt.pad({"input_ids": []}, return_attention_mask=True)) == {"input_ids": [], "attention_mask": []}
    assert dict(opt.pad({"input_ids": []})) == {"input_ids": []}
    out = opt.pad({"input_ids": [[5], [5, 6, 7]]})
    assert isinstance(out["input_ids"], np.ndarray) and out["input_ids"].dtype == np.int64
    assert out["input_ids"].tolist() == [[5, 1, 1], [5, 6, 7]] and out["attention_mask"].tolist() == [[1, 0, 0], [1] * 3]
    out = opt.pad({"input_ids": [[5], [5, 6, 7]]}, padding=False)
    assert out["input_ids"] == [[5], [5, 6, 7]] and out["attention_mask"] == [[1], [1, 1, 1]]


def test_arrays_when_padded_lists_otherwise(opt):
    """The documented output types: lists as upstream when nothing is padded, int64 arrays when padding made
    the rows rectangular (or return_tensors="np"), lists when rows stay ragged."""
    out = opt(["a", "a b c"], padding=True, return_length=True)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.int64 for v in out.values())
    assert out["length"].tolist() == [2, 4] and out.input_ids.shape == (2, 4)
    out = opt(["a", "a b c"])
    assert out["input_ids"] == [opt.encode("a"), opt.encode("a b c")]
    assert isinstance(out["input_ids"], list) and isinstance(out["attention_mask"], list)
    out = opt(["a", "a b c d e"], padding="max_length", max_length=3, truncation=False)
    assert isinstance(out["input_ids"], list) and [len(r) for r in out["input_ids"]] == [3, 6]
    out = opt("a b", return_tensors="np")
    assert out["input_ids"].shape == (1, 3) and out["attention_mask"].tolist() == [[1, 1, 1]]
    out = opt("a b", padding="max_length", max_length=5)
    assert out["input_ids"].shape == (5,) and out["attention_mask"].tolist() == [1, 1, 1, 0, 0]
    out = opt.pad({"input_ids": np.array([5, 6])}, padding="max_length", max_length=4)
    assert out["input_ids"].tolist() == [5, 6, 1, 1] and out["input_ids"].shape == (4,)
    out = opt("a b", truncation=True, max_length=2, return_overflowing_tokens=True, padding=True)
    assert isinstance(out["overflowing_tokens"], list) and isinstance(out["num_truncated_tokens"], int)
    assert out["num_truncated_tokens"] == 1 and len(out["overflowing_tokens"]) == 1
    with pytest.raises(AttributeError, match="no_such_key"):
        out.no_such_key
    assert out.input_ids is out["input_ids"]


def test_decode_checks(opt):
    refused(r"expected a 1-D sequence of token ids, got an array of shape \(1, 1\)", opt.decode, np.array([[5]]))
    refused(r"token ids must be integers, got 2\.0 \(float\)", opt.decode, [2.0])
    refused(r"token id 99999999 is not in the vocabulary \(size 8192\) nor an added token", opt.decode, [99999999])
    refused(r"batch_decode expects ids of shape \[B, T\], got \(1, 1, 1\)", opt.batch_decode, np.zeros((1, 1, 1), int))
    hello, world = opt.encode("The world", add_special_tokens=False)
    assert opt.decode(np.array([hello])) == opt.decode([hello]) == opt.decode(hello) == "The"
    assert opt.decode([np.int32(hello)]) == "The"

    class Tensor:  # what a torch tensor offers
        def tolist(self):
            return [hello, world]

    assert opt.decode(Tensor()) == "The world"
    assert opt.convert_ids_to_tokens(np.int64(hello)) == "The"
    assert opt.convert_tokens_to_ids(None) is None
    refused(r"character '一' is not a byte-level BPE symbol; cannot decode it to bytes", bpe.byte_decode, "\u0100a\u4e00")
    assert bpe.byte_decode("Ã©") == "é" and bpe.byte_decode("Ã", "ignore") == "" and bpe.byte_decode("Ã") == "\ufffd"
    refused(r"do not pass a second sequence when the ids already contain special tokens",
            opt.get_special_tokens_mask, [2], [2], True)
    assert opt.get_special_tokens_mask(np.array([2, 5, 1]), already_has_special_tokens=True) == [1, 0, 1]


def test_construction_checks():
    refused(r"padding_side must be 'left' or 'right', got 'up'", rt.GPT2Tokenizer, VOCAB, MERGES, padding_side="up")
    refused(r"truncation_side must be 'left' or 'right', got 'middle'", rt.GPT2Tokenizer, VOCAB, MERGES,
            truncation_side="middle")
    refused(r"tokenizer option padding_side = 3 ", rt.GPT2Tokenizer, VOCAB, MERGES, padding_side=3)
    refused(r"tokenizer option model_max_length = -5 ", rt.GPT2Tokenizer, VOCAB, MERGES, model_max_length=-5)
    refused(r"tokenizer option split_special_tokens = None ", rt.GPT2Tokenizer, VOCAB, MERGES,
            split_special_tokens=None)
    refused(r"tokenizer option model_input_names = 'input_ids' ", rt.GPT2Tokenizer, VOCAB, MERGES,
            model_input_names="input_ids")
    refused(r"unknown special token attribute 'sepp_token'; expected one of \('bos_token'", rt.GPT2Tokenizer, VOCAB,
            MERGES, special_tokens={"sepp_token": "x"})
    refused(r"mask_token: special token must be a string or a dict with a string 'content', got \[1\]",
            rt.BartTokenizer, VOCAB, MERGES, special_tokens={"mask_token": [1]})
    refused(r"token 3\.0 is not a str or AddedToken", rt.GPT2Tokenizer(VOCAB, MERGES).add_tokens, ["a", 3.0])
    refused(r"", rt.Tokenizer().get_vocab, error=NotImplementedError)
    tok = rt.BartTokenizer(VOCAB, MERGES, mask_token="<mask>")  # a plain string keeps the class's lstrip
    assert tok._special["mask_token"].lstrip and tok.tokenize("a <mask>") == ["a", "<mask>"]
    tok = rt.BartTokenizer(VOCAB, MERGES, special_tokens={"mask_token": None})
    assert tok.mask_token is None and tok.mask_token_id is None and "<mask>" not in tok.all_special_tokens
    assert repr(tok).startswith("BartTokenizer(vocab_size=8192, padding_side='right', special_tokens={")


def test_memo_bounds_keep_results(monkeypatch):
    """The per-word caches are bounded; clearing them changes no result."""
    bert = rt.load_tokenizer(GOLDEN / "bert-cased")
    opt = rt.load_tokenizer(OPT)
    text = "Hello world, the quick brown fox jumps over the lazy dog again and again"
    expected = (bert.encode(text), opt.encode(text))
    for tok in (bert, opt):
        tok._cache.clear()
        monkeypatch.setattr(tok, "_CACHE_LIMIT", 2)
    assert (bert.encode(text), opt.encode(text)) == expected
    assert len(bert._cache) <= 2 + 1 and len(opt._cache) <= len(set(text.split())) + 2


def test_repo_ids_resolve_in_the_cache_by_revision(tmp_path):
    """load_tokenizer("org/name", cache_dir=..., revision=...) reads the snapshot the revision names."""
    repo = tmp_path / "models--org--tok"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "refs" / "v2").write_text("b" * 40)
    copy_dir(OPT, repo / "snapshots" / ("a" * 40))
    cfg = json.loads((OPT / "tokenizer_config.json").read_text())
    copy_dir(OPT, repo / "snapshots" / ("b" * 40), config={**cfg, "padding_side": "left"})
    assert rt.load_tokenizer("org/tok", cache_dir=tmp_path).padding_side == "right"
    assert rt.load_tokenizer("org/tok", cache_dir=tmp_path, revision="v2").padding_side == "left"
    assert rt.load_tokenizer("org/tok", cache_dir=tmp_path, revision="b" * 40).padding_side == "left"


PIECES = st.text(alphabet="abcd", min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(PIECES, max_size=8), st.lists(PIECES, max_size=8), st.lists(st.text(alphabet="abcde", max_size=7),
                                                                            min_size=1, max_size=6),
       st.integers(0, 8))
def test_prefix_index_equals_greedy_longest_match(first, cont, words, max_chars):
    """PrefixIndex (the fast scan) against `wordpiece`, upstream's greedy longest-match loop, on small
    vocabularies where single letters may be missing (real ones hold every letter, hiding prefix gaps)."""
    vocab = {t: i for i, t in enumerate(["[UNK]"] + first + ["##" + c for c in cont])}
    index = wordpiece.PrefixIndex(vocab)
    for word in words:
        exp = wordpiece.wordpiece(word, vocab, "[UNK]", max_chars)
        assert index.tokenize(word, "[UNK]", max_chars) == exp, (word, sorted(vocab), max_chars)
        assert index.tokenize(word, "[UNK]") == wordpiece.wordpiece(word, vocab, "[UNK]"), (word, sorted(vocab))


def test_wordpiece_examples():
    vocab = {"[UNK]": 0, "ab": 1, "##c": 2, "##cd": 3, "b": 4}
    index = wordpiece.PrefixIndex(vocab)
    for word, exp in (("abc", ["ab", "##c"]), ("abcd", ["ab", "##cd"]), ("abcdc", ["ab", "##cd", "##c"]),
                      ("a", ["[UNK]"]), ("bc", ["b", "##c"]), ("abd", ["[UNK]"]), ("", [])):
        assert wordpiece.wordpiece(word, vocab, "[UNK]") == exp and index.tokenize(word, "[UNK]") == exp, word
    assert index.tokenize("abc", "[UNK]", 2) == ["[UNK]"] and index.tokenize("abc", "[UNK]", 3) == ["ab", "##c"]
