"""BERT's tokenizer as NEZHA uses it: basic tokenizer + greedy longest-match WordPiece.

Upstream: models/bert/tokenization_bert.py (BertTokenizer, BasicTokenizer, WordpieceTokenizer) and the
character classes of tokenization_utils.py (_is_control, _is_whitespace, _is_punctuation), 4.37.2 slow.

    text -> drop control chars, whitespace -> ' ' -> spaces around CJK ideographs -> NFC -> split on
    whitespace -> per word: lower-case + strip accents (NFD, drop Mn) -> split off each punctuation char
    -> per piece: greedy longest-match against vocab.txt, continuations prefixed '##'; a word that cannot
    be covered, or is longer than max_input_chars_per_word, becomes [UNK].

Upstream walks every character in Python; here the same per-character tests are precomputed once
from `unicodedata` (so the Unicode version is Python's, as upstream's) into regex classes.
"""
from __future__ import annotations

import collections
import os
import re
import unicodedata
from typing import Dict, Iterable, List, Optional

from .base import AddedToken, Tokenizer, unicode_classes
from .bpe import _pop_special

# BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks (not Hangul, not kana).
CJK_CLASS = (
    "[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f]"
)


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


class _Classes:
    """Compiled regexes for the basic tokenizer, built once per process."""

    def __init__(self):
        c = unicode_classes()
        # _clean_text: NUL, U+FFFD and control chars vanish; \t \n \r and Zs become ' '.
        self.remove = re.compile(c["control"][:-1] + "\x00\ufffd]")
        self.whitespace = re.compile(c["whitespace"])
        self.cjk = re.compile(CJK_CLASS)
        self.mn = re.compile(c["mn"])
        punct_inner = c["punctuation"][1:-1]
        # _run_split_on_punc: every punctuation char alone, runs of anything else together
        self.punct_split = re.compile(f"[{punct_inner}]|[^{punct_inner}]+", re.DOTALL)


_CLASSES: Optional[_Classes] = None


def _classes() -> _Classes:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _Classes()
    return _CLASSES


def clean_text(text: str) -> str:
    """BasicTokenizer._clean_text."""
    c = _classes()
    return c.whitespace.sub(" ", c.remove.sub("", text))


def tokenize_chinese_chars(text: str) -> str:
    """BasicTokenizer._tokenize_chinese_chars: ' 中 ' around every CJK ideograph."""
    return _classes().cjk.sub(lambda m: " " + m.group(0) + " ", text)


def strip_accents(text: str) -> str:
    """BasicTokenizer._run_strip_accents: NFD, then drop nonspacing marks (Mn)."""
    return _classes().mn.sub("", unicodedata.normalize("NFD", text))


def split_on_punctuation(text: str) -> List[str]:
    """BasicTokenizer._run_split_on_punc: 'a,b!' -> ['a', ',', 'b', '!']."""
    return _classes().punct_split.findall(text)


def wordpiece(word: str, vocab: Dict[str, int], unk_token: str, max_input_chars_per_word: int = 100) -> List[str]:
    """'unaffable' -> ['un', '##aff', '##able'] (WordpieceTokenizer.tokenize for one word)."""
    if len(word) > max_input_chars_per_word:
        return [unk_token]
    out, start, n = [], 0, len(word)
    while start < n:
        end = n
        piece = None
        while start < end:
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
        self.vocab_file = vocab_file
        self.vocab = load_vocab_txt(vocab_file)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.do_basic_tokenize = do_basic_tokenize
        self.basic_tokenizer = BasicTokenizer(do_lower_case, never_split, tokenize_chinese_chars, strip_accents)
        self.max_input_chars_per_word = max_input_chars_per_word
        self._cache: Dict[str, tuple] = {}
        special = dict(special_tokens or {})
        special.update(_pop_special(kwargs))
        self._init_base(special_tokens=special, **kwargs)
        # the unk string WordPiece emits is fixed at construction, as in upstream (str(unk_token))
        self._wp_unk = self.unk_token

    @property
    def do_lower_case(self) -> bool:
        # read by Tokenizer._split_text: upstream's tokenize() lower-cases outside special tokens when this is set
        return self.basic_tokenizer.do_lower_case

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
        return wordpiece(word, self.vocab, self._wp_unk, self.max_input_chars_per_word)

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
        never_all = never.union(self.all_special_tokens)
        cache = self._cache
        ids: List[int] = []
        for word in basic.words(text):
            hit = cache.get(word)
            if hit is None:
                toks: List[str] = []
                # " ".join(...).split() as in BasicTokenizer.tokenize, but per word (pieces hold no
                # whitespace across words, so splitting per word gives the same list)
                for piece in " ".join(basic.word_pieces(word, never_all)).split():
                    toks.extend([piece] if piece in never else self._wordpiece(piece))
                hit = tuple(self._convert_one_token(t) for t in toks)
                if len(cache) >= self._CACHE_LIMIT:
                    cache.clear()
                cache[word] = hit
            ids.extend(hit)
        return ids

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
