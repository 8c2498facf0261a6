"""`refimpl diff-tokenize` against transformers 4.37.2's fast (Rust) tokenizers, `use_fast=True`, on the four real
vocabularies and a broad Unicode corpus (skipped without transformers, or without the vocabularies in
tests/data/vocab/).

For every line, upstream's slow tokenizer decides: refimpl gives its ids on every line (diff-tokenize against
the slow ids: exit 0), and diff-tokenize against the fast ids reports exactly the lines where fast and slow
differ, with both id lists and the first differing position. The strings documented in the README as
tokenized differently by the fast tokenizers (FAST_DIFFERS) are checked to still differ, and the rest of the
corpus to agree wherever the README says the fast tokenizer agrees.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from refimpl.cli import main  # noqa: E402

transformers.logging.set_verbosity_error()
VOCAB = Path(__file__).resolve().parent / "data" / "vocab"
OPT_CONFIG = {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>",
              "add_bos_token": True}  # a facebook/opt-* tokenizer_config.json
# kind -> (vocabulary folder, its files, tokenizer_config.json)
KINDS = {
    "opt": ("roberta-base", ("vocab.json", "merges.txt"), {"tokenizer_class": "GPT2Tokenizer", **OPT_CONFIG}),
    "led": ("roberta-base", ("vocab.json", "merges.txt"), {"tokenizer_class": "LEDTokenizer"}),
    "nezha": ("bert-base-chinese", ("vocab.txt",), {"tokenizer_class": "BertTokenizer"}),
    "xglm": ("barthez-spm", ("sentencepiece.bpe.model",), {"tokenizer_class": "XGLMTokenizer"}),
}
# The strings the fast tokenizers tokenize differently from the slow ones (the README's list); the byte-level
# BPE tokenizers (OPT, LED) differ on none of the corpus.
FAST_DIFFERS = {
    "opt": [], "led": [],
    # unassigned code points (and ones newer than the Rust tables): slow drops them (_clean_text), fast keeps
    # them, as [UNK] or spoiling the word they touch
    "nezha": ["中\u0378文", "Ｌ\U000e001f", "中\u0898文", "a\ufb0cb"],
    # sentencepiece's own normalizer and unknown pieces against the converted fast tokenizer
    "xglm": ["\x85", "e\u0301\u0301", "Ｊ\u030f", "a\u0301\u0301\u0301\u0301", "a\u0323\u0308\u0302"],
}
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "<madeupword0>"]
FIXED = [
    "Hello world", " Hello  world ", "Hello\tworld", "Hello\u00a0world", "Hello\u3000world", "Hello\u2009\u200bworld",
    "line\rreturn", "form\x0cfeed", "vertical\x0btab", "nul\x00char", "bell\x07 and esc\x1b[0m", "del\x7f",
    "\u0085next line", "\u2028line sep\u2029para sep", "zero\u200dwidth\u200cjoiner\ufeffbom", "soft\u00adhyphen",
    "Ünïcödé àccénts", "e\u0301 combining", "a\u0308\u0323\u0302 stacked marks", "\u0301 leading mark",
    "Ελληνικά κείμενα", "Русский текст, ёлка", "עברית מימין לשמאל", "العربية، مرحبا", "हिन्दी देवनागरी", "বাংলা",
    "ภาษาไทยไม่มีช่องว่าง", "中文文本，标点。", "日本語のテキスト、カタカナ", "한국어 텍스트", "ქართული", "አማርኛ",
    "ᚠᚢᚦᚨᚱᚲ runes", "𝕸𝖆𝖙𝖍 𝒻𝓇𝒶𝓀𝓉𝓊𝓇", "ﬁ ligature ﬀ", "①②③ ⅫⅣ", "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３", "ｶﾀｶﾅ halfwidth",
    "㍻ ㎏ ℃ ™", "emoji 😀😃🙂", "family 👨\u200d👩\u200d👧\u200d👦", "flag 🇫🇷🇯🇵", "skin 👍🏽", "keycap 1️⃣ #️⃣",
    "heart ❤️ vs ❤", "x" * 120, "supercalifragilisticexpialidocious" * 4, "a" + "\u0301" * 40, "🙂" * 30,
    "it's don't we'll I'M THEY'RE", "numbers 3.14159 1,000,000 -42 1e-10", "code: def f(x): return x**2  # note",
    "https://example.com/path?q=1&r=2#frag", "email@example.org", "    leading spaces", "trailing spaces    ",
    "tabs\t\tand\t spaces", "", " ", "  ", "\t", "\r", "multiple   internal    spaces", "mixed English 和中文 and العربية",
    "Tiếng Việt có dấu", "Ærøskøbing Ğ ı İ ß ẞ", "ǅ ǈ titlecase", "Ⓐⓑⓒ", "\ue000 private use \U000f0000",
    "\U000e0041\U000e0042 tags", "variation\ufe0f selector\ufe0e", "\u202eright-to-left override\u202c",
]
# code point ranges the random lines draw from: ASCII, Latin, combining marks, Greek, Cyrillic, Hebrew/Arabic,
# Devanagari, Thai, Hangul Jamo, punctuation, symbols, CJK, Hangul, presentation forms, variation selectors,
# fullwidth, mathematical letters, emoji, C0/C1 controls, private use, Linear B, tags
RANGES = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f),
          (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x206f), (0x2100, 0x22ff), (0x3000, 0x30ff), (0x4e00, 0x9fff),
          (0xac00, 0xd7a3), (0xfb00, 0xfb4f), (0xfe00, 0xfe0f), (0xff00, 0xffef), (0x1d400, 0x1d7ff),
          (0x1f300, 0x1faff), (0x0, 0x1f), (0x80, 0x9f), (0xe000, 0xe0ff), (0x10000, 0x1007f), (0xe0000, 0xe007f)]


def vocab_dir(name) -> Path:
    """The real vocabulary `name`, from the repository's copy in tests/data/vocab/<name>; skips without it."""
    path = VOCAB / name
    if not path.is_dir():
        pytest.skip(f"the real vocabulary {name!r} is not in the repository (expected tests/data/vocab/{name}/)")
    return path


