"""XGLM's sentencepiece tokenizer with fairseq ids (upstream models/xglm/tokenization_xglm.py, slow).

The sentencepiece model does the segmentation; the ids are fairseq's dictionary, not spm's:

    fairseq id | 0     | 1       | 2      | 3       | 4 ...             | vocab end ...
    token      | <s>   | <pad>   | </s>   | <unk>   | spm id 3 ... + 1   | <madeupword0..6>

i.e. id = spm_id + 1 (the "fairseq offset"), except spm's own id 0 (its unk) -> 3, and the first four
ids are fixed. Seven `<madeupwordN>` tokens (fairseq's padding of the dictionary to a multiple of 8)
follow the spm vocabulary. XGLM prepends `</s>` (not `<s>`) and appends nothing: `</s> A`, pairs
`</s> A </s></s> B`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from .base import Tokenizer, fairseq_special_tokens
from .bpe import _pop_special

SPIECE_UNDERLINE = "▁"
NUM_MADEUP_WORDS = 7
FAIRSEQ_OFFSET = 1
MAX_MODEL_BYTES = 1 << 30  # real sentencepiece models are a few MB


def load_sentencepiece(path: str):
    """sentencepiece.bpe.model -> SentencePieceProcessor, with clear errors."""
    import sentencepiece as spm

    if not os.path.isfile(path):  # a regular file (a FIFO would block open())
        raise ValueError(f"sentencepiece model not found: {path} (expected sentencepiece.bpe.model)")
    if os.path.getsize(path) > MAX_MODEL_BYTES:
        raise ValueError(f"{path} is larger than {MAX_MODEL_BYTES} bytes; not a sentencepiece model")
    sp = spm.SentencePieceProcessor()
    try:
        with open(path, "rb") as f:
            sp.LoadFromSerializedProto(f.read(MAX_MODEL_BYTES))
    except Exception as e:  # sentencepiece raises OSError/RuntimeError with terse messages
        raise ValueError(f"{path} is not a valid sentencepiece model: {e}") from None
    return sp


class XGLMTokenizer(Tokenizer):
    """XGLMTokenizer: sentencepiece segmentation, fairseq-aligned ids, `</s>` prepended."""

    default_special_tokens = fairseq_special_tokens()
    text_must_encode = True

    def __init__(self, vocab_file: str, special_tokens: Optional[dict] = None,
                 additional_special_tokens: Optional[list] = None, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = load_sentencepiece(vocab_file)
        sp_size = len(self.sp_model)
        self.fairseq_tokens_to_ids: Dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        madeup = [f"<madeupword{i}>" for i in range(NUM_MADEUP_WORDS)]
        for i, word in enumerate(madeup):
            self.fairseq_tokens_to_ids[word] = sp_size + i + FAIRSEQ_OFFSET
        self.fairseq_ids_to_tokens = {v: k for k, v in self.fairseq_tokens_to_ids.items()}
        # upstream __init__: the madeup words are appended to additional_special_tokens (no duplicates)
        extra = list(additional_special_tokens or [])
        present = {str(t.get("content") if isinstance(t, dict) else t) for t in extra}
        extra += [w for w in madeup if w not in present]
        special = dict(special_tokens or {})
        special.update(_pop_special(kwargs))
        self._init_base(special_tokens=special, additional_special_tokens=extra, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.sp_model) + FAIRSEQ_OFFSET + NUM_MADEUP_WORDS

    def get_vocab(self) -> Dict[str, int]:
        vocab = {self._id_to_token(i): i for i in range(self.vocab_size)}
        vocab.update(getattr(self, "added_tokens_encoder", {}))
        return vocab

    def _token_to_id(self, token: str) -> int:
        if token in self.fairseq_tokens_to_ids:
            return self.fairseq_tokens_to_ids[token]
        spm_id = self.sp_model.PieceToId(token)
        # tokenization_xglm.py: "Need to return unknown token if the SP model returned 0" (spm's id 0 only;
        # a model whose unk is not id 0 gets its unk shifted by one like any other piece)
        return spm_id + FAIRSEQ_OFFSET if spm_id else self.unk_token_id

    def _id_to_token(self, index: int) -> str:
        if index in self.fairseq_ids_to_tokens:
            return self.fairseq_ids_to_tokens[index]
        spm_id = index - FAIRSEQ_OFFSET
        if not 0 <= spm_id < len(self.sp_model):
            raise ValueError(f"token id {index} is outside the vocabulary [0, {self.vocab_size})")
        return self.sp_model.IdToPiece(spm_id)

    def _tokenize(self, text: str) -> List[str]:
        try:
            return self.sp_model.encode(text, out_type=str)
        except Exception as e:  # sentencepiece's C++ errors (RuntimeError, OSError) with terse messages
            raise ValueError(f"sentencepiece could not encode the text ({type(e).__name__}: {e})") from None

    def tokens_to_string(self, tokens: List[str]) -> str:
        return "".join(tokens).replace(SPIECE_UNDERLINE, " ").strip()

    def build_inputs_with_special_tokens(self, ids0, ids1=None):
        sep = [self.sep_token_id]
        if ids1 is None:
            return sep + ids0
        return sep + ids0 + sep + sep + ids1

    def create_token_type_ids_from_sequences(self, ids0, ids1=None):
        return [0] * len(self.build_inputs_with_special_tokens(ids0, ids1))

    def _template_special_mask(self, ids0, ids1):
        if ids1 is None:
            return [1] + [0] * len(ids0)
        return [1] + [0] * len(ids0) + [1, 1] + [0] * len(ids1)
