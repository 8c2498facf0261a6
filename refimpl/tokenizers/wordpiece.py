"""BERT's tokenizer as NEZHA uses it: basic tokenizer + greedy longest-match WordPiece.

Upstream: models/bert/tokenization_bert.py (BertTokenizer, BasicTokenizer, WordpieceTokenizer) and the
character classes of tokenization_utils.py (_is_control, _is_whitespace, _is_punctuation), 4.37.2 slow.

    text -> drop control chars, whitespace -> ' ' -> spaces around CJK ideographs -> NFC -> split on
    whitespace -> per word: lower-case + strip accents (NFD, drop Mn) -> split off each punctuation char
    -> per piece: greedy longest-match against vocab.txt, continuations prefixed '##'; a word that cannot
    be covered, or is longer than max_input_chars_per_word, becomes [UNK].

Upstream walks every character of every text in Python; here the same per-character tests
(`_is_control`, `_is_whitespace`, `_is_punctuation`, written as upstream's) are memoised per distinct
character, so a text costs one `set()` and one `str.translate`.
"""
from __future__ import annotations

import collections
import os
from itertools import chain
import re
import unicodedata
from typing import Dict, Iterable, List, Optional

from .base import AddedToken, Tokenizer, check_option
from .bpe import _pop_special

# BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks (not Hangul, not kana).
_CJK_RE = re.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])"
)


def _is_whitespace(ch: str) -> bool:
    """tokenization_utils._is_whitespace: space, \\t, \\n, \\r and category Zs."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    """tokenization_utils._is_control: categories C* except \\t, \\n, \\r."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    """tokenization_utils._is_punctuation: ASCII non-alphanumeric printables, and categories P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _clean_action(ch: str) -> Optional[str]:
    """BasicTokenizer._clean_text for one char: '' (drop), ' ' (whitespace) or None (keep)."""
    if ch in "\x00\ufffd" or _is_control(ch):
        return ""
    if _is_whitespace(ch):
        return " "
    return None


# Memo of the per-character tests over the characters seen so far: the chars already classified, the
# str.translate table of those _clean_text changes, and those that are punctuation.
_CLEAN_TABLE: Dict[int, str] = {}
_PUNCT_CHARS: set = set()
_SEEN: set = set()


def _classify(chars) -> None:
    """Add unseen characters to the memo tables."""
    for ch in chars:
        action = _clean_action(ch)
        if action is not None:
            _CLEAN_TABLE[ord(ch)] = action
        if _is_punctuation(ch):
            _PUNCT_CHARS.add(ch)
        _SEEN.add(ch)


_classify(chr(cp) for cp in range(128))


def load_vocab_txt(path: str) -> Dict[str, int]:
    """vocab.txt -> {token: line index} (tokenization_bert.py load_vocab: a repeated token keeps its last line)."""
    if not os.path.isfile(path):
        raise ValueError(f"vocabulary file not found: {path} (expected vocab.txt, one token per line)")
    try:
        with open(path, "r", encoding="utf-8") as reader:
            lines = reader.readlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8: {e}") from None
    vocab = collections.OrderedDict()
    for index, token in enumerate(lines):
        vocab[token.rstrip("\n")] = index
    if not vocab:
        raise ValueError(f"{path} is empty; expected one WordPiece token per line")
    return vocab


def clean_text(text: str) -> str:
    """BasicTokenizer._clean_text: drop NUL, U+FFFD and control chars; whitespace -> ' '."""
    if not text.isascii():
        new = set(text) - _SEEN
        if new:
            _classify(new)
    return text.translate(_CLEAN_TABLE)


def tokenize_chinese_chars(text: str) -> str:
    """BasicTokenizer._tokenize_chinese_chars: ' 中 ' around every CJK ideograph."""
    return _CJK_RE.sub(r" \1 ", text)


def strip_accents(text: str) -> str:
    """BasicTokenizer._run_strip_accents: NFD, then drop nonspacing marks (Mn)."""
    text = unicodedata.normalize("NFD", text)
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def split_on_punctuation(text: str) -> List[str]:
    """BasicTokenizer._run_split_on_punc: 'a,b!' -> ['a', ',', 'b', '!']."""
    chars = set(text)
    new = chars - _SEEN
    if new:
        _classify(new)
    if chars.isdisjoint(_PUNCT_CHARS):
        return [text] if text else []
    out: List[str] = []
    start_new_word = True
    for ch in text:
        if ch in _PUNCT_CHARS:
            out.append(ch)
            start_new_word = True
        else:
            if start_new_word:
                out.append("")
            start_new_word = False
            out[-1] += ch
    return out