def corpus(seed=0, random_lines=300):
    lines = list(FIXED) + [s for strings in FAST_DIFFERS.values() for s in strings]
    for s in SPECIALS:  # special tokens as text, alone and inside words
        lines += [s, f"a{s}b", f"a {s} b", f" {s}", f"{s} ", f"{s}{s}", f"x{s.lower()}y", s.upper()]
    rng = np.random.default_rng(seed)
    for _ in range(random_lines):
        chars = []
        for _ in range(int(rng.integers(1, 25))):
            low, high = RANGES[int(rng.integers(len(RANGES)))]
            chars.append(chr(int(rng.integers(low, high + 1))))
            if rng.random() < 0.2:
                chars.append(" ")
        lines.append("".join(chars).replace("\n", " "))
    return lines


@pytest.fixture(scope="module", params=sorted(KINDS))
def tokenizers(request, tmp_path_factory):  # -> (kind, directory, corpus, upstream's slow ids, fast ids)
    kind = request.param
    folder, files, config = KINDS[kind]
    source = vocab_dir(folder)
    directory = tmp_path_factory.mktemp(kind)
    for name in files:
        shutil.copy(source / name, directory / name)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    slow = transformers.AutoTokenizer.from_pretrained(str(directory), use_fast=False)
    fast = transformers.AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    assert not slow.is_fast and fast.is_fast
    texts = corpus()
    return kind, directory, texts, [slow(t)["input_ids"] for t in texts], [fast(t)["input_ids"] for t in texts]


def diff(capsys, tmp_path, directory, texts, ids):
    lines, against = tmp_path / "lines.txt", tmp_path / "ids.jsonl"
    lines.write_bytes("".join(t + "\n" for t in texts).encode("utf-8"))
    against.write_text("".join(json.dumps({"input_ids": i}) + "\n" for i in ids), encoding="utf-8")
    code = main(["diff-tokenize", "--tokenizer", str(directory), "--input", str(lines), "--against", str(against),
                 "--json", "--show", str(len(texts))])
    return code, json.loads(capsys.readouterr().out)


def test_refimpl_gives_the_slow_ids_on_every_line(tokenizers, tmp_path, capsys):
    kind, directory, texts, slow_ids, _ = tokenizers
    code, report = diff(capsys, tmp_path, directory, texts, slow_ids)
    assert (code, report["differing"]) == (0, 0), [(d["text"], d["ours"], d["theirs"]) for d in report["lines"][:5]]


def test_the_fast_tokenizers_differences_are_reported(tokenizers, tmp_path, capsys):
    kind, directory, texts, slow_ids, fast_ids = tokenizers
    expected = {i + 1 for i, (a, b) in enumerate(zip(slow_ids, fast_ids)) if a != b}
    code, report = diff(capsys, tmp_path, directory, texts, fast_ids)
    assert code == (1 if expected else 0) and report["differing"] == len(expected)
    assert {d["line"] for d in report["lines"]} == expected
    for d in report["lines"]:
        i = d["line"] - 1
        a, b = slow_ids[i], fast_ids[i]
        position = next(p for p in range(max(len(a), len(b)) + 1) if a[p:p + 1] != b[p:p + 1])
        assert (d["text"], d["ours"], d["theirs"], d["position"]) == (texts[i], a, b, position)
    differing = {texts[line - 1] for line in expected}
    documented = set(FAST_DIFFERS[kind])
    assert documented <= differing, f"{kind}: documented as differing but agreeing: {documented - differing}"
    if kind in ("opt", "led"):
        assert not differing, f"{kind}: the fast tokenizer now differs on {sorted(differing)[:5]}"
