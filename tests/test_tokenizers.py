"""refimpl.tokenizers against golden upstream outputs, upstream's own documented examples, and properties.

No torch/transformers needed. Golden files: golden/tokenizers/<name>.json, written by
`python golden/capture_tokenizers.py` (upstream slow tokenizers are the expected values).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from refimpl.tokenizers import (BasicTokenizer, BatchEncoding, BertTokenizer, GPT2Tokenizer, LEDTokenizer,
                                XGLMTokenizer, bytes_to_unicode, clean_up_tokenization, load_tokenizer)
from refimpl.tokenizers.wordpiece import wordpiece

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "golden" / "tokenizers"
NAMES = ["opt", "led", "xglm-bpe", "xglm-unigram", "bert-uncased", "bert-cased"]
REGEN = "regenerate with `python golden/capture_tokenizers.py` (needs transformers 4.37.2)"


def _capture_module():
    """golden/capture_tokenizers.py (imports transformers only inside its capture functions)."""
    spec = importlib.util.spec_from_file_location("capture_tokenizers", ROOT / "golden" / "capture_tokenizers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CAPTURE = _capture_module()
_TOKENIZERS = {}


def golden_tokenizer(name):
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = load_tokenizer(GOLDEN_DIR / name)
    return _TOKENIZERS[name]


def _canon(x):
    return json.dumps(x, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- golden
@pytest.mark.parametrize("name", NAMES)
def test_golden(name):
    path = GOLDEN_DIR / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"missing golden file {path}; {REGEN}")
    data = json.loads(path.read_text(encoding="utf-8"))
    tok = golden_tokenizer(name)
    failures = []
    for i, case in enumerate(data["cases"]):
        try:
            got = CAPTURE.apply_op(tok, case)
        except Exception as e:  # noqa: BLE001 - reported as a mismatch below
            got = {"error": f"{type(e).__name__}: {e}"}
        expected = case["slow"] if "slow" in case else {"slow_error": case["slow_error"]}
        if _canon(got) != _canon(expected):
            what = {k: case[k] for k in ("op", "text", "text_pair", "ids", "kwargs", "attrs") if k in case}
            fields = sorted(k for k in expected if isinstance(expected, dict) and got.get(k) != expected[k]) \
                if isinstance(expected, dict) and isinstance(got, dict) else ["value"]
            failures.append(f"{name} case {i} {what!r}: fields {fields}\n  upstream {_canon(expected)[:400]}"
                            f"\n  refimpl  {_canon(got)[:400]}")
    assert not failures, f"{len(failures)} of {len(data['cases'])} golden cases differ ({REGEN}):\n" + \
        "\n".join(failures[:10])


def test_golden_files_are_small_and_complete():
    total = sum(f.stat().st_size for f in GOLDEN_DIR.rglob("*") if f.is_file())
    assert total < 5e6, f"golden/tokenizers is {total / 1e6:.1f} MB (budget 5 MB)"
    for name in NAMES:
        data = json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))
        assert data["transformers"] == "4.37.2", f"{name}: captured with transformers {data['transformers']}"
        for disagreement in data["disagreements"]:  # slow/fast disagreements keep both values
            assert "fast" in data["cases"][disagreement], f"{name} case {disagreement}"


# ------------------------------------------------------------------------ upstream's documented examples
def test_bytes_to_unicode_is_a_printable_bijection():
    m = bytes_to_unicode()
    assert sorted(m) == list(range(256)) and len(set(m.values())) == 256
    assert m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ" and m[ord("A")] == "A"  # GPT-2 convention
    assert all(c.isprintable() and not c.isspace() for c in m.values())


def test_basic_tokenizer_upstream_examples():
    # transformers tests/models/bert/test_tokenization_bert.py (test_basic_tokenizer_*)
    lower = BasicTokenizer(do_lower_case=True)
    assert lower.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert lower.tokenize("H\u00E9llo") == ["hello"]
    assert BasicTokenizer(do_lower_case=True, strip_accents=False).tokenize(" \tHäLLo!how  \n Are yoU?  ") == \
        ["hällo", "!", "how", "are", "you", "?"]
    assert BasicTokenizer(do_lower_case=False).tokenize(" \tHeLLo!how  \n Are yoU?  ") == \
        ["HeLLo", "!", "how", "Are", "yoU", "?"]
    assert BasicTokenizer(do_lower_case=False, strip_accents=True).tokenize(" \tHäLLo!how  \n Are yoU?  ") == \
        ["HaLLo", "!", "how", "Are", "yoU", "?"]
    assert BasicTokenizer(do_lower_case=False, never_split=["[UNK]"]).tokenize(" \tHeLLo!how  \n Are yoU? [UNK]") \
        == ["HeLLo", "!", "how", "Are", "yoU", "?", "[UNK]"]
    assert lower.tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]  # CJK split


def test_wordpiece_upstream_example():
    # test_tokenization_bert.py test_wordpiece_tokenizer
    vocab = {t: i for i, t in enumerate(["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn",
                                         "##ing"])}
    split = lambda text: [p for w in text.split() for p in wordpiece(w, vocab, "[UNK]")]  # noqa: E731
    assert split("") == []
    assert split("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert split("unwantedX running") == ["[UNK]", "runn", "##ing"]
    assert wordpiece("a" * 101, {"a": 0}, "[UNK]") == ["[UNK]"]  # max_input_chars_per_word


def test_clean_up_tokenization():
    assert clean_up_tokenization("Hello , world ! I 'm here . Don 't") == "Hello, world! I'm here. Don 't"


# ------------------------------------------------------------------------------- calling convention
def test_padded_batches_are_int64_arrays_and_unpadded_are_lists():
    tok = golden_tokenizer("led")
    enc = tok(["a b c", "d"], padding=True)
    assert isinstance(enc, BatchEncoding) and isinstance(enc["input_ids"], np.ndarray)
    assert enc.input_ids.dtype == np.int64 and enc.input_ids.shape == enc.attention_mask.shape
    assert enc.attention_mask.sum(axis=1).tolist() == [len(tok.encode("a b c")), len(tok.encode("d"))]
    ragged = tok(["a b c", "d"])
    assert isinstance(ragged["input_ids"], list) and isinstance(ragged["input_ids"][0], list)
    single = tok("a b c", return_tensors="np")
    assert single["input_ids"].shape == (1, len(tok.encode("a b c")))
    with pytest.raises(ValueError, match="different lengths"):
        tok(["a b c", "d"], return_tensors="np")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("a", return_tensors="pt")


def test_batch_rows_equal_single_calls_left_and_right_padding():
    for side in ("left", "right"):
        tok = load_tokenizer(GOLDEN_DIR / "bert-uncased", padding_side=side)
        texts = ["Hello world", "", "你好，世界！ a much longer sentence"]
        enc = tok(texts, padding=True)
        for row, text in zip(range(len(texts)), texts):
            ids = tok.encode(text)
            mask = enc["attention_mask"][row].astype(bool)
            assert enc["input_ids"][row][mask].tolist() == ids, (side, text)
            kept = np.flatnonzero(mask)
            assert (kept == (np.arange(len(ids)) + (len(mask) - len(ids) if side == "left" else 0))).all()
            assert (enc["input_ids"][row][~mask] == tok.pad_token_id).all()


def test_led_pad_global_attention_mask_with_minus_one():
    tok = golden_tokenizer("led")
    out = tok.pad([{"input_ids": [5, 6, 7], "global_attention_mask": [1, 0, 0]},
                   {"input_ids": [5], "global_attention_mask": [1]}], padding=True)
    assert out["global_attention_mask"].tolist() == [[1, 0, 0], [1, -1, -1]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_special_token_attributes():
    opt, led, xglm, bert = (golden_tokenizer(n) for n in ("opt", "led", "xglm-bpe", "bert-uncased"))
    assert (opt.bos_token, opt.eos_token, opt.pad_token, opt.add_bos_token) == ("</s>", "</s>", "<pad>", True)
    assert opt.encode("")[0] == opt.bos_token_id == opt.convert_tokens_to_ids("</s>")
    assert (led.cls_token_id, led.pad_token_id, led.eos_token_id, led.unk_token_id) == (0, 1, 2, 3)
    assert led.mask_token_id == led.vocab_size - 1
    assert (xglm.bos_token_id, xglm.pad_token_id, xglm.eos_token_id, xglm.unk_token_id) == (0, 1, 2, 3)
    assert xglm.convert_tokens_to_ids("<madeupword6>") == xglm.vocab_size - 1 == len(xglm.sp_model) + 7
    assert xglm.encode("") == [2]
    assert bert.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert bert.convert_ids_to_tokens(bert.encode("")) == ["[CLS]", "[SEP]"]


def test_load_tokenizer_by_model_type_without_config(tmp_path):
    # vocab.json + merges.txt alone are ambiguous; model_type decides (OPT gets facebook/opt-* settings)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GOLDEN_DIR / "led" / f, tmp_path / f)
    with pytest.raises(ValueError, match="model_type"):
        load_tokenizer(tmp_path)
    opt = load_tokenizer(tmp_path, model_type="opt")
    assert isinstance(opt, GPT2Tokenizer) and opt.encode("Hello world") == golden_tokenizer("opt").encode("Hello world")
    led = load_tokenizer(tmp_path, model_type="led")
    assert isinstance(led, LEDTokenizer) and led.encode("Hello world") == golden_tokenizer("led").encode("Hello world")
    (tmp_path / "config.json").write_text('{"model_type": "bart"}')
    assert type(load_tokenizer(tmp_path)).__name__ == "BartTokenizer"


def test_load_tokenizer_picks_class_by_files(tmp_path):
    shutil.copy(GOLDEN_DIR / "bert-cased" / "vocab.txt", tmp_path / "vocab.txt")
    assert isinstance(load_tokenizer(tmp_path), BertTokenizer)
    other = tmp_path / "x"
    other.mkdir()
    shutil.copy(GOLDEN_DIR / "xglm-bpe" / "sentencepiece.bpe.model", other / "sentencepiece.bpe.model")
    assert isinstance(load_tokenizer(other), XGLMTokenizer)


def test_clear_errors_for_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ValueError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    with pytest.raises(ValueError, match="not supported"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer"}')
    with pytest.raises(ValueError, match="vocab.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "XGLMTokenizer"}')
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid sentencepiece model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_tokenizer(tmp_path)


def test_bad_arguments():
    tok = golden_tokenizer("opt")
    with pytest.raises(ValueError, match="padding"):
        tok(["a"], padding="everything")
    with pytest.raises(ValueError, match="truncation"):
        tok(["a"], truncation="middle")
    with pytest.raises(ValueError, match="text must be"):
        tok(42)
    with pytest.raises(ValueError, match="does not match"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="multiple of pad_to_multiple_of"):
        tok(["a"], padding=True, truncation=True, max_length=10, pad_to_multiple_of=4)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([tok.vocab_size + 5])
    nopad = load_tokenizer(GOLDEN_DIR / "opt", pad_token=None)
    with pytest.raises(ValueError, match="no pad_token"):
        nopad(["a", "b c"], padding=True)


# ------------------------------------------------------------------------------------------ properties
TEXT = st.text(max_size=80)
SPECIALISH = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["</s>", "<s>", "<pad>", "<mask>", " <mask>", "<unk>", "[CLS]", "[SEP]", "[MASK]", "<madeupword2>", " ", "\n"])),
    max_size=8).map("".join)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(TEXT, SPECIALISH))
def test_byte_level_bpe_round_trips_any_string(text):
    tok = golden_tokenizer("opt")  # no lstrip/rstrip tokens, so nothing is eaten
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, clean_up_tokenization_spaces=False) == text


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NAMES), st.one_of(TEXT, SPECIALISH), st.one_of(st.none(), TEXT))
def test_ids_always_in_range(name, text, pair):
    tok = golden_tokenizer(name)
    enc = tok(text, pair, return_special_tokens_mask=True)
    ids = enc["input_ids"]
    assert all(0 <= i < len(tok) for i in ids), (name, text, ids)
    assert len(enc["attention_mask"]) == len(ids) == len(enc["special_tokens_mask"])
    assert sum(enc["special_tokens_mask"]) == tok.num_special_tokens_to_add(pair is not None)
    assert isinstance(tok.decode(ids), str)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NAMES), st.lists(TEXT, min_size=1, max_size=4), st.integers(1, 12))
def test_truncated_padded_batch_is_consistent(name, texts, max_length):
    tok = golden_tokenizer(name)
    enc = tok(texts, padding="max_length", truncation=True, max_length=max(max_length, 3))
    assert enc["input_ids"].shape == (len(texts), max(max_length, 3))
    for row, text in enumerate(texts):
        full = tok.encode(text)
        n = int(enc["attention_mask"][row].sum())
        assert n == min(len(full), max(max_length, 3))


# ------------------------------------------------------------- fast twins against upstream's formulation
def _upstream_bpe(word, ranks):
    """GPT2Tokenizer.bpe restated (min over the set of pairs, merge all occurrences left to right)."""
    word = tuple(word)
    pairs = set(zip(word, word[1:]))
    while pairs:
        bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if bigram not in ranks:
            break
        first, second = bigram
        new_word, i = [], 0
        while i < len(word):
            try:
                j = word.index(first, i)
            except ValueError:
                new_word.extend(word[i:])
                break
            new_word.extend(word[i:j])
            i = j
            if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                new_word.append(first + second)
                i += 2
            else:
                new_word.append(word[i])
                i += 1
        word = tuple(new_word)
        pairs = set(zip(word, word[1:])) if len(word) > 1 else set()
    return list(word)


@st.composite
def words_and_merges(draw):
    alphabet = draw(st.sampled_from(["a", "ab", "abc"]))
    symbols, merges = list(alphabet), []
    for _ in range(draw(st.integers(0, 12))):
        a, b = draw(st.sampled_from(symbols)), draw(st.sampled_from(symbols))
        merges.append((a, b))
        if draw(st.booleans()):
            symbols.append(a + b)
    merges = draw(st.permutations(merges)) if draw(st.booleans()) else merges  # also inconsistent orders
    return draw(st.text(alphabet=alphabet, max_size=16)), dict(zip(merges, range(len(merges))))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(words_and_merges())
def test_bpe_merge_equals_upstream_algorithm(case):
    from refimpl.tokenizers.bpe import bpe_merge

    word, ranks = case
    assert bpe_merge(word, ranks) == _upstream_bpe(word, ranks), (word, ranks)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.text(alphabet="ab#c", min_size=1, max_size=5), max_size=12), st.text(alphabet="ab#cd", max_size=12))
def test_wordpiece_prefix_index_equals_reference(vocab_list, word):
    from refimpl.tokenizers.wordpiece import PrefixIndex

    vocab = {t: i for i, t in enumerate(vocab_list)}
    if word:
        assert PrefixIndex(vocab).tokenize(word, "[UNK]") == wordpiece(word, vocab, "[UNK]"), (vocab, word)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=40))
def test_clean_text_and_punctuation_split_equal_per_char_rules(text):
    import unicodedata

    from refimpl.tokenizers.wordpiece import clean_text, split_on_punctuation

    def is_control(c):  # tokenization_utils._is_control
        return c not in "\t\n\r" and unicodedata.category(c).startswith("C")

    def is_ws(c):  # tokenization_utils._is_whitespace
        return c in " \t\n\r" or unicodedata.category(c) == "Zs"

    def is_punct(c):  # tokenization_utils._is_punctuation
        cp = ord(c)
        return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or \
            unicodedata.category(c).startswith("P")

    expected = "".join("" if (c in "\x00\ufffd" or is_control(c)) else " " if is_ws(c) else c for c in text)
    assert clean_text(text) == expected
    pieces, new = [], True
    for c in text:
        if is_punct(c):
            pieces.append(c)
            new = True
        else:
            if new:
                pieces.append("")
            new = False
            pieces[-1] += c
    assert split_on_punctuation(text) == pieces


def test_padding_side_and_truncation_side_come_from_tokenizer_config(tmp_path):
    shutil.copytree(GOLDEN_DIR / "led", tmp_path / "led")
    cfg_path = tmp_path / "led" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(padding_side="left", truncation_side="left", model_max_length=5)
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    tok = load_tokenizer(tmp_path / "led")
    assert (tok.padding_side, tok.truncation_side, tok.model_max_length) == ("left", "left", 5)
    enc = tok(["a b c d e f g", "x"], padding=True, truncation=True)  # max_length from model_max_length
    plain = golden_tokenizer("led").encode("a b c d e f g", add_special_tokens=False)
    # truncation_side="left" keeps the last 3 text tokens, then the template `<s> A </s>` is added
    assert enc["input_ids"][0].tolist() == [tok.cls_token_id] + plain[-3:] + [tok.sep_token_id]
    assert enc["attention_mask"][1].tolist() == [0, 0, 1, 1, 1]  # left padding
