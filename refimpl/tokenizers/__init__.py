"""Tokenizers of the four families, bit-for-bit with transformers 4.37.2's slow (Python) tokenizers.

    load_tokenizer(path)      checkpoint directory or cached repo id -> the right tokenizer object
    GPT2Tokenizer             byte-level BPE, GPT-2 rules (OPT: add_bos_token, `</s>` as BOS)   bpe.py
    BartTokenizer             byte-level BPE, `<s> A </s>` (BART)                               bpe.py
    LEDTokenizer              BartTokenizer + global_attention_mask padding                     bpe.py
    XGLMTokenizer             sentencepiece + fairseq ids                                       spm.py
    BertTokenizer             basic tokenizer + WordPiece (NEZHA)                               wordpiece.py

All share one calling convention (base.py): tok(texts, text_pair=None, padding=..., truncation=...,
max_length=..., return_tensors="np") -> BatchEncoding; encode, decode, batch_decode, tokenize, pad, ...
"""
from __future__ import annotations

import os
from typing import Optional

from ..formats import load_json
from .base import AddedToken, BatchEncoding, Tokenizer, as_added_token, check_tokenizer_config, clean_up_tokenization
from .bpe import BartTokenizer, GPT2Tokenizer, LEDTokenizer, bytes_to_unicode
from .spm import XGLMTokenizer
from .wordpiece import BasicTokenizer, BertTokenizer

__all__ = [
    "load_tokenizer", "Tokenizer", "BatchEncoding", "AddedToken",
    "GPT2Tokenizer", "BartTokenizer", "LEDTokenizer", "XGLMTokenizer", "BertTokenizer", "BasicTokenizer",
    "bytes_to_unicode", "clean_up_tokenization",
]

# tokenizer_class (tokenizer_config.json) -> our class; *Fast names load the slow rules (the reference).
_CLASSES = {
    "GPT2Tokenizer": GPT2Tokenizer,
    "BartTokenizer": BartTokenizer,
    "RobertaTokenizer": BartTokenizer,  # same byte-level BPE and `<s> A </s></s> B </s>` template
    "LEDTokenizer": LEDTokenizer,
    "XGLMTokenizer": XGLMTokenizer,
    "BertTokenizer": BertTokenizer,
}
# config.json model_type -> our class (used when tokenizer_config.json names no class)
_MODEL_TYPES = {
    "opt": GPT2Tokenizer, "gpt2": GPT2Tokenizer,
    "bart": BartTokenizer, "led": LEDTokenizer, "roberta": BartTokenizer,
    "xglm": XGLMTokenizer, "nezha": BertTokenizer, "bert": BertTokenizer,
}
# What a facebook/opt-* checkpoint's tokenizer_config.json says; used for model_type="opt" without one.
_OPT_DEFAULTS = {"add_bos_token": True, "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>",
                 "pad_token": "<pad>"}

_COMMON_OPTIONS = ("model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces",
                   "split_special_tokens", "model_input_names")
_CLASS_OPTIONS = {
    GPT2Tokenizer: ("errors", "add_prefix_space", "add_bos_token"),
    BartTokenizer: ("errors", "add_prefix_space"),
    LEDTokenizer: ("errors", "add_prefix_space"),
    XGLMTokenizer: (),
    BertTokenizer: ("do_lower_case", "do_basic_tokenize", "never_split", "tokenize_chinese_chars",
                    "strip_accents"),
}
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: str):
    return load_json(path, os.path.basename(path), error=ValueError)  # regular file, size and depth bounds


def _read_json_object(path: str) -> dict:  # config.json, special_tokens_map.json, added_tokens.json
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(value).__name__}")
    return value


def _added_tokens(path: str) -> dict:  # added_tokens.json: {content: id}
    tokens = _read_json_object(path)
    for content, index in tokens.items():
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 2 ** 63):
            raise ValueError(f"{path}: token {content!r:.80} has id {index!r:.80}: expected an integer >= 0 "
                             "(below 2**63)")
    return tokens


