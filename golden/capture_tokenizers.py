"""Capture upstream tokenizer behaviour as golden JSON for refimpl.tokenizers (needs transformers 4.37.2).

    python golden/capture_tokenizers.py            # writes golden/tokenizers/ (reuses trained files there)
    python golden/capture_tokenizers.py --retrain  # trains the vocabularies again

1. Generates a multilingual corpus deterministically (make_corpus; ~2 MB, 14 scripts, Zipf word frequencies).
2. Trains tokenizer files with upstream's own trainers, at realistic sizes (8k):
   byte-level BPE and WordPiece with the `tokenizers` library, BPE and unigram with `sentencepiece`.
3. Saves them as upstream tokenizer directories through transformers' slow classes' save_pretrained:
   opt/ (GPT2Tokenizer, add_bos_token, `</s>` BOS, as facebook/opt-*), led/ (LEDTokenizer),
   xglm-bpe/ and xglm-unigram/ (XGLMTokenizer), bert-uncased/ and bert-cased/ (BertTokenizer).
4. Replays a list of operations (calls with padding/truncation/pairs, tokenize, decode, ...) over hard
   strings through upstream's slow AND fast tokenizers and writes <name>.json with both results.
   The expected value is the slow one; cases where fast differs are listed under "disagreements".

Deterministic: rerunning rewrites identical files. The byte-level BPE and sentencepiece trainers are
deterministic on the fixed corpus; tokenizers' WordPiece trainer is not, so trained files are reused
(see build_directories).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "tokenizers"
VOCAB_SIZE = 8192
SPM_VOCAB_SIZE = 8000

# --------------------------------------------------------------------------- corpus
_SCRIPTS = {
    # name: (alphabet as a string of code points / ranges, words per sentence, word length range)
    "latin": ("abcdefghijklmnopqrstuvwxyz", (4, 14), (1, 9)),
    "latin_acc": ("abcdeéèêëfghiîïjklmnoôöpqrstuùûüvwxyzçñßàâæœåøäõãíóúý", (4, 12), (2, 10)),
    "cyrillic": ("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", (4, 12), (2, 10)),
    "greek": ("αβγδεζηθικλμνξοπρστυφχψωάέήίόύώς", (4, 12), (2, 9)),
    "arabic": ("ابتثجحخدذرزسشصضطظعغفقكلمنهوي", (3, 10), (2, 7)),
    "hebrew": ("אבגדהוזחטיכלמנסעפצקרשת", (3, 10), (2, 6)),
    "devanagari": ("कखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसह" + "ािीुूेैोौं्", (3, 10), (2, 8)),
    "thai": ("กขคงจฉชซญดตถทธนบปผพฟภมยรลวศษสหอฮ" + "ะาำิีึืุูเแโใไ่้๊๋", (2, 8), (3, 10)),
    "hangul": ([0xAC00, 0xAC00 + 600], (3, 9), (1, 4)),
    "kana": ("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコサシスセソタチツテトナニヌネノ", (1, 4), (2, 8)),
    "cjk": ([0x4E00, 0x4E00 + 2500], (1, 3), (2, 10)),
}
_PUNCT = [".", ",", "!", "?", ";", ":", "…", "。", "，", "、", "！", "？", "»", "«", "\"", "'", "(", ")", "-", "—"]
_EMOJI = ["😀", "😂", "👍", "👍🏽", "❤️", "🔥", "🎉", "👨‍👩‍👧", "🇫🇷", "🙂", "✨", "🚀"]
_ENGLISH = ("the of and to in is was for that with as on by at from his her they we you it be are this "
            "have not but had which were one all their there been has when who will more no if out so said "
            "what up its about into than them can only other new some time could these two may then do first "
            "any my now such like our over man me even most made after also did many before must through back "
            "years where much your way well down should because each just those people how too little state "
            "good very make world still own see men work long get here between both life being under never day "
            "same another know while last might us great old year off come since against go came right used take "
            "three don't I'm it's we've they're she'll he'd can't won't isn't").split()


def _alphabet(spec):
    if isinstance(spec, list):
        return [chr(c) for c in range(spec[0], spec[1])]
    return list(spec)


def make_corpus(n_lines: int = 30000, seed: int = 20240521):
    """-> list of n_lines sentences, deterministic for a seed (Python's random is stable across versions)."""
    rng = random.Random(seed)
    lexicons = {}
    for name, (alpha, _, (lo, hi)) in _SCRIPTS.items():
        chars = _alphabet(alpha)
        words = set()
        while len(words) < 3000:
            words.add("".join(rng.choice(chars) for _ in range(rng.randint(lo, hi))))
        lexicons[name] = sorted(words)
    lexicons["english"] = _ENGLISH
    names = sorted(lexicons)
    weights = {n: [1.0 / (i + 1) for i in range(len(lexicons[n]))] for n in names}  # Zipf
    lines = []
    for _ in range(n_lines):
        name = rng.choice(names + ["english"] * 3)
        nmin, nmax = _SCRIPTS.get(name, (None, (5, 16)))[1]
        words = rng.choices(lexicons[name], weights=weights[name], k=rng.randint(nmin, nmax))
        sep = "" if name == "cjk" and rng.random() < 0.7 else " "
        out = []
        for w in words:
            r = rng.random()
            if r < 0.05:
                w = w.capitalize()
            elif r < 0.08:
                w = str(rng.randint(0, 10 ** rng.randint(1, 6)))
            elif r < 0.10:
                w = rng.choice(_EMOJI)
            elif r < 0.16:
                w = w + rng.choice(_PUNCT)
            out.append(w)
        lines.append(sep.join(out) + rng.choice([".", "!", "?", "。", ""]))
    return lines


# --------------------------------------------------------------------------- hard strings
HARD = [
    "", " ", "  ", "\t", "\n", "\r\n", "   \t \n  ",
    "Hello world", " Hello world", "Hello  world", "Hello world ", "   leading and trailing   ",
    "a \t\t b\n\n\nc  \t d", "tabs\tbetween\twords", "line1\nline2\r\nline3\rline4",
    "don't, I'm, we've, they're, she'll, he'd, it's", "DON'T I'M WE'VE 'S 'll", "'s's 't 're 've 'm 'll 'd",
    "1234567890 3.14159 1,000,000 ¹²³ ٣٤٥ ४५६ Ⅻ ½",
    "Café naïve résumé Ångström façade Übermäßig", "Cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "ǅemal ǈ ﬁne ﬀ ŉ", "ΟΔΥΣΣΕΥΣ Σίσυφος ΣΣ Σ.", "İstanbul ıi IİıI", "STRASSE straße ẞ",
    "Привет, мир! Ёжик в тумане.", "مرحبا بالعالم، كيف حالك؟", "שָׁלוֹם עוֹלָם", "नमस्ते दुनिया। क्षत्रिय",
    "สวัสดีครับ ภาษาไทย", "안녕하세요 세계! 한국어", "こんにちは世界 カタカナ ｶﾀｶﾅ", "你好，世界！我爱自然语言处理。",
    "𠀀𠀁𪜀 𫝀 豈 丽", "Hello世界123abc!!!???", "ﾊﾝｶｸ ＦＵＬＬ　ＷＩＤＴＨ ｱｲｳ",
    "👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇩🇪 ❤️ 1️⃣ 🫠", "emoji👍glued😀to😂words", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "a\u0300\u0301\u0302 \u0301start", "a\x00b\x01c\x7fd\x85e\u200bf\u200dg\ufeffh\u2028i\u2029j",
    "\x1b[31mred\x1b[0m", "x\ufffdy \ue000 \uffff end", "a\u00a0b\u3000c\u2003d\u202fe",
    "\u202eabc\u202c \u200e\u200f", "▁ already underlined ▁▁x", "https://example.com/path?q=1&r=2#frag",
    "def f(x):\n    return x**2  # comment", "email@example.org, @user #tag $5.00 100% a+b=c",
    "<s>hello</s>", "a <mask> b", "a<mask>b", "a  <mask>  b", "<mask>", " <mask>", "<pad><pad>", "</s></s> x",
    "<unk> <UNK>", "[CLS] x [SEP] y [MASK] z [PAD] [UNK]", "[cls] lower [mask] [Sep]", "<madeupword0> <madeupword6>x",
    "<|endoftext|>", "<s", "s>", "<<s>>", "< s >",
    "a" * 250, "supercalifragilisticexpialidocious" * 4, "x" * 101, "y" * 100, "中" * 50, "😀" * 40,
    "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "ab" * 120 + " " + "ß" * 60,
]
PAIRS = [
    ("first sentence", "second one here"),
    ("Bonjour le monde", "你好世界"),
    ("", "only the pair"),
    ("a <mask> b", "c d e f g h i j k l m n o p"),
    ("Привет мир как дела сегодня утром", "ok"),
]
BATCH = ["Hello world", "", "你好，世界！", "a much longer sentence with quite a few more words in it, really",
         "👍🏽 emoji", "  spaces  "]


def _corpus_samples(lines):
    rng = random.Random(7)
    return [rng.choice(lines) for _ in range(12)] + [" ".join(rng.choice(lines) for _ in range(20))]


def operations(corpus_lines, family):
    """The list of operations replayed on every tokenizer: [{"op": ..., ...}]."""
    texts = HARD + _corpus_samples(corpus_lines)
    ops = []
    for t in texts:
        ops.append({"op": "call", "text": t, "kwargs": {"return_special_tokens_mask": True}})
        ops.append({"op": "tokenize", "text": t})
        ops.append({"op": "decode_of", "text": t, "kwargs": {}})
        ops.append({"op": "decode_of", "text": t, "kwargs": {"skip_special_tokens": True}})
        ops.append({"op": "decode_of", "text": t, "kwargs": {"clean_up_tokenization_spaces": False}})
    for t in HARD[7:20] + HARD[55:62]:
        ops.append({"op": "call", "text": t, "kwargs": {"add_special_tokens": False}})
        if family == "bpe":
            ops.append({"op": "call", "text": t, "kwargs": {"add_prefix_space": True}, "slow_only": True})
    ops.append({"op": "call", "text": "tokens", "kwargs": {"return_token_type_ids": True}})
    texts_a, texts_b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    for a, b in PAIRS:
        ops.append({"op": "call", "text": a, "text_pair": b,
                    "kwargs": {"return_special_tokens_mask": True, "return_token_type_ids": True}})
    batch_kwargs = [
        {"padding": True},
        {"padding": "longest", "return_special_tokens_mask": True},
        {"padding": "max_length", "max_length": 16, "truncation": True},
        {"padding": True, "truncation": True, "max_length": 10, "pad_to_multiple_of": 5},
        {"padding": True, "pad_to_multiple_of": 8},
        {"truncation": True, "max_length": 7},
        {"max_length": 6},
        {"padding": True, "max_length": 6},
        {"padding": "max_length", "max_length": 4},
        {"padding": False},
        {"padding": True, "add_special_tokens": False},
        {"padding": True, "return_attention_mask": False},
        {"padding": True, "return_token_type_ids": True},
        {"padding": True, "return_length": True},
    ]
    for kw in batch_kwargs:
        ops.append({"op": "call", "text": BATCH, "kwargs": kw})
    for side in ("left",):
        ops.append({"op": "call", "text": BATCH, "kwargs": {"padding": True, "return_special_tokens_mask": True},
                    "attrs": {"padding_side": side}})
        ops.append({"op": "call", "text": BATCH, "kwargs": {"truncation": True, "max_length": 5},
                    "attrs": {"truncation_side": side}})
    pair_kwargs = [
        {"padding": True},
        {"padding": True, "return_token_type_ids": True, "return_special_tokens_mask": True},
        {"padding": True, "truncation": True, "max_length": 9},
        {"padding": True, "truncation": "longest_first", "max_length": 12},
        {"padding": True, "truncation": "only_first", "max_length": 10},
        {"padding": True, "truncation": "only_second", "max_length": 10},
        {"padding": "max_length", "truncation": True, "max_length": 24, "pad_to_multiple_of": 8},
    ]
    for kw in pair_kwargs:
        ops.append({"op": "call", "text": texts_a, "text_pair": texts_b, "kwargs": kw})
    ops.append({"op": "call", "text": texts_a, "text_pair": texts_b, "kwargs": {"padding": True},
                "attrs": {"padding_side": "left", "truncation_side": "left"}})
    ops.append({"op": "call", "text": "one two three four five six seven eight nine ten",
                "kwargs": {"truncation": True, "max_length": 6, "stride": 2, "return_overflowing_tokens": True},
                "slow_only": True})
    ops.append({"op": "call", "text": "one two three four five six seven eight nine ten",
                "kwargs": {"truncation": True, "max_length": 6}, "attrs": {"truncation_side": "left"}})
    # LED: global_attention_mask padded with -1 (tokenization_led.py _pad)
    ops.append({"op": "pad", "features": [{"input_ids": [5, 6, 7], "global_attention_mask": [1, 0, 0]},
                                          {"input_ids": [5], "global_attention_mask": [1]}],
                "kwargs": {"padding": True}})
    ops.append({"op": "pad", "features": [{"input_ids": [5, 6, 7], "global_attention_mask": [1, 0, 0]},
                                          {"input_ids": [5], "global_attention_mask": [1]}],
                "kwargs": {"padding": "max_length", "max_length": 6}, "attrs": {"padding_side": "left"}})
    return ops


def id_operations(vocab_size, n_special):
    """Operations on raw ids: decoding arbitrary id sequences (partial utf-8 bytes -> U+FFFD), id<->token."""
    rng = random.Random(11)
    ops = []
    for n in (1, 2, 3, 5, 8, 20):
        ids = [rng.randrange(vocab_size) for _ in range(n)]
        ops.append({"op": "decode", "ids": ids, "kwargs": {}})
        ops.append({"op": "decode", "ids": ids, "kwargs": {"skip_special_tokens": True}})
        ops.append({"op": "ids_to_tokens", "ids": ids})
    specials = list(range(min(n_special, 6)))
    ops.append({"op": "decode", "ids": specials + [rng.randrange(vocab_size) for _ in range(4)] + specials,
                "kwargs": {"skip_special_tokens": True}})
    ops.append({"op": "decode", "ids": specials + [rng.randrange(vocab_size) for _ in range(4)],
                "kwargs": {"spaces_between_special_tokens": False}})
    ops.append({"op": "batch_decode", "ids": [[rng.randrange(vocab_size) for _ in range(6)] for _ in range(3)],
                "kwargs": {"skip_special_tokens": True}})
    ops.append({"op": "special_mask", "ids": specials + [rng.randrange(vocab_size) for _ in range(5)]})
    return ops


def _plain(value):
    """BatchEncoding / ndarray / tuple -> JSON-able python lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def apply_op(tok, op):
    """Run one recorded operation on a tokenizer (upstream or refimpl: same calling convention)."""
    saved = {k: getattr(tok, k) for k in op.get("attrs", {})}
    for k, v in op.get("attrs", {}).items():
        setattr(tok, k, v)
    try:
        kind, kw = op["op"], op.get("kwargs", {})
        if kind == "call":
            args = (op["text"],) if "text_pair" not in op else (op["text"], op["text_pair"])
            return _plain(dict(tok(*args, **kw)))
        if kind == "tokenize":
            return tok.tokenize(op["text"])
        if kind == "decode_of":
            return tok.decode(tok(op["text"])["input_ids"], **kw)
        if kind == "decode":
            return tok.decode(op["ids"], **kw)
        if kind == "batch_decode":
            return tok.batch_decode(op["ids"], **kw)
        if kind == "ids_to_tokens":
            return tok.convert_ids_to_tokens(op["ids"])
        if kind == "special_mask":
            return tok.get_special_tokens_mask(op["ids"], already_has_special_tokens=True)
        if kind == "pad":
            return _plain(dict(tok.pad([dict(f) for f in op["features"]], **kw)))
        raise ValueError(f"unknown op {kind}")
    finally:
        for k, v in saved.items():
            setattr(tok, k, v)


# --------------------------------------------------------------------------- training
def train_byte_bpe(lines, out_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - 1, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(lines, trainer=trainer)
    tk.model.save(str(out_dir))
    vocab_path = out_dir / "vocab.json"
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    vocab["<mask>"] = len(vocab)  # as roberta-base: <mask> is the last id
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return vocab_path, out_dir / "merges.txt"


def train_wordpiece(lines, out_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, show_progress=False,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    # lower-cased and cased text both, so one vocabulary serves the uncased and cased configurations
    tk.train_from_iterator(lines + [ln.lower() for ln in lines[::2]], trainer=trainer)
    vocab = tk.get_vocab()
    out_path.write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8")
    return out_path


def train_spm(lines, model_type):
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=SPM_VOCAB_SIZE, model_type=model_type,
        character_coverage=0.9995, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
        minloglevel=2,
    )
    return buf.getvalue()


# --------------------------------------------------------------------------- capture
def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _stash(src: Path, dst: Path):
    """Copy a previously trained file (the checked-in one) to dst; True if there was one."""
    if src.is_file() and "--retrain" not in sys.argv:
        dst.write_bytes(src.read_bytes())
        return True
    return False


def build_directories(lines, tmp):
    """Train (or reuse) and save the upstream tokenizer directories under OUT; returns {name: family}.

    tokenizers' WordPieceTrainer is not deterministic (0.15.2: ties between equally frequent pairs are
    broken by ids assigned in Rust HashMap order), so trained files already in golden/tokenizers/ are
    reused unless --retrain is given; the byte-level BPE and sentencepiece trainers are deterministic.
    """
    from transformers import BertTokenizer, GPT2Tokenizer, LEDTokenizer, XGLMTokenizer

    (tmp / "bpe").mkdir(parents=True, exist_ok=True)
    vocab, merges = tmp / "bpe" / "vocab.json", tmp / "bpe" / "merges.txt"
    if not (_stash(OUT / "led" / "vocab.json", vocab) and _stash(OUT / "led" / "merges.txt", merges)):
        vocab, merges = train_byte_bpe(lines, tmp / "bpe")
    wp = tmp / "vocab.txt"
    if not _stash(OUT / "bert-uncased" / "vocab.txt", wp):
        train_wordpiece(lines, wp)
    models = {}
    for kind in ("bpe", "unigram"):
        models[kind] = tmp / f"{kind}.model"
        if not _stash(OUT / f"xglm-{kind}" / "sentencepiece.bpe.model", models[kind]):
            models[kind].write_bytes(train_spm(lines, kind))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    dirs = {}
    GPT2Tokenizer(str(vocab), str(merges), bos_token="</s>", eos_token="</s>", unk_token="</s>",
                  pad_token="<pad>", add_bos_token=True).save_pretrained(str(OUT / "opt"))
    dirs["opt"] = "bpe"
    LEDTokenizer(str(vocab), str(merges)).save_pretrained(str(OUT / "led"))
    dirs["led"] = "bpe"
    for kind in ("bpe", "unigram"):
        XGLMTokenizer(str(models[kind])).save_pretrained(str(OUT / f"xglm-{kind}"))
        dirs[f"xglm-{kind}"] = "spm"
    BertTokenizer(str(wp), do_lower_case=True).save_pretrained(str(OUT / "bert-uncased"))
    dirs["bert-uncased"] = "wordpiece"
    BertTokenizer(str(wp), do_lower_case=False).save_pretrained(str(OUT / "bert-cased"))
    dirs["bert-cased"] = "wordpiece"
    return dirs


def _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def capture_tokenizer(name, family, lines):
    import transformers
    from transformers import AutoTokenizer

    path = str(OUT / name)
    slow = AutoTokenizer.from_pretrained(path, use_fast=False)
    try:
        fast = AutoTokenizer.from_pretrained(path, use_fast=True)
        if not getattr(fast, "is_fast", False):
            fast = None
        fast_error = None
    except Exception as e:  # e.g. the sentencepiece converter needs protobuf
        fast, fast_error = None, f"{type(e).__name__}: {e}"
    ops = operations(lines, family) + id_operations(slow.vocab_size, len(slow.all_special_ids))
    cases, disagreements = [], []
    for i, op in enumerate(ops):
        try:
            expected = {"slow": apply_op(slow, op)}
        except Exception as e:
            expected = {"slow_error": f"{type(e).__name__}: {e}"}
        if fast is not None and not op.get("slow_only"):
            try:
                got = apply_op(fast, op)
            except Exception as e:
                got = {"fast_error": f"{type(e).__name__}: {e}"}
            if "slow" in expected and not _same(got, expected["slow"]):
                expected["fast"] = got
                disagreements.append(i)
        cases.append({**op, **expected})
    return {
        "tokenizer": name,
        "family": family,
        "transformers": transformers.__version__,
        "slow_class": type(slow).__name__,
        "fast_class": type(fast).__name__ if fast is not None else None,
        "fast_error": fast_error,
        "files": {f: _digest(os.path.join(path, f)) for f in sorted(os.listdir(path))},
        "n_cases": len(cases),
        "disagreements": disagreements,
        "cases": cases,
    }


def main():
    import tempfile

    lines = make_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = build_directories(lines, Path(tmp))
    summary = {}
    for name, family in dirs.items():
        data = capture_tokenizer(name, family, lines)
        (OUT / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":"))
                                          + "\n", encoding="utf-8")
        summary[name] = {"cases": data["n_cases"], "fast_disagreements": len(data["disagreements"]),
                         "fast_class": data["fast_class"], "fast_error": data["fast_error"]}
        print(name, summary[name], flush=True)
    (OUT / "SUMMARY.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


def capture(manifest):
    """Entry point of golden/capture.py: writes golden/tokenizers/ (tests read it directly)."""
    main()
    manifest.extend({"family": "tokenizers", "checkpoint": name, "kind": "tokenizer", "cases": []}
                    for name in sorted(p.stem for p in OUT.glob("*.json") if p.stem != "SUMMARY"))


if __name__ == "__main__":
    sys.exit(main())