def wordpiece(word: str, vocab: Dict[str, int], unk_token: str, max_input_chars_per_word: int = 100) -> List[str]:
    """'unaffable' -> ['un', '##aff', '##able'] (WordpieceTokenizer.tokenize for one word; the reference)."""
    if len(word) > max_input_chars_per_word:
        return [unk_token]
    out, start, n = [], 0, len(word)
    while start < n:
        end = n
        piece = None
        while start < end:  # longest match first
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                piece = sub
                break
            end -= 1
        if piece is None:
            return [unk_token]  # one uncoverable piece makes the whole word [UNK]
        out.append(piece)
        start = end
    return out


class PrefixIndex:
    """Vocabulary prefixes so the longest match is found scanning forward (same result as `wordpiece`).

    Every prefix of a vocabulary entry is in `first_prefixes` (pieces at the start of a word) or, for
    '##' entries without their '##', in `cont_prefixes`; scanning stops at the first substring that
    begins no entry, so a piece costs its own length instead of the word's.
    """

    def __init__(self, vocab: Dict[str, int]):
        self.first = set(vocab)
        self.cont = {t[2:] for t in vocab if t.startswith("##")}
        self.first_prefixes = {t[:k] for t in self.first for k in range(1, len(t) + 1)}
        self.cont_prefixes = {t[:k] for t in self.cont for k in range(1, len(t) + 1)}

    def tokenize(self, word: str, unk_token: str, max_input_chars_per_word: int = 100) -> List[str]:
        """One word -> WordPiece strings; equal to wordpiece(word, vocab, ...)."""
        n = len(word)
        if n > max_input_chars_per_word:
            return [unk_token]
        if word in self.first:  # the whole word is the longest possible first piece
            return [word]
        out, start = [], 0
        while start < n:
            prefixes, full = (self.first_prefixes, self.first) if start == 0 else (self.cont_prefixes, self.cont)
            if start and word[start:] in full:  # the rest is the longest possible continuation
                out.append("##" + word[start:])
                break
            best, end = 0, start + 1
            while end <= n:
                sub = word[start:end]
                if sub not in prefixes:
                    break
                if sub in full:
                    best = end
                end += 1
            if not best:
                return [unk_token]
            out.append(word[start:best] if start == 0 else "##" + word[start:best])
            start = best
        return out


class BasicTokenizer:
    """Upstream BasicTokenizer (same constructor arguments) with a per-word cache."""

    def __init__(self, do_lower_case: bool = True, never_split: Optional[Iterable[str]] = None,
                 tokenize_chinese_chars: bool = True, strip_accents: Optional[bool] = None,
                 do_split_on_punc: bool = True):
        self.do_lower_case = do_lower_case
        self.never_split = set(never_split or [])
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self.do_split_on_punc = do_split_on_punc

    def words(self, text: str) -> List[str]:
        """text -> whitespace words after cleaning, CJK spacing and NFC (before per-word rules)."""
        text = clean_text(text)
        if self.tokenize_chinese_chars:
            text = tokenize_chinese_chars(text)
        # "prevents treating the same character with different unicode codepoints as different characters"
        return unicodedata.normalize("NFC", text).split()

    def word_pieces(self, token: str, never_split) -> List[str]:
        """One whitespace word -> lower-cased / accent-stripped / punctuation-split pieces."""
        if token in never_split:
            return [token]
        if self.do_lower_case:
            token = token.lower()
            if self.strip_accents is not False:
                token = strip_accents(token)
        elif self.strip_accents:
            token = strip_accents(token)
        if not self.do_split_on_punc:
            return [token]
        return split_on_punctuation(token)

    def tokenize(self, text: str, never_split: Optional[Iterable[str]] = None) -> List[str]:
        """text -> basic tokens."""
        ns = self.never_split.union(never_split) if never_split else self.never_split
        pieces: List[str] = []
        for token in self.words(text):
            pieces.extend(self.word_pieces(token, ns))
        # upstream re-splits " ".join(pieces) on whitespace (lower-casing can create some)
        return " ".join(pieces).split()