def _special_value(value):
    """A special token as stored in tokenizer_config.json / special_tokens_map.json -> str | AddedToken."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "__type"}
        return as_added_token(value, special=True)
    return value


def _check_special_entry(file: str, key: str, value) -> None:
    """A special_tokens_map.json entry: a token (a string or an AddedToken's dict with a string "content"), a
    list of them for additional_special_tokens (upstream refuses other types when it sets them)."""
    def is_token(v):
        return isinstance(v, str) or isinstance(v, dict) and isinstance(v.get("content"), str)
    if key == "additional_special_tokens":
        if not (isinstance(value, list) and all(is_token(v) for v in value)):
            raise ValueError(f"{file}: field {key!r} = {value!r:.80}: expected a list of tokens (strings or "
                             '{"content": ...} objects)')
    elif key in _SPECIAL_KEYS and not (value is None or is_token(value)):
        raise ValueError(f"{file}: field {key!r} = {value!r:.80}: expected a token (a string or a "
                         '{"content": ...} object)')


def _pick_class(path: str, config: dict, model_type: Optional[str]):
    """-> (class, model_type or None)."""
    if model_type is None and os.path.isfile(os.path.join(path, "config.json")):
        config_file = os.path.join(path, "config.json")
        model_type = _read_json_object(config_file).get("model_type")
        if model_type is not None and not isinstance(model_type, str):
            raise ValueError(f"{config_file}: field 'model_type' = {model_type!r:.80}: expected a string")
    name = config.get("tokenizer_class")
    if name:
        base = name[:-4] if name.endswith("Fast") else name
        if base not in _CLASSES:
            raise ValueError(f"{path}: tokenizer_class {name!r} is not supported; supported: {sorted(_CLASSES)}")
        return _CLASSES[base], model_type
    if model_type is not None:
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported; supported: {sorted(_MODEL_TYPES)}")
        return _MODEL_TYPES[model_type], model_type
    has = lambda f: os.path.isfile(os.path.join(path, f))  # noqa: E731
    if has("sentencepiece.bpe.model"):
        return XGLMTokenizer, None
    if has("vocab.txt"):
        return BertTokenizer, None
    if has("vocab.json") and has("merges.txt"):
        raise ValueError(f"{path}: vocab.json + merges.txt serve both GPT-2/OPT and BART/LED rules and no "
                         "tokenizer_class or config.json model_type says which; pass model_type='opt' or 'led'")
    raise ValueError(f"{path}: no tokenizer files found (expected vocab.json + merges.txt, "
                     "sentencepiece.bpe.model, or vocab.txt)")


def load_tokenizer(path, model_type: Optional[str] = None, cache_dir=None, revision: Optional[str] = None,
                   **overrides) -> Tokenizer:
    """Checkpoint directory -> tokenizer, configured from tokenizer_config.json and special_tokens_map.json.

    path: a directory, or a repo id ("facebook/opt-125m") already in the Hugging Face cache, found as
    from_pretrained finds it (`cache_dir`, `revision`; refimpl.formats.hub_cache); never downloads.

    The class comes from tokenizer_config.json's `tokenizer_class`, else from `model_type` (argument, or
    config.json's), else from the files present. `overrides` replace config values (e.g. padding_side="left").
    Loading follows upstream's from_pretrained: with an `added_tokens_decoder` in tokenizer_config.json,
    special_tokens_map.json is not read; otherwise it overrides tokenizer_config.json, and added_tokens.json
    adds tokens.
    """
    from ..formats.hub_cache import resolve_checkpoint

    path = os.fspath(resolve_checkpoint(path, cache_dir=cache_dir, revision=revision))
    if not os.path.isdir(path):
        raise ValueError(f"tokenizer path {path!r} is not a directory")
    cfg_file = os.path.join(path, "tokenizer_config.json")
    config = _read_json(cfg_file) if os.path.isfile(cfg_file) else {}
    check_tokenizer_config(config, cfg_file)
    cls, model_type = _pick_class(path, config, model_type)
    if cls is GPT2Tokenizer and model_type == "opt":
        config = {**_OPT_DEFAULTS, **config}  # facebook/opt-* values for whatever the config leaves out

    kwargs = {k: config[k] for k in _COMMON_OPTIONS + _CLASS_OPTIONS[cls] if k in config}
    special = {k: _special_value(config[k]) for k in _SPECIAL_KEYS if k in config}
    additional = [_special_value(t) for t in (config.get("additional_special_tokens") or [])]
    added_decoder = {}
    if "added_tokens_decoder" in config:
        for idx, tok in config["added_tokens_decoder"].items():
            if not isinstance(tok, dict) or "content" not in tok:
                raise ValueError(f"{cfg_file}: added_tokens_decoder[{idx!r}] must be a dict with 'content'")
            added_decoder[int(idx)] = as_added_token({k: v for k, v in tok.items() if k != "__type"})
    else:
        map_file = os.path.join(path, "special_tokens_map.json")
        if os.path.isfile(map_file):
            for key, value in _read_json_object(map_file).items():
                _check_special_entry(map_file, key, value)
                if key == "additional_special_tokens":
                    for t in value:
                        t = _special_value(t)
                        if str(t) not in [str(a) for a in additional]:
                            additional.append(t)
                elif key in _SPECIAL_KEYS:
                    special[key] = _special_value(value)
        added_file = os.path.join(path, "added_tokens.json")
        if os.path.isfile(added_file):
            names = {str(v) for v in special.values() if v is not None} | {str(a) for a in additional}
            for content, index in _added_tokens(added_file).items():
                is_special = content in names
                added_decoder[int(index)] = AddedToken(content, normalized=not is_special, special=is_special)
    # a special token given as a plain string takes the flags of the saved added token of that content
    by_content = {t.content: t for t in added_decoder.values()}
    for key, value in list(special.items()):
        if isinstance(value, str) and value in by_content:
            special[key] = by_content[value]
    for key in list(overrides):
        if key in _SPECIAL_KEYS:
            special[key] = overrides.pop(key)
    kwargs.update(overrides)

    if cls is XGLMTokenizer:
        files = {"vocab_file": os.path.join(path, "sentencepiece.bpe.model")}
    elif cls is BertTokenizer:
        files = {"vocab_file": os.path.join(path, "vocab.txt")}
    else:
        files = {"vocab_file": os.path.join(path, "vocab.json"), "merges_file": os.path.join(path, "merges.txt")}
    return cls(**files, special_tokens=special, additional_special_tokens=additional,
               added_tokens_decoder=added_decoder, **kwargs)
