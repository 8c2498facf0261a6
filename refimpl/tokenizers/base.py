"""Shared calling convention of every refimpl tokenizer (upstream: tokenization_utils_base.py and
tokenization_utils.py of transformers 4.37.2, the *slow* Python tokenizers).

A concrete tokenizer (bpe.py, spm.py, wordpiece.py) supplies only the model-specific pieces:

    _tokenize_ids(text)          one piece of text without added tokens -> [ids]
    _tokenize(text)              same -> [token strings]
    _token_to_id / _id_to_token  vocabulary look-ups
    tokens_to_string(tokens)     the inverse of _tokenize (upstream convert_tokens_to_string)
    build_inputs_with_special_tokens / create_token_type_ids_from_sequences / get_special_tokens_mask
    prepare_for_tokenization     e.g. add_prefix_space

Everything else (splitting on added tokens, the lstrip/rstrip rules, truncation, padding, masks,
batching, decoding with clean-up) lives here, once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

# tokenization_utils_base.py: "infinite" model_max_length and the threshold above which it counts as unset.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

SPECIAL_TOKENS_ATTRIBUTES = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("only_first", "only_second", "longest_first", "do_not_truncate")
# Keys that are one integer per token, and what a padded position gets (upstream _pad).
@dataclass(frozen=True)
class AddedToken:
    """A token matched verbatim in text before the model tokenizer runs (upstream tokenizers.AddedToken)."""

    content: str
    lstrip: bool = False  # eat the whitespace on its left (BART's <mask>)
    rstrip: bool = False  # eat the whitespace on its right
    single_word: bool = False
    normalized: bool = True
    special: bool = False

    def __str__(self):
        return self.content


def as_added_token(value, **defaults) -> Optional[AddedToken]:
    """str | dict (as in tokenizer_config.json) | AddedToken | None -> AddedToken | None."""
    if value is None or isinstance(value, AddedToken):
        return value
    if isinstance(value, str):
        return AddedToken(value, **defaults)
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        keys = ("lstrip", "rstrip", "single_word", "normalized", "special")
        flags = dict(defaults)
        for k in keys:
            if k in value:
                check_option(f"{value['content']!r}.{k}", value[k], bool)
                flags[k] = value[k]
        return AddedToken(value["content"], **flags)
    raise ValueError(f"special token must be a string or a dict with a string 'content', got {value!r:.200}")


# tokenizer_config.json options -> (expected type(s), what to say); checked where each is taken
OPTION_TYPES = {
    "model_max_length": ((int, type(None)), "an integer >= 0 (or null)"),
    "clean_up_tokenization_spaces": (bool, "true or false"), "split_special_tokens": (bool, "true or false"),
    "add_prefix_space": (bool, "true or false"), "add_bos_token": (bool, "true or false"),
    "do_lower_case": (bool, "true or false"), "do_basic_tokenize": (bool, "true or false"),
    "tokenize_chinese_chars": (bool, "true or false"), "strip_accents": ((bool, type(None)), "true, false or null"),
    "errors": (str, "a codec error handler name such as \"replace\""),
    "padding_side": ((str, type(None)), "\"left\" or \"right\""),
    "truncation_side": ((str, type(None)), "\"left\" or \"right\""),
    "model_input_names": ((list, tuple, type(None)), "a list of input names"),
    "never_split": ((list, tuple, set, type(None)), "a list of strings"),
}


def check_tokenizer_config(config: dict, file) -> None:
    """The structure of tokenizer_config.json, checked before any of it is used: each option's type
    (OPTION_TYPES), special tokens as a string, {"content": ...} or null, the class name a string, added
    tokens {"<id>": {"content": ...}}. A ValueError names the file and the field."""
    def expect(ok, field, expected):
        if not ok:
            raise ValueError(f"{file}: field {field!r} = {config[field]!r:.120}: expected {expected}")

    if not isinstance(config, dict):
        raise ValueError(f"{file} must hold a JSON object, found {type(config).__name__}")
    for name, value in config.items():
        if name in OPTION_TYPES:
            try:
                check_option(name, value)
            except ValueError as err:
                raise ValueError(f"{file}: {err}") from None
        elif name in SPECIAL_TOKENS_ATTRIBUTES:
            expect(value is None or isinstance(value, str) or (isinstance(value, dict) and "content" in value),
                   name, 'a string, {"content": ...} or null')
    if "tokenizer_class" in config:
        expect(config["tokenizer_class"] is None or isinstance(config["tokenizer_class"], str), "tokenizer_class",
               "a class name")
    if "additional_special_tokens" in config:
        expect(config["additional_special_tokens"] is None or isinstance(config["additional_special_tokens"], list),
               "additional_special_tokens", "a list of tokens")
    if "added_tokens_decoder" in config:
        decoder = config["added_tokens_decoder"]
        expect(isinstance(decoder, dict) and all(isinstance(k, str) and k.isdigit() and len(k) < 19
                                                 and isinstance(v, dict) for k, v in decoder.items()),
               "added_tokens_decoder", '{"<token id>": {"content": ...}, ...}')


def check_option(name: str, value, types=None, expected: str = ""):
    """A tokenizer option (usually from tokenizer_config.json) of the wrong type -> ValueError naming it."""
    if types is None:
        types, expected = OPTION_TYPES[name]
    bad_bool = isinstance(value, bool) and types in (int, (int, type(None)))  # true is not a length
    if not isinstance(value, types) or bad_bool or (isinstance(value, int) and not isinstance(value, bool)
                                                     and value < 0):
        raise ValueError(f"tokenizer option {name} = {value!r:.120} (tokenizer_config.json or an argument): "
                         f"expected {expected or 'true or false'}")
    if isinstance(value, (list, tuple, set)) and not all(isinstance(v, str) for v in value):
        raise ValueError(f"tokenizer option {name} = {value!r:.120}: expected a list of strings")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_encodable(text: str) -> None:
    """Text a UTF-8 based tokenizer can take: a lone surrogate (e.g. from a bad decode with
    errors="surrogateescape") has no UTF-8 form; upstream fails inside encode() (UnicodeEncodeError for
    GPT-2/BART, a pybind11 cast error for sentencepiece), refimpl says which character and where."""
    bad = _SURROGATE.search(text)
    if bad:
        raise ValueError(f"text holds a lone surrogate U+{ord(bad.group()):04X} at position {bad.start()}: it is not "
                         "valid Unicode and has no UTF-8 encoding (decode the input with errors='replace')")


class BatchEncoding(dict):
    """A dict of model inputs (upstream BatchEncoding without the fast-tokenizer offsets): keys are also attributes."""

    def __getattr__(self, item):
        try:
            return self[item]
        except KeyError as e:
            raise AttributeError(item) from e


def clean_up_tokenization(text: str) -> str:
    """Upstream PreTrainedTokenizerBase.clean_up_tokenization: English detokenisation of spaces."""
    return (
        text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
        .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s")
        .replace(" 've", "'ve").replace(" 're", "'re")
    )


def _to_int_list(ids) -> List[int]:
    """int | list | ndarray of ids -> flat python list of int (upstream to_py_obj)."""
    if isinstance(ids, np.ndarray):
        if ids.ndim > 1:
            raise ValueError(f"expected a 1-D sequence of token ids, got an array of shape {ids.shape}")
        return [int(i) for i in ids.tolist()]
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if hasattr(ids, "tolist") and not isinstance(ids, (list, tuple)):  # e.g. torch tensors given by a user
        return _to_int_list(np.asarray(ids.tolist()))
    out = []
    for i in ids:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise ValueError(f"token ids must be integers, got {i!r} ({type(i).__name__})")
        out.append(int(i))
    return out


def fairseq_special_tokens() -> dict:
    """The special tokens of fairseq-born vocabularies (BART/LED, XGLM): <s>, </s>, <unk>, <pad>."""
    return {"bos_token": AddedToken("<s>"), "eos_token": AddedToken("</s>"), "sep_token": AddedToken("</s>"),
            "cls_token": AddedToken("<s>"), "unk_token": AddedToken("<unk>"), "pad_token": AddedToken("<pad>")}


def _strategy(value, when_true, when_false, allowed, name):  # True / False / None / a named strategy -> its name
    if value is True:
        return when_true
    if value is False or value is None:
        return when_false
    if value in allowed:
        return value
    raise ValueError(f"{name} must be True, False or one of {allowed}, got {value!r}")


class Tokenizer:
    """Base class: added/special tokens, __call__ with padding and truncation, decode."""

    model_input_names = ["input_ids", "attention_mask"]
    text_must_encode = False  # byte-level BPE and sentencepiece work on UTF-8 bytes: no lone surrogates
    padding_side = "right"
    truncation_side = "right"
    # Class defaults for the special tokens (subclasses override), as {attribute: AddedToken}.
    default_special_tokens: Dict[str, AddedToken] = {}

    def _init_base(
        self,
        special_tokens: Optional[dict] = None,
        additional_special_tokens: Optional[Sequence] = None,
        added_tokens_decoder: Optional[Dict[int, AddedToken]] = None,
        model_max_length: Optional[int] = None,
        padding_side: Optional[str] = None,
        truncation_side: Optional[str] = None,
        clean_up_tokenization_spaces: bool = True,
        split_special_tokens: bool = False,
        model_input_names: Optional[List[str]] = None,
    ):
        """Called by subclasses once their vocabulary is loaded (upstream PreTrainedTokenizer.__init__)."""
        for name in ("model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces",
                     "split_special_tokens", "model_input_names"):
            check_option(name, locals()[name])
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self.padding_side = padding_side or type(self).padding_side
        self.truncation_side = truncation_side or type(self).truncation_side
        for name, side in (("padding_side", self.padding_side), ("truncation_side", self.truncation_side)):
            if side not in ("left", "right"):
                raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
        if model_input_names is not None:
            self.model_input_names = list(model_input_names)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.split_special_tokens = bool(split_special_tokens)

        # Special tokens: class defaults, overridden by the caller's (None removes one).
        tokens = dict(self.default_special_tokens)
        for key, value in (special_tokens or {}).items():
            if key not in SPECIAL_TOKENS_ATTRIBUTES:
                raise ValueError(f"unknown special token attribute {key!r}; "
                                 f"expected one of {SPECIAL_TOKENS_ATTRIBUTES}")
            base = self.default_special_tokens.get(key)
            defaults = {"lstrip": base.lstrip, "rstrip": base.rstrip} if base is not None else {}
            try:
                tokens[key] = as_added_token(value, **defaults)
            except ValueError as err:
                raise ValueError(f"{key}: {err}") from None
        self._special: Dict[str, Optional[AddedToken]] = {k: tokens.get(k) for k in SPECIAL_TOKENS_ATTRIBUTES}
        self._additional: List[AddedToken] = [
            as_added_token(t, normalized=False) for t in (additional_special_tokens or [])
        ]

        # Added tokens (upstream _added_tokens_decoder): those saved with the checkpoint first, then every
        # special token not yet present, at its vocabulary id or appended after the vocabulary (_add_tokens).
        self.added_tokens_decoder: Dict[int, AddedToken] = {}
        for idx, tok in (added_tokens_decoder or {}).items():
            self.added_tokens_decoder[int(idx)] = tok
        self.added_tokens_encoder: Dict[str, int] = {t.content: i for i, t in self.added_tokens_decoder.items()}
        # (a special token whose content the checkpoint saved keeps the saved flags)
        self.add_tokens([t for t in self._all_special_added_tokens() if t.content not in self.added_tokens_encoder],
                        special_tokens=True)

    # ------------------------------------------------------------------ special tokens
    def _all_special_added_tokens(self) -> List[AddedToken]:
        """Upstream all_special_tokens_extended: attribute order, then additional tokens; unique by content."""
        out, seen = [], set()
        for tok in [self._special[k] for k in SPECIAL_TOKENS_ATTRIBUTES] + self._additional:
            if tok is not None and tok.content and tok.content not in seen:
                seen.add(tok.content)
                out.append(tok)
        return out

    def _memo(self, key, compute):
        """Per-instance memo for values derived from the added tokens; cleared by add_tokens."""
        cache = self.__dict__.setdefault("_derived_cache", {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    @property
    def all_special_tokens(self) -> List[str]:
        return list(self._memo("all_special_tokens", lambda: [t.content for t in self._all_special_added_tokens()]))

    @property
    def all_special_ids(self) -> List[int]:
        return list(self._memo("all_special_ids", lambda: [self.convert_tokens_to_ids(t)
                                                           for t in self.all_special_tokens]))

    @property
    def additional_special_tokens(self) -> List[str]:
        return [t.content for t in self._additional]

    @property
    def special_tokens_map(self) -> Dict[str, Union[str, List[str]]]:
        out = {k: v.content for k, v in self._special.items() if v is not None}
        if self._additional:
            out["additional_special_tokens"] = self.additional_special_tokens
        return out

    def add_tokens(self, new_tokens: Iterable, special_tokens: bool = False) -> int:
        """Add tokens matched verbatim in text; returns how many got a new id (upstream _add_tokens)."""
        vocab = self.get_vocab()
        new_idx, added = len(vocab), 0
        specials = {t.content for t in self._all_special_added_tokens()}
        for token in new_tokens:
            if isinstance(token, str):
                if token == "" or token in self.added_tokens_encoder:
                    continue
                is_special = token in self.all_special_tokens or special_tokens
                token = AddedToken(token, normalized=not is_special, special=is_special)
            elif not isinstance(token, AddedToken):
                raise ValueError(f"token {token!r} is not a str or AddedToken")
            elif special_tokens:
                token = replace(token, special=True)
            if token.content == "":
                continue  # upstream: an AddedToken of a content already registered replaces it (same id)
            if not token.special and token.normalized and getattr(self, "do_lower_case", False):
                token = replace(token, content=token.content.lower())
            if token.content in vocab:
                index = vocab[token.content]
            else:
                index = new_idx + added
                vocab[token.content] = index
                added += 1
            if token.special and token.content not in specials:  # upstream: an additional special token
                self._additional.append(token)
                specials.add(token.content)
            self.added_tokens_decoder[index] = token
            self.added_tokens_encoder[token.content] = index
        self._added_split_re = None
        self._derived_cache = {}
        self._refresh_special_attributes()
        return added

    def _refresh_special_attributes(self) -> None:
        """bos_token, bos_token_id, eos_token, ... as plain attributes, recomputed by add_tokens.

        (Read several times per encoded text by the templates, so no property chain. To change a
        special token, pass it to the constructor or load_tokenizer.)
        """
        for attr in SPECIAL_TOKENS_ATTRIBUTES:
            tok = self._special.get(attr)
            setattr(self, attr, None if tok is None else tok.content)
        for attr in SPECIAL_TOKENS_ATTRIBUTES:
            tok = self._special.get(attr)
            setattr(self, attr + "_id", None if tok is None else self.convert_tokens_to_ids(tok.content))

    pad_token_type_id = 0

    @property
    def additional_special_tokens_ids(self) -> List[int]:
        return self.convert_tokens_to_ids(self.additional_special_tokens)

    def __len__(self) -> int:
        return len(self.get_vocab())

    # ------------------------------------------------------------------ vocabulary
    def get_vocab(self) -> Dict[str, int]:
        raise NotImplementedError

    def convert_tokens_to_ids(self, tokens):
        """str -> int, [str] -> [int]; added tokens first, then the model vocabulary (with its unk rule)."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            return self._convert_one_token(tokens)
        return [self._convert_one_token(t) for t in tokens]

    def _convert_one_token(self, token: str) -> int:
        idx = self.added_tokens_encoder.get(token)
        return idx if idx is not None else self._token_to_id(token)

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """int -> str, [int] -> [str] (upstream PreTrainedTokenizer.convert_ids_to_tokens)."""
        if isinstance(ids, (int, np.integer)):
            ids = int(ids)
            if ids in self.added_tokens_decoder:
                return self.added_tokens_decoder[ids].content
            return self._id_to_token(ids)
        special = set(self.all_special_ids) if skip_special_tokens else ()
        out = []
        for index in _to_int_list(ids):
            if index in special:
                continue
            tok = self.added_tokens_decoder.get(index)
            out.append(tok.content if tok is not None else self._id_to_token(index))
        return out

    # ------------------------------------------------------------------ text -> tokens
    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        return text, kwargs

    def _lowercase_outside_special(self, text: str) -> str:
        """Upstream PreTrainedTokenizer.tokenize when do_lower_case: re.sub("(special|...)|(.+?)", lower).

        Lower-casing is per character (so a final capital sigma becomes 'σ', not 'ς'), special tokens
        and normalized non-special added tokens are kept, and '.' does not match '\\n'.
        """
        def patterns():
            pieces = [re.escape(s) for s in self.all_special_tokens]
            pieces += [re.escape(t.content) for t in self.added_tokens_decoder.values()
                       if not t.special and t.normalized]
            keep = r"(" + r"|".join(pieces) + r")"
            return re.compile(keep + r"|" + r"(.+?)"), (re.compile(keep) if pieces else None)

        per_char, keep = self._memo("lowercase_patterns", patterns)
        if "Σ" not in text and (keep is None or keep.search(text) is None):
            return text.lower()  # nothing to keep, no final-sigma rule: same as per character
        if "Σ" not in text:
            # str.lower is per character except for the final-sigma rule; avoid a Python call per char.
            parts = keep.split(text) if keep is not None else [text]
            return "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))
        return per_char.sub(lambda m: m.groups()[0] or m.groups()[1].lower(), text)

    def _split_on_added(self, text: str) -> List[str]:
        """text -> pieces, every added token its own piece (upstream Trie.split: leftmost, longest match)."""
        if self._added_split_re is None:
            contents = sorted(self.added_tokens_encoder, key=len, reverse=True)
            self._added_split_re = re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else False
        if not self._added_split_re:
            return [text] if text else []
        return [p for p in self._added_split_re.split(text) if p]

    def _split_text(self, text: str, split_special_tokens: Optional[bool], **kwargs) -> List[tuple]:
        """text -> [(piece, is_added_token)] after prepare_for_tokenization, lower-casing and lstrip/rstrip."""
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if self.text_must_encode:
            check_encodable(text)
        text, kwargs = self.prepare_for_tokenization(text, **kwargs)
        if kwargs:
            raise ValueError(f"unrecognised keyword arguments {sorted(kwargs)}")
        if getattr(self, "do_lower_case", False):
            text = self._lowercase_outside_special(text)
        if split_special_tokens:
            return [(text, False)] if text else []
        pieces = self._split_on_added(text)
        if len(pieces) == 1 and pieces[0] not in self.added_tokens_encoder:
            return [(text, False)]  # no added token inside: nothing to strip
        encoder, decoder = self.added_tokens_encoder, self.added_tokens_decoder
        # Upstream PreTrainedTokenizer.tokenize: an added token's lstrip/rstrip eats the whitespace of its
        # neighbours; the loop reads the list live, so an edit to piece i+1 is seen at step i+1.
        for i in range(len(pieces)):
            token = pieces[i]
            if token not in encoder:
                continue
            tok = decoder[encoder[token]]
            left = pieces[i - 1] if i > 0 else None
            right = pieces[i + 1] if i < len(pieces) - 1 else None
            if tok.rstrip and right:
                pieces[i + 1] = right.lstrip()
            if tok.lstrip and left:
                pieces[i - 1] = left.rstrip()
            if tok.single_word and left and left[-1] != " ":
                pieces[i - 1] += token
                pieces[i] = ""
            elif tok.single_word and right and right[0] != " ":
                pieces[i + 1] = token + pieces[i + 1]
                pieces[i] = ""
        return [(p, p in encoder) for p in pieces if p]

    def tokenize(self, text: str, split_special_tokens: Optional[bool] = None, **kwargs) -> List[str]:
        """text -> token strings (upstream PreTrainedTokenizer.tokenize)."""
        out: List[str] = []
        for piece, is_added in self._split_text(text, split_special_tokens, **kwargs):
            if is_added:
                out.append(piece)
            else:
                out.extend(self._tokenize(piece))
        return out

    def _text_to_ids(self, text: str, **kwargs) -> List[int]:
        """text -> ids without special tokens (tokenize + convert_tokens_to_ids, fused per piece)."""
        split = kwargs.pop("split_special_tokens", None)
        out: List[int] = []
        for piece, is_added in self._split_text(text, split, **kwargs):
            if is_added:
                out.append(self.added_tokens_encoder[piece])
            else:
                out.extend(self._tokenize_ids(piece))
        return out

    def _tokenize_ids(self, text: str) -> List[int]:
        return [self._convert_one_token(t) for t in self._tokenize(text)]

    def _get_input_ids(self, text, is_split_into_words: bool, **kwargs) -> List[int]:
        """str | [str] (words or tokens) | [int] -> ids (upstream _encode_plus.get_input_ids)."""
        if isinstance(text, str):
            return self._text_to_ids(text, **kwargs)
        if isinstance(text, (list, tuple)) and len(text) > 0 and isinstance(text[0], str):
            if is_split_into_words:
                ids: List[int] = []
                for word in text:
                    ids.extend(self._text_to_ids(word, is_split_into_words=True, **kwargs))
                return ids
            return self.convert_tokens_to_ids(list(text))
        if isinstance(text, (list, tuple)) and len(text) > 0 and isinstance(text[0], (int, np.integer)):
            return [int(i) for i in text]
        raise ValueError(
            f"input {text!r} is not valid: expected a string, a list of strings (tokens, or words with "
            "is_split_into_words=True) or a list of integer ids"
        )

    # ------------------------------------------------------------------ templates (overridden)
    def build_inputs_with_special_tokens(self, ids0: List[int], ids1: Optional[List[int]] = None) -> List[int]:
        return ids0 if ids1 is None else ids0 + ids1

    def create_token_type_ids_from_sequences(self, ids0: List[int], ids1: Optional[List[int]] = None) -> List[int]:
        return [0] * len(ids0) if ids1 is None else [0] * len(ids0) + [1] * len(ids1)

    def get_special_tokens_mask(self, ids0, ids1=None, already_has_special_tokens: bool = False) -> List[int]:
        """1 where the template adds a special token (or, with already_has_special_tokens, where an id is special)."""
        if already_has_special_tokens:
            if ids1 is not None:
                raise ValueError("do not pass a second sequence when the ids already contain special tokens")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in _to_int_list(ids0)]
        return self._template_special_mask(list(ids0), None if ids1 is None else list(ids1))

    def _template_special_mask(self, ids0: List[int], ids1: Optional[List[int]]) -> List[int]:
        return [0] * ((len(ids1) if ids1 else 0) + len(ids0))

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        cache = self.__dict__.setdefault("_derived_cache", {})
        key = ("num_special", bool(pair))
        if key not in cache:
            cache[key] = len(self.build_inputs_with_special_tokens([], [] if pair else None))
        return cache[key]

    # ------------------------------------------------------------------ strategies
    def _strategies(self, padding, truncation=None, max_length=None, pad_to_multiple_of=None):
        """Upstream _get_padding_truncation_strategies -> (padding, truncation, max_length)."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # upstream: max_length alone switches truncation on
        pad = _strategy(padding, "longest", "do_not_pad", PADDING_STRATEGIES, "padding")
        trunc = _strategy(truncation, "longest_first", "do_not_truncate", TRUNCATION_STRATEGIES, "truncation")
        if max_length is None:
            if pad == "max_length":
                if self.model_max_length > LARGE_INTEGER:
                    pad = "do_not_pad"  # upstream: no maximum known -> no padding (with a warning)
                else:
                    max_length = self.model_max_length
            if trunc != "do_not_truncate":
                if self.model_max_length > LARGE_INTEGER:
                    trunc = "do_not_truncate"
                else:
                    max_length = self.model_max_length
        if pad != "do_not_pad" and (self.pad_token is None or self.pad_token_id is None or self.pad_token_id < 0):
            raise ValueError("asked to pad but the tokenizer has no pad_token (set one in special_tokens_map.json)")
        if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of != 0):
            raise ValueError(
                f"truncation length ({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of})"
            )
        return pad, trunc, max_length

    def truncate_sequences(self, ids, pair_ids=None, num_tokens_to_remove=0, truncation_strategy="longest_first",
                           stride=0):
        """Upstream truncate_sequences -> (ids, pair_ids, overflowing_tokens)."""
        if num_tokens_to_remove <= 0:
            return ids, pair_ids, []
        overflowing: List[int] = []
        left = self.truncation_side == "left"
        if truncation_strategy == "only_first" or (truncation_strategy == "longest_first" and pair_ids is None):
            if len(ids) > num_tokens_to_remove:
                window = min(len(ids), stride + num_tokens_to_remove)
                if left:
                    overflowing, ids = ids[:window], ids[num_tokens_to_remove:]
                else:
                    overflowing, ids = ids[-window:], ids[:-num_tokens_to_remove]
            # else: upstream logs an error and leaves the sequence untouched
        elif truncation_strategy == "longest_first":
            # remove from the longer one until equal, then alternately (first gets the extra one)
            n0, n1 = len(ids), len(pair_ids)
            first_remove = min(abs(n1 - n0), num_tokens_to_remove)
            second_remove = num_tokens_to_remove - first_remove
            if n0 > n1:
                ids_to_move = first_remove + second_remove // 2
                pair_to_move = second_remove - second_remove // 2
            else:
                ids_to_move = second_remove // 2
                pair_to_move = first_remove + second_remove - (second_remove // 2)
            if left:
                ids, pair_ids = ids[ids_to_move:], pair_ids[pair_to_move:]
            else:
                ids = ids[:-ids_to_move] if ids_to_move > 0 else ids
                pair_ids = pair_ids[:-pair_to_move] if pair_to_move > 0 else pair_ids
        elif truncation_strategy == "only_second" and pair_ids is not None:
            if len(pair_ids) > num_tokens_to_remove:
                window = min(len(pair_ids), stride + num_tokens_to_remove)
                if left:
                    overflowing, pair_ids = pair_ids[:window], pair_ids[num_tokens_to_remove:]
                else:
                    overflowing, pair_ids = pair_ids[-window:], pair_ids[:-num_tokens_to_remove]
        return ids, pair_ids, overflowing

    def prepare_for_model(self, ids, pair_ids=None, add_special_tokens=True, truncation="do_not_truncate",
                          max_length=None, stride=0, return_token_type_ids=None,
                          return_overflowing_tokens=False, return_special_tokens_mask=False) -> dict:
        """ids (+ pair) -> unpadded encoding dict, after truncation and the special-token template."""
        pair = pair_ids is not None
        if return_token_type_ids and not add_special_tokens:
            raise ValueError("return_token_type_ids=True needs add_special_tokens=True (upstream rule)")
        if return_overflowing_tokens and truncation == "longest_first" and pair:
            raise ValueError("overflowing tokens are not available for pairs with truncation='longest_first'")
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        total = len(ids) + (len(pair_ids) if pair else 0)
        total += self.num_special_tokens_to_add(pair=pair) if add_special_tokens else 0
        enc: dict = {}
        overflowing: List[int] = []
        if truncation != "do_not_truncate" and max_length and total > max_length:
            ids, pair_ids, overflowing = self.truncate_sequences(ids, pair_ids, total - max_length, truncation, stride)
        if return_overflowing_tokens:
            enc["overflowing_tokens"] = overflowing
            enc["num_truncated_tokens"] = total - (max_length or 0)
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids, pair_ids)
        else:
            sequence = ids + pair_ids if pair else list(ids)
        enc["input_ids"] = sequence
        if return_token_type_ids:
            enc["token_type_ids"] = (self.create_token_type_ids_from_sequences(ids, pair_ids) if add_special_tokens
                                     else [0] * len(sequence))
        if return_special_tokens_mask:
            enc["special_tokens_mask"] = (
                self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens else [0] * len(sequence)
            )
        return enc

    # ------------------------------------------------------------------ padding
    def _pad_one(self, enc: dict, max_length, padding: str, pad_to_multiple_of, return_attention_mask) -> dict:
        """One encoding dict -> padded copy (upstream _pad). Keys: input_ids [T] and friends [T]."""
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        ids = enc["input_ids"]
        if padding == "longest":
            max_length = len(ids)
        if max_length is not None and pad_to_multiple_of is not None and max_length % pad_to_multiple_of != 0:
            max_length = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
        out = dict(enc)
        if return_attention_mask and "attention_mask" not in out:
            out["attention_mask"] = [1] * len(ids)
        if padding != "do_not_pad" and len(ids) != max_length:
            diff = max_length - len(ids)
            fill = {"attention_mask": 0, "token_type_ids": self.pad_token_type_id, "special_tokens_mask": 1,
                    "input_ids": self.pad_token_id}
            for key, value in fill.items():
                if key in out and (key != "attention_mask" or return_attention_mask):
                    out[key] = self._pad_list(list(out[key]), diff, value)
        self._pad_extra(out, return_attention_mask)
        return out

    def _pad_list(self, values: list, diff: int, value: int) -> list:
        """[T] -> [T + diff] on the tokenizer's padding side."""
        return values + [value] * diff if self.padding_side == "right" else [value] * diff + values

    def _pad_extra(self, enc: dict, return_attention_mask: bool) -> None:
        """Hook for model-specific keys (LED's global_attention_mask)."""

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None,
            return_attention_mask=None, return_tensors=None) -> BatchEncoding:
        """Pad one encoding or a batch (dict of lists, or list of dicts) (upstream PreTrainedTokenizerBase.pad)."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {k: [e[k] for e in encoded_inputs] for k in encoded_inputs[0]}
        if not isinstance(encoded_inputs, dict) or "input_ids" not in encoded_inputs:
            raise ValueError("pad() needs a dict (or list of dicts) with an 'input_ids' entry")
        enc = {}
        for k, v in encoded_inputs.items():
            if isinstance(v, np.ndarray):
                return_tensors = "np" if return_tensors is None else return_tensors
                v = v.tolist()
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], np.ndarray):  # upstream: rows of arrays too
                v, return_tensors = [x.tolist() for x in v], "np" if return_tensors is None else return_tensors
            enc[k] = v
        pad, _, max_length = self._strategies(padding=padding, max_length=max_length)
        ids = enc["input_ids"]
        if not ids:
            if return_attention_mask:
                enc["attention_mask"] = []
            return BatchEncoding(enc)
        if not isinstance(ids[0], (list, tuple)):
            out = self._pad_one(enc, max_length, pad, pad_to_multiple_of, return_attention_mask)
            # upstream pad(): BatchEncoding(..., tensor_type) without a batch axis: [T] stays [T]
            return self._finish(out, return_tensors, batched=False, padded=pad != "do_not_pad", batch_axis=False)
        n = len(ids)
        if any(len(v) != n for v in enc.values()):
            raise ValueError("every entry of the batch dict must have the same batch size")
        if pad == "longest":
            max_length, pad = max(len(x) for x in ids), "max_length"
        rows = [self._pad_one({k: v[i] for k, v in enc.items()}, max_length, pad, pad_to_multiple_of,
                              return_attention_mask) for i in range(n)]
        out = {k: [r[k] for r in rows] for k in rows[0]}
        return self._finish(out, return_tensors, batched=True, padded=pad != "do_not_pad")

    def _finish(self, enc: dict, return_tensors, batched: bool, padded: bool, batch_axis: bool = True) -> BatchEncoding:
        """Lists -> int64 arrays when asked (return_tensors='np') or when padding made them rectangular."""
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be None or 'np' (refimpl is NumPy only), got {return_tensors!r}")
        if return_tensors is None and not padded:
            return BatchEncoding(enc)
        out = {}
        for k, v in enc.items():
            if k == "overflowing_tokens" or k == "num_truncated_tokens":
                out[k] = v
                continue
            if batched and isinstance(v, list) and v and isinstance(v[0], list) and len({len(r) for r in v}) > 1:
                if return_tensors == "np":
                    raise ValueError(
                        f"cannot make a rectangular array of {k!r}: sequences have different lengths "
                        f"{sorted({len(r) for r in v})}; pass padding=True (and truncation=True) to batch them"
                    )
                out[k] = v  # padding requested but rows still ragged (e.g. max_length shorter than a row)
                continue
            arr = np.asarray(v, dtype=np.int64)
            if return_tensors == "np" and not batched and batch_axis:
                arr = arr[None]  # upstream prepend_batch_axis: [T] -> [1, T]
            out[k] = arr
        return BatchEncoding(out)

    # ------------------------------------------------------------------ calling convention
    def __call__(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
                 max_length: Optional[int] = None, stride: int = 0, is_split_into_words: bool = False,
                 pad_to_multiple_of: Optional[int] = None, return_tensors: Optional[str] = None,
                 return_token_type_ids: Optional[bool] = None, return_attention_mask: Optional[bool] = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_length: bool = False, **kwargs) -> BatchEncoding:
        """str | [str] (+ pair) -> BatchEncoding of input_ids [B, T] (or [T]), attention_mask, ...

        Lists of python ints as upstream when not padded; int64 arrays when padded (and rectangular)
        or when return_tensors="np".
        """
        if not _valid_text_input(text):
            raise ValueError("text must be a str, a list of str (batch), or a list of lists of str "
                             f"(pre-split words, batch), got {type(text).__name__}")
        if text_pair is not None and not _valid_text_input(text_pair):
            raise ValueError(f"text_pair must be of the same kind as text, got {type(text_pair).__name__}")
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                       max_length=max_length, stride=stride, is_split_into_words=is_split_into_words,
                       pad_to_multiple_of=pad_to_multiple_of, return_tensors=return_tensors,
                       return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                       return_overflowing_tokens=return_overflowing_tokens,
                       return_special_tokens_mask=return_special_tokens_mask, return_length=return_length)
        if not batched:
            return self.encode_plus(text, text_pair, **options, **kwargs)
        if isinstance(text_pair, str):
            raise ValueError("text is a batch (list) but text_pair is a single string; pass a list of the same length")
        if text_pair is not None and len(text) != len(text_pair):
            raise ValueError(f"batch length of text ({len(text)}) does not match text_pair ({len(text_pair)})")
        if text_pair is None:  # upstream: a batch item that is a (text, pair) 2-tuple or 2-list is a pair
            return self.batch_encode_plus(text, **options, **kwargs)
        return self._batch_encode(list(zip(text, text_pair)), **options, **kwargs)

    def encode_plus(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
                    max_length=None, stride=0, is_split_into_words=False, pad_to_multiple_of=None,
                    return_tensors=None, return_token_type_ids=None, return_attention_mask=None,
                    return_overflowing_tokens=False, return_special_tokens_mask=False, return_length=False,
                    **kwargs) -> BatchEncoding:
        """One text (+ pair) -> BatchEncoding of [T] lists (upstream _encode_plus + prepare_for_model)."""
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        ids0 = self._get_input_ids(text, is_split_into_words, **kwargs)
        ids1 = None if text_pair is None else self._get_input_ids(text_pair, is_split_into_words, **kwargs)
        enc = self.prepare_for_model(ids0, ids1, add_special_tokens, trunc, max_length, stride,
                                     return_token_type_ids, return_overflowing_tokens, return_special_tokens_mask)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if pad != "do_not_pad" or return_attention_mask:
            enc = self._pad_one(enc, max_length, pad, pad_to_multiple_of, return_attention_mask)
        if return_length:
            enc["length"] = len(enc["input_ids"])
        return self._finish(enc, return_tensors, batched=False, padded=pad != "do_not_pad")

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        """[text | (text, pair)] -> BatchEncoding (upstream batch_encode_plus)."""
        pairs = []
        for item in batch_text_or_text_pairs:  # upstream: with pre-split words, a pair is two lists of words
            words = kwargs.get("is_split_into_words") and not (item and isinstance(item[0], (list, tuple)))
            if isinstance(item, (list, tuple)) and len(item) == 2 and not words:
                pairs.append((item[0], item[1]))
            else:
                pairs.append((item, None))
        return self._batch_encode(pairs, **kwargs)

    def _batch_encode(self, pairs, add_special_tokens=True, padding=False, truncation=None, max_length=None,
                      stride=0, is_split_into_words=False, pad_to_multiple_of=None, return_tensors=None,
                      return_token_type_ids=None, return_attention_mask=None, return_overflowing_tokens=False,
                      return_special_tokens_mask=False, return_length=False, **kwargs) -> BatchEncoding:
        """[(text, pair|None)] -> BatchEncoding of [B, T] (upstream _batch_encode_plus + _batch_prepare_for_model)."""
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        rows = []
        for first, second in pairs:
            ids0 = (self._text_to_ids(first, **kwargs) if type(first) is str
                    else self._get_input_ids(first, is_split_into_words, **kwargs))
            ids1 = None if second is None else self._get_input_ids(second, is_split_into_words, **kwargs)
            enc = self.prepare_for_model(ids0, ids1, add_special_tokens, trunc, max_length, stride,
                                         return_token_type_ids, return_overflowing_tokens,
                                         return_special_tokens_mask)
            if return_length:
                enc["length"] = len(enc["input_ids"])  # upstream: before batch padding
            rows.append(enc)
        if not rows:
            return BatchEncoding({"input_ids": [], "attention_mask": []}) if return_attention_mask is not False \
                else BatchEncoding({"input_ids": []})
        batch = {k: [r[k] for r in rows] for k in rows[0]}
        return self.pad(batch, padding=pad, max_length=max_length, pad_to_multiple_of=pad_to_multiple_of,
                        return_attention_mask=return_attention_mask, return_tensors=return_tensors)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length=None, stride=0, return_tensors=None, **kwargs):
        """text (+ pair) -> ids [T] (upstream encode)."""
        enc = self.encode_plus(text, text_pair, add_special_tokens=add_special_tokens, padding=padding,
                               truncation=truncation, max_length=max_length, stride=stride,
                               return_tensors=return_tensors, return_attention_mask=False,
                               return_token_type_ids=False, **kwargs)
        ids = enc["input_ids"]
        return ids.tolist() if isinstance(ids, np.ndarray) and return_tensors is None else ids

    # ------------------------------------------------------------------ ids -> text
    def tokens_to_string(self, tokens: List[str]) -> str:
        return " ".join(tokens)

    def convert_tokens_to_string(self, tokens: List[str]) -> str:
        """Upstream name of tokens_to_string."""
        return self.tokens_to_string(tokens)

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: Optional[bool] = None,
               spaces_between_special_tokens: bool = True) -> str:
        """ids [T] -> text (upstream PreTrainedTokenizer._decode)."""
        tokens = self.convert_ids_to_tokens(_to_int_list(token_ids), skip_special_tokens=skip_special_tokens)
        # Upstream "legacy added tokens": added tokens that are not special, plus additional special tokens
        # whose id lies beyond vocab_size, are decoded on their own and joined with spaces.
        legacy = self._memo("legacy_added_tokens", lambda: (
            set(self.added_tokens_encoder) - set(self.all_special_tokens)) | {
            t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size})
        sub_texts, current = [], []
        for token in tokens:
            if token in legacy:
                if current:
                    s = self.tokens_to_string(current)
                    if s:
                        sub_texts.append(s)
                    current = []
                sub_texts.append(token)
            else:
                current.append(token)
        if current:
            sub_texts.append(self.tokens_to_string(current))
        text = (" " if spaces_between_special_tokens else "").join(sub_texts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None, **kwargs) -> List[str]:
        """ids [B, T] -> B texts."""
        if isinstance(sequences, np.ndarray) and sequences.ndim != 2:
            raise ValueError(f"batch_decode expects ids of shape [B, T], got {sequences.shape}")
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces, **kwargs) for s in sequences]

    def __repr__(self):
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, padding_side={self.padding_side!r}, "
                f"special_tokens={self.special_tokens_map})")


def _valid_text_input(t) -> bool:
    """Upstream _call_one._is_valid_text_input."""
    if isinstance(t, str):
        return True
    if isinstance(t, (list, tuple)):
        if len(t) == 0 or isinstance(t[0], str):
            return True
        if isinstance(t[0], (list, tuple)):
            return len(t[0]) == 0 or isinstance(t[0][0], str)
    return False
