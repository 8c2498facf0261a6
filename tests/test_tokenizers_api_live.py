"""The tokenizer call options no other test reaches, against upstream's slow tokenizers (live): encode()
of tokens, ids and pre-split words; truncation strategies on pairs; batches of pairs; return_length,
return_special_tokens_mask, return_tensors="np"; pad() of lists and arrays; convert_tokens_to_string;
batch_decode of a 2-D array; the input checks' messages."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

import refimpl.tokenizers as rt  # noqa: E402

pytestmark = pytest.mark.upstream
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden" / "tokenizers"
NAMES = ["opt", "xglm-unigram", "bert-uncased"]
transformers.logging.set_verbosity_error()

TEXT, PAIR = "hello world, this is a longer sentence here", "and a second one"


@functools.lru_cache(maxsize=None)
def pair(name):
    upstream = transformers.AutoTokenizer.from_pretrained(str(GOLDEN_DIR / name), use_fast=False)
    return upstream, rt.load_tokenizer(GOLDEN_DIR / name)


def same(a, b, label):
    a, b = dict(a), dict(b)
    assert sorted(a) == sorted(b), f"{label}: keys upstream {sorted(a)} refimpl {sorted(b)}"
    for key in a:  # values compared as nested lists (refimpl may hold a padded batch as an array)
        x, y = _plain(a[key]), _plain(b[key])
        assert x == y, f"{label} {key}: upstream {x} refimpl {y}"


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("name", NAMES)
def test_encode_of_tokens_ids_and_words(name):
    up, ours = pair(name)
    tokens = up.tokenize(TEXT)
    ids = up.convert_tokens_to_ids(tokens)
    assert ours.encode(tokens) == up.encode(tokens)
    assert ours.encode(ids) == up.encode(ids)
    assert ours.encode(np.array(ids).tolist(), add_special_tokens=False) == up.encode(ids, add_special_tokens=False)
    words = TEXT.split()
    same(up(words, is_split_into_words=True), ours(words, is_split_into_words=True), f"{name} words")
    same(up([words, words[:3]], is_split_into_words=True, padding=True),
         ours([words, words[:3]], is_split_into_words=True, padding=True), f"{name} batch of words")
    assert ours.convert_tokens_to_string(tokens) == up.convert_tokens_to_string(tokens)
    with pytest.raises(ValueError, match=r"input 3\.5 is not valid: expected a string, a list of strings"):
        ours.encode(3.5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strategy", ["only_first", "only_second", "longest_first"])
@pytest.mark.parametrize("max_length", [9, 14])
def test_truncation_of_pairs(name, strategy, max_length):
    up, ours = pair(name)
    for text, text_pair in ((TEXT, PAIR), (PAIR, TEXT)):
        kw = dict(truncation=strategy, max_length=max_length, return_special_tokens_mask=True,
                  return_token_type_ids=True, return_length=True)
        try:
            expected = up(text, text_pair, **kw)
        except Exception as err:  # upstream refuses: a pair too short to remove from
            with pytest.raises(ValueError):
                ours(text, text_pair, **kw)
            continue
        same(expected, ours(text, text_pair, **kw), f"{name} {strategy} {max_length}")


@pytest.mark.parametrize("name", NAMES)
def test_batches_of_pairs_and_tensors(name):
    up, ours = pair(name)
    texts, pairs = [TEXT, "short"], [PAIR, "tiny pair"]
    for kw in (dict(padding=True), dict(padding="max_length", max_length=20, truncation=True),
               dict(padding=True, return_tensors="np", return_length=True),
               dict(padding=True, return_special_tokens_mask=True, return_attention_mask=False),
               dict(padding=True, pad_to_multiple_of=8, return_tensors="np")):
        same(up(texts, pairs, **kw), ours(texts, pairs, **kw), f"{name} batch of pairs {kw}")
        same(up(list(zip(texts, pairs)), **kw), ours(list(zip(texts, pairs)), **kw), f"{name} list of pairs {kw}")
    same(up(TEXT, return_tensors="np"), ours(TEXT, return_tensors="np"), f"{name} one text as np")
    same(up(TEXT, return_length=True), ours(TEXT, return_length=True), f"{name} return_length")
    with pytest.raises(ValueError, match=r"batch length of text \(2\) does not match text_pair \(1\)"):
        ours(texts, pairs[:1])
    with pytest.raises(ValueError, match="text is a batch \\(list\\) but text_pair is a single string"):
        ours(texts, "one")


@pytest.mark.parametrize("name", NAMES)
def test_pad_and_batch_decode(name):
    up, ours = pair(name)
    rows = [up(TEXT), up("short")]
    for kw in (dict(), dict(return_attention_mask=False), dict(padding="max_length", max_length=16),
               dict(return_tensors="np"), dict(pad_to_multiple_of=4)):
        same(up.pad(copy.deepcopy(rows), **kw), ours.pad(copy.deepcopy([dict(r) for r in rows]), **kw),
             f"{name} pad {kw}")
    one = up("short")["input_ids"]  # refimpl also takes the ids as an array (upstream: as a list here)
    same(up.pad({"input_ids": list(one)}, padding="max_length", max_length=10, return_tensors="np"),
         ours.pad({"input_ids": np.array(one)}, padding="max_length", max_length=10, return_tensors="np"),
         f"{name} pad array")
    ids = np.array(up([TEXT, "short"], padding=True)["input_ids"])
    assert ours.batch_decode(ids) == up.batch_decode(ids)
    assert ours.batch_decode(ids, skip_special_tokens=True) == up.batch_decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("name", ["opt", "bert-uncased", "xglm-unigram"])
def test_legacy_special_tokens_map_and_added_tokens_json(tmp_path, name):
    """A directory saved before added_tokens_decoder: special_tokens_map.json (a special token, additional
    special tokens, one repeated) and added_tokens.json (one special, one plain) read as upstream reads them."""
    import json
    import shutil

    directory = tmp_path / name
    shutil.copytree(GOLDEN_DIR / name, directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    config.pop("additional_special_tokens", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    up0 = transformers.AutoTokenizer.from_pretrained(str(GOLDEN_DIR / name), use_fast=False)
    n = len(up0)
    special_map = json.loads((directory / "special_tokens_map.json").read_text())
    special_map["additional_special_tokens"] = ["<zq1>", {"content": "<zq2>"}, "<zq1>"]
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map))
    (directory / "added_tokens.json").write_text(json.dumps({"<zq1>": n, "<zq2>": n + 1, "yvplain": n + 2}))
    up = transformers.AutoTokenizer.from_pretrained(str(directory), use_fast=False)
    ours = rt.load_tokenizer(directory)
    assert ours.all_special_tokens == up.all_special_tokens
    assert ours.additional_special_tokens == up.additional_special_tokens
    assert len(ours) == len(up)
    for text in ("a <zq1> b", "a  <zq2> b", "yvplain a", "hello <zq2>yvplain", "Yvplain"):
        assert ours.tokenize(text) == up.tokenize(text), text
        same(up(text), ours(text), f"{name} {text!r}")
        ids = up(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True) == up.decode(ids, skip_special_tokens=True)


def test_added_tokens_decoder_entries_must_be_dicts(tmp_path):
    import json
    import shutil

    directory = tmp_path / "opt"
    shutil.copytree(GOLDEN_DIR / "opt", directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["7"] = "just a string"
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: field 'added_tokens_decoder' = .*: expected "
                                         r"\{\"<token id>\": \{\"content\": \.\.\.\}"):
        rt.load_tokenizer(directory)


def test_default_model_max_length_is_upstreams():
    vocab, merges = str(GOLDEN_DIR / "opt" / "vocab.json"), str(GOLDEN_DIR / "opt" / "merges.txt")
    up, ours = transformers.GPT2Tokenizer(vocab, merges), rt.GPT2Tokenizer(vocab, merges)
    assert ours.model_max_length == up.model_max_length == int(1e30)
    # no maximum known: padding="max_length" and truncation=True without max_length do nothing, as upstream
    kw = dict(padding="max_length", truncation=True)
    same(up(["a b c", "a"], **kw), ours(["a b c", "a"], **kw), "no maximum")
    for limit in (10**20, 10**20 + 1, 6):  # upstream's LARGE_INTEGER (1e20) is the bound of "no maximum known"
        up.model_max_length = ours.model_max_length = limit
        if limit > 10**20:
            same(up(["a b c", "a"], **kw), ours(["a b c", "a"], **kw), f"model_max_length {limit}")
        else:
            same(up(["a b c d e f g h", "a"], truncation=True), ours(["a b c d e f g h", "a"], truncation=True),
                 f"model_max_length {limit}")


@pytest.mark.parametrize("strategy", ["only_first", "only_second", "longest_first"])
def test_overflowing_tokens_of_pairs(strategy):
    up, ours = pair("opt")
    kw = dict(truncation=strategy, max_length=12, return_overflowing_tokens=True, stride=2)
    try:
        expected = up(TEXT, PAIR, **kw)
    except Exception as err:  # upstream refuses overflowing tokens of pairs with longest_first
        with pytest.raises(ValueError, match="overflowing tokens are not available for pairs"):
            ours(TEXT, PAIR, **kw)
        assert strategy == "longest_first", err
        return
    same(expected, ours(TEXT, PAIR, **kw), f"overflow {strategy}")


@pytest.mark.parametrize("split", [True, False])
def test_wordpiece_without_punctuation_splitting(split):
    from transformers.models.bert.tokenization_bert import BasicTokenizer

    for lower in (True, False):
        up, ours = (BasicTokenizer(do_lower_case=lower, do_split_on_punc=split),
                    rt.BasicTokenizer(do_lower_case=lower, do_split_on_punc=split))
        for text in ("hello, world!", "a.b-c d", "Ünïcode's (test)", "[UNK] x"):
            assert ours.tokenize(text) == up.tokenize(text), (text, lower)
            assert ours.tokenize(text, never_split=["[UNK]"]) == up.tokenize(text, never_split=["[UNK]"])



@pytest.mark.parametrize("value, ok", [(None, True), ("<pad>", True), ({"content": "<pad>"}, True), (5, False),
                                       (["<pad>"], False), ({"text": "<pad>"}, False)])
def test_special_tokens_in_tokenizer_config_may_be_null_strings_or_dicts(tmp_path, value, ok):
    import json
    import shutil

    directory = tmp_path / "opt"
    shutil.copytree(GOLDEN_DIR / "opt", directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["pad_token"] = value
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    if not ok:
        with pytest.raises(ValueError, match=r"pad_token.*expected a string, \{\"content\": \.\.\.\} or null"):
            rt.load_tokenizer(directory)
        return
    ours = rt.load_tokenizer(directory)
    if isinstance(value, dict):  # upstream's slow tokenizer wants an AddedToken here; the saved form is a dict
        assert ours.pad_token == value["content"]
        return
    up = transformers.AutoTokenizer.from_pretrained(str(directory), use_fast=False)
    assert ours.pad_token == up.pad_token and ours.pad_token_id == up.pad_token_id
    padding = value is not None  # no pad token: nothing to pad with
    same(up(["a b", "a"], padding=padding), ours(["a b", "a"], padding=padding), f"pad_token {value!r}")