class BertTokenizer(Tokenizer):
    """BertTokenizer: `[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]` with token_type_ids 0.../1..."""

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    default_special_tokens = {
        "unk_token": AddedToken("[UNK]"),
        "sep_token": AddedToken("[SEP]"),
        "pad_token": AddedToken("[PAD]"),
        "cls_token": AddedToken("[CLS]"),
        "mask_token": AddedToken("[MASK]"),
    }
    _CACHE_LIMIT = 200_000

    def __init__(self, vocab_file: str, do_lower_case: bool = True, do_basic_tokenize: bool = True,
                 never_split: Optional[Iterable[str]] = None, tokenize_chinese_chars: bool = True,
                 strip_accents: Optional[bool] = None, max_input_chars_per_word: int = 100,
                 special_tokens: Optional[dict] = None, **kwargs):
        for name, value in (("do_lower_case", do_lower_case), ("do_basic_tokenize", do_basic_tokenize),
                            ("never_split", never_split), ("tokenize_chinese_chars", tokenize_chinese_chars),
                            ("strip_accents", strip_accents)):
            check_option(name, value)
        check_option("max_input_chars_per_word", max_input_chars_per_word, int, "an integer >= 0")
        self.vocab_file = vocab_file
        self.vocab = load_vocab_txt(vocab_file)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.do_basic_tokenize = do_basic_tokenize
        self.basic_tokenizer = BasicTokenizer(do_lower_case, never_split, tokenize_chinese_chars, strip_accents)
        self.max_input_chars_per_word = max_input_chars_per_word
        self._prefix_index = PrefixIndex(self.vocab)
        self._cache: Dict[str, tuple] = {}
        special = dict(special_tokens or {})
        special.update(_pop_special(kwargs))
        self._init_base(special_tokens=special, **kwargs)
        # the unk string WordPiece emits is fixed at construction, as in upstream (str(unk_token))
        self._wp_unk = self.unk_token

    @property
    def do_lower_case(self) -> bool:
        # read by Tokenizer._split_text: upstream's tokenize() lower-cases outside special tokens when this is set.
        # Quirk: without the basic tokenizer upstream has no `basic_tokenizer` attribute, so its
        # hasattr(self, "do_lower_case") is False and nothing is lower-cased (do_lower_case is ignored).
        return self.do_basic_tokenize and self.basic_tokenizer.do_lower_case

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> Dict[str, int]:
        return dict(self.vocab, **getattr(self, "added_tokens_encoder", {}))

    def _token_to_id(self, token: str) -> Optional[int]:
        return self.vocab.get(token, self.vocab.get(self.unk_token))

    def _id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(index, self.unk_token)

    def _wordpiece(self, word: str) -> List[str]:
        return self._prefix_index.tokenize(word, self._wp_unk, self.max_input_chars_per_word)

    def _tokenize(self, text: str) -> List[str]:
        """text (no added tokens) -> WordPiece strings (BertTokenizer._tokenize)."""
        if not self.do_basic_tokenize:
            return [p for w in text.split() for p in self._wordpiece(w)]
        out: List[str] = []
        never = self.basic_tokenizer.never_split
        for token in self.basic_tokenizer.tokenize(text, never_split=self.all_special_tokens):
            out.extend([token] if token in never else self._wordpiece(token))
        return out

    def _tokenize_ids(self, text: str) -> List[int]:
        """text (no added tokens) -> ids, memoised per whitespace word (the hot loop)."""
        if not self.do_basic_tokenize:
            return [self._convert_one_token(t) for t in self._tokenize(text)]
        basic = self.basic_tokenizer
        never = basic.never_split
        never_all = self._memo("never_split_all", lambda: never.union(self.all_special_tokens))
        cache = self._cache
        words = basic.words(text)
        hits = list(map(cache.get, words))
        if None in hits:
            for k, word in enumerate(words):
                if hits[k] is not None:
                    continue
                toks: List[str] = []
                # " ".join(...).split() as in BasicTokenizer.tokenize, but per word (pieces hold no
                # whitespace across words, so splitting per word gives the same list)
                for piece in " ".join(basic.word_pieces(word, never_all)).split():
                    toks.extend([piece] if piece in never else self._wordpiece(piece))
                # convert_tokens_to_ids, flattened: added tokens first, then vocab.txt, else the unk id
                index, unk = self._memo("token_index", lambda: (
                    {**self.vocab, **self.added_tokens_encoder}, self.vocab.get(self.unk_token)))
                hits[k] = tuple([index.get(t, unk) for t in toks])
                if len(cache) >= self._CACHE_LIMIT:
                    cache.clear()
                cache[word] = hits[k]
        return list(chain.from_iterable(hits))

    def tokens_to_string(self, tokens: List[str]) -> str:
        return " ".join(tokens).replace(" ##", "").strip()

    def build_inputs_with_special_tokens(self, ids0, ids1=None):
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if ids1 is None:
            return cls + ids0 + sep
        return cls + ids0 + sep + ids1 + sep

    def create_token_type_ids_from_sequences(self, ids0, ids1=None):
        if ids1 is None:
            return [0] * (len(ids0) + 2)
        return [0] * (len(ids0) + 2) + [1] * (len(ids1) + 1)

    def _template_special_mask(self, ids0, ids1):
        if ids1 is None:
            return [1] + [0] * len(ids0) + [1]
        return [1] + [0] * len(ids0) + [1] + [0] * len(ids1) + [1]
