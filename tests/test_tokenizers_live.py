"""refimpl.tokenizers against live upstream slow tokenizers (skipped without transformers).

1. The golden tokenizer directories, on hypothesis-drawn Unicode (with special tokens mixed in).
2. The real vocabularies in tests/data/vocab/ (origins and licences in its README.md): roberta-base as
   OPT and as LED, bert-base-chinese as NEZHA's BertTokenizer, barthez-spm run through XGLMTokenizer's
   logic.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

transformers = pytest.importorskip("transformers")

import refimpl.tokenizers as rt  # noqa: E402

pytestmark = pytest.mark.upstream
ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "golden" / "tokenizers"
REAL_VOCAB = ROOT / "tests" / "data" / "vocab"
NAMES = ["opt", "led", "xglm-bpe", "xglm-unigram", "bert-uncased", "bert-cased"]
transformers.logging.set_verbosity_error()

_spec = importlib.util.spec_from_file_location("capture_tokenizers", ROOT / "golden" / "capture_tokenizers.py")
CAPTURE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CAPTURE)


@functools.lru_cache(maxsize=None)
def golden_pair(name):
    upstream = transformers.AutoTokenizer.from_pretrained(str(GOLDEN_DIR / name), use_fast=False)
    return upstream, rt.load_tokenizer(GOLDEN_DIR / name)


def _real_files(*parts):
    path = REAL_VOCAB.joinpath(*parts)
    assert path.is_file(), f"{path} is missing from the repository"
    return str(path)


@functools.lru_cache(maxsize=None)
def real_pair(kind):
    """(upstream slow tokenizer, refimpl tokenizer) over a real vocabulary, configured identically."""
    if kind in ("roberta-opt", "roberta-led"):
        vocab, merges = _real_files("roberta-base", "vocab.json"), _real_files("roberta-base", "merges.txt")
        if kind == "roberta-opt":  # facebook/opt-* tokenizer_config.json
            kw = dict(bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>", add_bos_token=True)
            return transformers.GPT2Tokenizer(vocab, merges, **kw), rt.GPT2Tokenizer(vocab, merges, **kw)
        return transformers.LEDTokenizer(vocab, merges), rt.LEDTokenizer(vocab, merges)
    if kind == "bert-base-chinese":
        vocab = _real_files("bert-base-chinese", "vocab.txt")
        return transformers.BertTokenizer(vocab), rt.BertTokenizer(vocab)
    if kind == "barthez-spm":
        model = _real_files("barthez-spm", "sentencepiece.bpe.model")
        return transformers.XGLMTokenizer(vocab_file=model), rt.XGLMTokenizer(vocab_file=model)
    raise KeyError(kind)


REAL = ["roberta-opt", "roberta-led", "bert-base-chinese", "barthez-spm"]


def compare(upstream, ours, text, pair=None, label=""):
    """Every observable of one (text, pair) call: ids, masks, token types, tokens, decoded strings."""
    kw = dict(return_special_tokens_mask=True, return_token_type_ids=True)
    exp, got = dict(upstream(text, pair, **kw)), dict(ours(text, pair, **kw))
    assert exp == got, f"{label} call {text!r} / {pair!r}:\n upstream {exp}\n refimpl  {got}"
    assert upstream.tokenize(text) == ours.tokenize(text), f"{label} tokenize {text!r}"
    ids = exp["input_ids"]
    for options in ({}, {"skip_special_tokens": True}, {"clean_up_tokenization_spaces": False}):
        e, g = upstream.decode(ids, **options), ours.decode(ids, **options)
        assert e == g, f"{label} decode {ids} {options}: upstream {e!r} refimpl {g!r}"


TEXT = st.text(max_size=60)
WITH_SPECIALS = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(
    ["</s>", "<s>", "<pad>", "<mask>", " <mask> ", "<unk>", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "<madeupword0>",
     "\t", "  ", "\n", "'s", "中文", "é", "e\u0301", "Σ", "İ", "👨‍👩‍👧"])), max_size=8).map("".join)
ANY_TEXT = st.one_of(TEXT, WITH_SPECIALS)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NAMES), ANY_TEXT, st.one_of(st.none(), ANY_TEXT))
def test_golden_directories_match_upstream_on_drawn_unicode(name, text, pair):
    upstream, ours = golden_pair(name)
    compare(upstream, ours, text, pair, label=name)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NAMES), st.lists(ANY_TEXT, min_size=1, max_size=4), st.data())
def test_golden_directories_batches_match_upstream(name, texts, data):
    upstream, ours = golden_pair(name)
    kw = data.draw(st.sampled_from([
        {"padding": True}, {"padding": True, "truncation": True, "max_length": 7},
        {"padding": "max_length", "max_length": 12, "truncation": True, "pad_to_multiple_of": 4},
        {"truncation": True, "max_length": 5}, {"padding": True, "return_special_tokens_mask": True}]))
    side = data.draw(st.sampled_from(["left", "right"]))
    op = {"op": "call", "text": texts, "kwargs": kw, "attrs": {"padding_side": side}}
    assert CAPTURE.apply_op(ours, op) == CAPTURE.apply_op(upstream, op), (name, texts, kw, side)


@pytest.mark.parametrize("kind", REAL)
def test_real_vocabularies_match_upstream_on_hard_strings(kind):
    upstream, ours = real_pair(kind)
    lines = CAPTURE.make_corpus(n_lines=200)
    for text in CAPTURE.HARD + lines[:40] + [" ".join(lines[40:120])]:
        compare(upstream, ours, text, label=kind)
    for a, b in CAPTURE.PAIRS:
        compare(upstream, ours, a, b, label=kind)
    for op in CAPTURE.operations(lines, "bpe" if kind.startswith("roberta") else "other"):
        if op["op"] == "call" and isinstance(op["text"], list):
            assert CAPTURE.apply_op(ours, op) == CAPTURE.apply_op(upstream, op), (kind, op)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(REAL), ANY_TEXT, st.one_of(st.none(), ANY_TEXT))
def test_real_vocabularies_match_upstream_on_drawn_unicode(kind, text, pair):
    upstream, ours = real_pair(kind)
    compare(upstream, ours, text, pair, label=kind)


BERT_OPTIONS = [
    dict(do_lower_case=False, strip_accents=True),
    dict(do_lower_case=True, strip_accents=False),
    dict(tokenize_chinese_chars=False),
    dict(never_split=["Hello", "naïve"], do_lower_case=False),
    dict(do_basic_tokenize=False),
]


@functools.lru_cache(maxsize=None)
def bert_pair(k):
    vocab = str(GOLDEN_DIR / "bert-cased" / "vocab.txt")
    return transformers.BertTokenizer(vocab, **BERT_OPTIONS[k]), rt.BertTokenizer(vocab, **BERT_OPTIONS[k])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, len(BERT_OPTIONS) - 1),
       st.one_of(ANY_TEXT, st.sampled_from(["Hello naïve WORLD", "中文 hello", "ÅNGSTRÖM ﬁ", "Hello, naïve!"])))
def test_bert_basic_tokenizer_options_match_upstream(k, text):
    upstream, ours = bert_pair(k)
    compare(upstream, ours, text, label=f"bert {BERT_OPTIONS[k]}")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NAMES), st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5),
       st.booleans())
def test_split_into_words_and_call_options_match_upstream(name, words, prefix):
    upstream, ours = golden_pair(name)
    kw = {"is_split_into_words": True}
    if name in ("opt", "led"):
        kw["add_prefix_space"] = True  # upstream GPT-2/BART need it for pre-split words (slow: a kwarg)
    assert dict(ours(words, **kw)) == dict(upstream(words, **kw)), (name, words)
    if name in ("opt", "led"):
        text = " ".join(words)
        assert ours(text, add_prefix_space=prefix)["input_ids"] == upstream(text, add_prefix_space=prefix)["input_ids"]
