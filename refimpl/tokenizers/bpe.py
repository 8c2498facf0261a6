"""Byte-level BPE: GPT-2's scheme as OPT uses it (GPT2Tokenizer) and BART/LED's (BartTokenizer, LEDTokenizer).

Upstream: models/gpt2/tokenization_gpt2.py, models/bart/tokenization_bart.py, models/led/tokenization_led.py
(transformers 4.37.2, slow tokenizers). The pipeline for one piece of text (no added tokens inside):

    text --GPT-2 regex--> pre-tokens --utf-8 bytes, each byte -> one printable char--> "ĠHello"
         --merge the adjacent pair of lowest rank until none is in merges.txt--> ["ĠHel", "lo"] --vocab.json--> ids

Every byte has a symbol, so any string round-trips: decode(encode(s)) == s.
"""
from __future__ import annotations

import codecs
import heapq
import os
from itertools import chain
from typing import Dict, List, Optional, Tuple

import regex

from ..formats import load_json
from .base import AddedToken, Tokenizer, check_option, fairseq_special_tokens

# tokenization_gpt2.py GPT2Tokenizer.__init__: contractions, letters, numbers, other, whitespace runs.
# (Upstream notes it "should have added re.IGNORECASE": "'S" is not a contraction. Kept as is.)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode() -> Dict[int, str]:
    """byte 0..255 -> a printable unicode char (tokenization_gpt2.py bytes_to_unicode).

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD) map to
    U+0100.. in order, so space (0x20) becomes 'Ġ' (U+0120) and newline 'Ċ' (U+010A).
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}
# str.translate table over the latin-1 view of the utf-8 bytes: one C call per pre-token instead of a generator.
_BYTE_TRANSLATE = {b: c for b, c in BYTE_ENCODER.items()}


def byte_encode(text: str) -> str:
    """'Hé' -> 'HÃ©': utf-8 bytes, each shown as its bytes_to_unicode char."""
    return text.encode("utf-8").decode("latin-1").translate(_BYTE_TRANSLATE)


def byte_decode(symbols: str, errors: str = "replace") -> str:
    """Inverse of byte_encode; invalid utf-8 is handled by `errors` (upstream default 'replace' -> U+FFFD)."""
    try:
        data = bytes(BYTE_DECODER[c] for c in symbols)
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not a byte-level BPE symbol; cannot decode it to bytes") from None
    return data.decode("utf-8", errors=errors)


def load_vocab_json(path: str) -> Dict[str, int]:
    """vocab.json -> {token: id}, with clear errors."""
    if not os.path.isfile(path):
        raise ValueError(f"vocabulary file not found: {path} (expected a vocab.json mapping token -> id)")
    vocab = load_json(path, "vocab.json", error=ValueError)  # size bound, nesting depth, UTF-8
    if not isinstance(vocab, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
        raise ValueError(f"{path} must be a JSON object mapping token strings to integer ids")
    for token, index in vocab.items():
        if not -2 ** 63 <= index < 2 ** 63:  # NumPy's int64 ids (upstream: an OverflowError when encoding)
            raise ValueError(f"{path}: token {token!r:.80} has id {index}, beyond the 64-bit integers token ids are "
                             "held in")
    return vocab


def load_merges(path: str) -> Dict[Tuple[str, ...], int]:
    """merges.txt -> {(left, right): rank}.

    Quirk kept from GPT2Tokenizer.__init__: `read().split("\\n")[1:-1]` drops the first line (the
    "#version" header, dropped even when absent) and the last one (empty after the final newline);
    a repeated pair keeps its last rank.
    """
    if not os.path.isfile(path):
        raise ValueError(f"merges file not found: {path} (expected merges.txt, one 'left right' pair per line)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8: {e}") from None
    return {tuple(line.split()): rank for rank, line in enumerate(lines)}


def bpe_merge(word: str, ranks: Dict[Tuple[str, ...], int]) -> List[str]:
    """'ĠHello' -> ['ĠHel', 'lo']: repeatedly merge every occurrence (left to right) of the lowest-rank pair.

    Same result as GPT2Tokenizer.bpe, which takes min() over the set of adjacent pairs and then merges
    all non-overlapping occurrences of that pair scanning left to right, in O(n log n) instead of
    upstream's O(n * merges) (a pre-token of 10^6 spaces: 10^6 symbols):
    - the symbols form a linked list (`nxt`, `prv` over their first character's index), so a merge is O(1);
    - every adjacent pair with a rank sits in a heap, keyed rank * n + (its left symbol's start): popping
      gives the lowest rank, and equal ranks come out left to right, as upstream merges them;
    - a popped entry is used only if the pair now starting there still has that rank (ranks are unique
      per pair, so it is still an occurrence of that pair); otherwise it is stale and dropped;
    - pairs created while merging rank r wait until every occurrence of r is merged, because upstream
      merges all occurrences of the best pair before looking for the next one. A merge can never create
      another occurrence of the pair being merged (the new symbol is longer than either part).
    (tests/test_tokenizers.py checks this against upstream's loop on random merge tables.)
    """
    n = len(word)
    if n < 2:
        return [word] if word else []
    get = ranks.get
    nxt = list(range(1, n + 1))  # nxt[i]: start of the symbol after the one starting at i (n: none)
    prv = list(range(-1, n - 1))  # prv[i]: start of the symbol before (-1: none)
    text = list(word)  # text[i]: the symbol starting at i (meaningful while i starts a symbol)
    heap = [r * n + i for i, pair in enumerate(zip(word, word[1:])) if (r := get(pair)) is not None]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, created = heap[0] // n, []
        bound = (rank + 1) * n  # keys below it have this rank
        while heap and heap[0] < bound:
            i = pop(heap) - rank * n
            j = nxt[i]
            if prv[i] == -2 or j >= n or get((text[i], text[j])) != rank:
                continue  # stale: i starts no symbol any more, or its pair changed
            end = nxt[j]
            text[i] += text[j]  # merge symbol j into symbol i: [.., i, j, end..] -> [.., i, end..]
            nxt[i], prv[j] = end, -2  # -2: j starts no symbol any more
            if end < n:
                prv[end] = i
                created.append(i)
            if prv[i] >= 0:
                created.append(prv[i])
        for a in created:  # pairs made by this round's merges, ranked as they stand now
            if prv[a] != -2 and nxt[a] < n and (r := get((text[a], text[nxt[a]]))) is not None:
                push(heap, r * n + a)
    out, i = [], 0
    while i < n:
        out.append(text[i])
        i = nxt[i]
    return out


def _pop_special(kwargs: dict) -> dict:
    from .base import SPECIAL_TOKENS_ATTRIBUTES

    return {k: kwargs.pop(k) for k in list(kwargs) if k in SPECIAL_TOKENS_ATTRIBUTES}


class ByteLevelBPETokenizer(Tokenizer):
    """Shared machinery of GPT2Tokenizer and BartTokenizer (identical in upstream apart from templates)."""

    _CACHE_LIMIT = 200_000  # pre-token -> ids cache entries (upstream's cache is unbounded)

    text_must_encode = True

    def __init__(self, vocab_file: str, merges_file: str, errors: str = "replace", add_prefix_space: bool = False,
                 special_tokens: Optional[dict] = None, **kwargs):
        check_option("errors", errors)
        try:
            codecs.lookup_error(errors)
        except LookupError:
            raise ValueError(f"tokenizer option errors = {errors!r}: not a codec error handler "
                             "(expected e.g. \"replace\", \"strict\", \"ignore\")") from None
        check_option("add_prefix_space", add_prefix_space)
        self.encoder = load_vocab_json(vocab_file)
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = load_merges(merges_file)
        self.errors = errors
        self.add_prefix_space = bool(add_prefix_space)
        self.vocab_file, self.merges_file = vocab_file, merges_file
        self._pattern = regex.compile(GPT2_PATTERN)
        self._cache: Dict[str, Tuple[int, ...]] = {}
        special = dict(special_tokens or {})
        special.update(_pop_special(kwargs))
        self._init_base(special_tokens=special, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> Dict[str, int]:
        return dict(self.encoder, **self.added_tokens_encoder)

    def _token_to_id(self, token: str) -> Optional[int]:
        # upstream: unknown -> the unk token's id (None when even that is missing from vocab.json)
        idx = self.encoder.get(token)
        return idx if idx is not None else self.encoder.get(self.unk_token)

    def _id_to_token(self, index: int) -> str:
        tok = self.decoder.get(index)
        if tok is None:
            raise ValueError(f"token id {index} is not in the vocabulary (size {self.vocab_size}) nor an added token")
        return tok

    def bpe(self, pre_token: str) -> List[str]:
        """One byte-encoded pre-token -> its BPE symbols."""
        return bpe_merge(pre_token, self.bpe_ranks)

    def _tokenize(self, text: str) -> List[str]:
        """text (no added tokens) -> BPE token strings (GPT2Tokenizer._tokenize)."""
        out: List[str] = []
        for pre in self._pattern.findall(text):
            out.extend(self.bpe(byte_encode(pre)))
        return out

    def _tokenize_ids(self, text: str) -> List[int]:
        """text (no added tokens) -> ids, memoised per pre-token (the hot loop)."""
        cache = self._cache
        pres = self._pattern.findall(text)
        hits = list(map(cache.get, pres))
        if None in hits:
            # convert_tokens_to_ids, flattened: added tokens first, then vocab.json, else the unk id
            index, unk = self._memo("token_index", lambda: (
                {**self.encoder, **self.added_tokens_encoder}, self.encoder.get(self.unk_token)))
            ranks = self.bpe_ranks
            for k, pre in enumerate(pres):
                if hits[k] is None:
                    hits[k] = cache[pre] = tuple([index.get(t, unk) for t in bpe_merge(byte_encode(pre), ranks)])
            if len(cache) >= self._CACHE_LIMIT:
                cache.clear()
        return list(chain.from_iterable(hits))

    def tokens_to_string(self, tokens: List[str]) -> str:
        return byte_decode("".join(tokens), self.errors)


class GPT2Tokenizer(ByteLevelBPETokenizer):
    """GPT-2 rules; OPT checkpoints use them with add_bos_token=True and bos=eos=unk='</s>', pad='<pad>'.

    OPT: `</s>` (id 2) is prepended as BOS, no EOS is appended; pairs are `</s> A </s> B`.
    """

    default_special_tokens = {
        "unk_token": AddedToken("<|endoftext|>"),
        "bos_token": AddedToken("<|endoftext|>"),
        "eos_token": AddedToken("<|endoftext|>"),
    }

    def __init__(self, vocab_file: str, merges_file: str, errors: str = "replace", add_prefix_space: bool = False,
                 add_bos_token: bool = False, **kwargs):
        self.add_bos_token = check_option("add_bos_token", add_bos_token)
        super().__init__(vocab_file, merges_file, errors=errors, add_prefix_space=add_prefix_space, **kwargs)

    def prepare_for_tokenization(self, text, is_split_into_words=False, **kwargs):
        # tokenization_gpt2.py: the space is added unconditionally (even to "" or " x"), unlike BART.
        add_prefix_space = kwargs.pop("add_prefix_space", self.add_prefix_space)
        if is_split_into_words or add_prefix_space:
            text = " " + text
        return text, kwargs

    def build_inputs_with_special_tokens(self, ids0, ids1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        out = bos + ids0
        return out if ids1 is None else out + bos + ids1

    def _template_special_mask(self, ids0, ids1):
        if not self.add_bos_token:
            return super()._template_special_mask(ids0, ids1)
        if ids1 is None:
            return [1] + [0] * len(ids0)
        return [1] + [0] * len(ids0) + [1] + [0] * len(ids1)

    # Quirk: GPT2Tokenizer does not override create_token_type_ids_from_sequences, so with add_bos_token
    # the token_type_ids (only returned when asked) are shorter than input_ids by the BOS tokens.


class BartTokenizer(ByteLevelBPETokenizer):
    """BART/LED rules: `<s> A </s>`, pairs `<s> A </s></s> B </s>`; `<mask>` eats the space on its left."""

    default_special_tokens = {
        **fairseq_special_tokens(),
        # tokenization_bart.py: "Mask token behave like a normal word, i.e. include the space before it"
        "mask_token": AddedToken("<mask>", lstrip=True),
    }

    def prepare_for_tokenization(self, text, is_split_into_words=False, **kwargs):
        # tokenization_bart.py: only when the text is non-empty and does not start with whitespace.
        add_prefix_space = kwargs.pop("add_prefix_space", self.add_prefix_space)
        if (is_split_into_words or add_prefix_space) and (len(text) > 0 and not text[0].isspace()):
            text = " " + text
        return text, kwargs

    def build_inputs_with_special_tokens(self, ids0, ids1=None):
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if ids1 is None:
            return cls + ids0 + sep
        return cls + ids0 + sep + sep + ids1 + sep

    def create_token_type_ids_from_sequences(self, ids0, ids1=None):
        return [0] * len(self.build_inputs_with_special_tokens(ids0, ids1))

    def _template_special_mask(self, ids0, ids1):
        if ids1 is None:
            return [1] + [0] * len(ids0) + [1]
        return [1] + [0] * len(ids0) + [1, 1] + [0] * len(ids1) + [1]


class LEDTokenizer(BartTokenizer):
    """BART rules plus LED's padding of `global_attention_mask` with -1 (tokenization_led.py LEDTokenizer._pad).

    -1 because 0 in global_attention_mask means "local attention", not "do not attend".
    """

    def _pad_extra(self, enc: dict, return_attention_mask: bool) -> None:
        if not (return_attention_mask and "global_attention_mask" in enc):
            return
        diff = len(enc["input_ids"]) - len(enc["global_attention_mask"])
        if diff:
            enc["global_attention_mask"] = self._pad_list(list(enc["global_attention_mask"]), diff, -1)
