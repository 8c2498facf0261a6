"""Every branch of the added-token handling against upstream's slow tokenizers (live): each combination
of lstrip / rstrip / single_word / normalized / special, with the token at the start, at the end (next to
the last piece), between spaces, glued to the word before or after, repeated, and next to another added
token; on every golden tokenizer directory (BPE, SentencePiece, WordPiece, cased and uncased)."""
from __future__ import annotations

import copy
import functools
import itertools
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

import refimpl.tokenizers as rt  # noqa: E402

pytestmark = pytest.mark.upstream
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden" / "tokenizers"
NAMES = ["opt", "led", "xglm-bpe", "xglm-unigram", "bert-uncased", "bert-cased"]
transformers.logging.set_verbosity_error()

FLAGS = ("lstrip", "rstrip", "single_word", "normalized")
TEXTS = ["zq", "a zq", "zq b", "a  zq  b", "azq b", "a zqb", "zqzq", "a\nzq\tb", "A ZQ b", "yv zq", "zq yv",
         "yvzq zqyv", "a zq. zq"]


@functools.lru_cache(maxsize=None)
def _loaded(name):
    upstream = transformers.AutoTokenizer.from_pretrained(str(GOLDEN_DIR / name), use_fast=False)
    return upstream, rt.load_tokenizer(GOLDEN_DIR / name)


def _fresh(name):
    return tuple(copy.deepcopy(t) for t in _loaded(name))


def _add(upstream, ours, tokens, special):
    added_up = upstream.add_tokens([transformers.AddedToken(content, **flags) for content, flags in tokens],
                                   special_tokens=special)
    added_ours = ours.add_tokens([rt.AddedToken(content, **flags) for content, flags in tokens],
                                 special_tokens=special)
    assert added_up == added_ours


def _check(name, upstream, ours, label, zq="zq", yv="yv"):
    """The texts with `zq` and `yv` standing for the added tokens under test (each case adds its own
    tokens to the same pair: contents no other case's text contains)."""
    assert len(upstream) == len(ours), label
    for text in TEXTS:
        text = text.replace("zq", zq).replace("ZQ", zq.upper()).replace("yv", yv)
        assert ours.tokenize(text) == upstream.tokenize(text), f"{name} {label} tokenize {text!r}"
        exp, got = upstream(text)["input_ids"], ours(text)["input_ids"]
        assert got == exp, f"{name} {label} ids {text!r}: upstream {exp} refimpl {got}"
        e, g = upstream.decode(exp, skip_special_tokens=True), ours.decode(exp, skip_special_tokens=True)
        assert g == e, f"{name} {label} decode {exp}: upstream {e!r} refimpl {g!r}"


def _content(i):  # distinct contents, none inside another: "zqa", "zqb", ...
    return "zq" + "abcdefghijklmnopqrstuvwxyz"[i]


@pytest.mark.parametrize("name", ["opt", "xglm-unigram", "bert-uncased", "bert-cased"])
@pytest.mark.parametrize("special", [False, True], ids=["added", "special"])
def test_every_flag_combination_matches_upstream(name, special):
    upstream, ours = _fresh(name)
    for i, values in enumerate(itertools.product([False, True], repeat=len(FLAGS))):
        flags = dict(zip(FLAGS, values))
        _add(upstream, ours, [(_content(i), flags)], special)
        _check(name, upstream, ours, f"{flags} special={special}", zq=_content(i))


@pytest.mark.parametrize("name", ["opt", "xglm-unigram", "bert-uncased"])
def test_two_added_tokens_side_by_side_match_upstream(name):
    upstream, ours = _fresh(name)
    for i, (first, second) in enumerate(itertools.product(["lstrip", "rstrip", "single_word"], repeat=2)):
        zq, yv = _content(i), "yv" + _content(i)[2]
        _add(upstream, ours, [(zq, {first: True}), (yv, {second: True})], False)
        _check(name, upstream, ours, f"{zq} {first} {yv} {second}", zq=zq, yv=yv)


@pytest.mark.parametrize("name", NAMES)
def test_plain_string_tokens_match_upstream(name):
    """A str (not an AddedToken): upstream makes it normalized unless special; an empty one and a repeated
    one add nothing."""
    upstream, ours = _fresh(name)
    for special, (zq, yv) in ((False, ("zq", "yv")), (True, ("zqs", "yvs"))):
        assert ours.add_tokens([zq, "", zq, yv], special_tokens=special) == \
            upstream.add_tokens([zq, "", zq, yv], special_tokens=special) == 2
        assert ours.add_tokens([zq]) == upstream.add_tokens([zq]) == 0
        _check(name, upstream, ours, f"str tokens special={special}", zq=zq, yv=yv)
        assert ours.all_special_tokens == upstream.all_special_tokens
        assert ours.all_special_ids == upstream.all_special_ids


def test_a_token_that_is_not_a_string_is_refused():
    _, ours = _loaded("opt")
    with pytest.raises(ValueError, match=r"token 5 is not a str or AddedToken"):
        copy.deepcopy(ours).add_tokens([5])
