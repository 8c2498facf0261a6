"""What one scoring run computes: `ScoreJob` (a small picklable description: model, format, token budget,
...) and `Scorer` (the loaded model and tokenizer) whose `score_window` turns a window of raw lines into
records, one batch at a time.

Batches by token budget: the window's lines are sorted by length and cut into forward passes of at most
`batch_tokens` positions (rows x the longest row, padding included), so short lines make large
products and a long line never pads a batch of short ones; `batch_size`, when given, also caps the
lines per pass. Each batch reports its padding (positions computed for no token).

Every runner (one process, `--workers`, Dask) calls the same `Scorer.score_window`, so their records
are the same; only batch composition differs, hence at most float32 rounding.

A record holds only deterministic fields: {"index", ...scores} or {"index", "error"}.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .lines import LineError, decode_line

KINDS = ("causal", "masked", "classify", "seq2seq")
# Positions (rows x longest row) per forward pass. On 1,000 lines of prose (8-80 words) in windows of
# 512 lines, 1024 / 2048 / 4096 / 8192 pad 3.6 / 7.2 / 12.6 / 19.6% of the positions; 2048 keeps the
# products over 1,000 rows at little padding (bench/bench_score_e2e.py times whole runs).
DEFAULT_BATCH_TOKENS = 2048


@dataclass(frozen=True)
class ScoreJob:
    model: str                      # a checkpoint directory every process can read, or a cached repo id
    architecture: Optional[str] = None
    dtype: str = "float32"
    format: str = "text"            # text | ids | jsonl
    batch_tokens: int = DEFAULT_BATCH_TOKENS  # positions per forward pass, padding included
    batch_size: Optional[int] = None  # at most this many lines per forward pass (None: the budget alone)
    stride: Optional[int] = None    # sliding-window stride for causal texts longer than the position table
    cache_dir: Optional[str] = None

    def load(self) -> "Scorer":
        return Scorer(self)


class Scorer:
    """A loaded ScoreJob. Raises ValueError / FileNotFoundError when the model or its set-up is unusable."""

    def __init__(self, job: ScoreJob):
        import refimpl

        self.job = job
        # memory-mapped: the processes of one run share the weights' pages (scoring never writes to them)
        self.model = refimpl.from_pretrained(job.model, architecture=job.architecture, dtype=job.dtype,
                                             cache_dir=job.cache_dir, mmap=True)
        self.kind = score_kind(self.model)
        check_stride(job.stride, self.model, self.kind)
        self.tokenizer = job_tokenizer(job, needed_for="masked-LM scoring needs it (for its mask token)"
                                       if self.kind == "masked" else None)
        if self.kind == "seq2seq" and job.format != "jsonl":
            raise ValueError(f"{self.model.architecture} scores source/target pairs: pass --format jsonl with "
                             '{"source": ..., "target": ...} (or "source_ids"/"target_ids") per line')

    # ------------------------------------------------------------ one window of lines

    def score_window(self, lines: Sequence[Tuple[int, bytes]]) -> Iterator["Batch"]:
        """A Batch (records, tokens, padding) per forward pass, for the raw lines [(index, bytes)] of one
        read-ahead window.

        Error records come first; the scorable items are sorted by length and grouped by the token budget
        (refimpl.batch.jobs.budget_batches). Each record appears once; the caller restores input order."""
        items, errors = parse_window(lines, self.parse)
        if errors:
            yield Batch(errors, 0, 0)
        items.sort(key=lambda item: item_length(item[1]))
        one_at_a_time = self.kind in ("masked", "classify")  # each text is its own forward pass(es)
        for chunk in budget_batches(items, self.job.batch_tokens, 1 if one_at_a_time else self.job.batch_size):
            yield Batch(self.score_batch(chunk), sum(item_length(item) for _, item in chunk),
                        0 if one_at_a_time else padding(chunk, self.position_limit()))

    def position_limit(self) -> float:  # a causal text longer than this is scored alone (sliding window)
        if self.kind != "causal":
            return float("inf")
        return getattr(self.model.config, "max_position_embeddings", None) or float("inf")

    def score_batch(self, chunk):  # [(index, item)] -> [record]
        if self.kind == "causal":
            return causal_records(self.model, chunk, self.job.stride)
        if self.kind == "seq2seq":
            return seq2seq_records(self.model, chunk)
        if self.kind == "masked":
            return [masked_record(self.model, self.tokenizer, index, ids) for index, ids in chunk]
        return [classify_record(self.model, index, ids) for index, ids in chunk]

    # ------------------------------------------------------------ one line

    def parse(self, line: str):
        """A decoded line -> token ids (or (source ids, target ids) for seq2seq), checked; or LineError."""
        if self.kind == "seq2seq":
            source, target = parse_pair(line, self.tokenizer)
            check_ids(source, self.model.config, min_tokens=1,
                      limit=self.model.config.max_encoder_position_embeddings, what="source")
            check_ids(target, self.model.config, min_tokens=1,
                      limit=self.model.config.max_decoder_position_embeddings, what="target")
            return source, target
        ids = parse_line(line, self.job.format, self.tokenizer)
        if self.kind == "causal":  # longer than the position table: a sliding window
            check_ids(ids, self.model.config, fits=False)
        else:  # an encoder reads the whole text at once
            check_ids(ids, self.model.config, min_tokens=1)
        return ids


def parse_window(lines, parse) -> Tuple[list, List[dict]]:
    """Raw lines [(index, bytes)] -> ([(index, parse(text))], [error record]): a line that cannot be decoded
    or parsed gets {"index", "error": "line N: why"}; `score` and `generate` share this treatment."""
    items, errors = [], []
    for index, raw in lines:
        try:
            items.append((index, parse(decode_line(raw))))
        except LineError as err:
            errors.append({"index": index, "error": f"line {index + 1}: {err}"})
    return items, errors


def job_tokenizer(job, needed_for: Optional[str] = None):
    """The checkpoint's tokenizer, or None when it has none usable and neither `--format text` nor
    `needed_for` (why the job needs one anyway) requires it: then ValueError saying what to pass instead."""
    import refimpl

    try:
        return refimpl.load_tokenizer(job.model, cache_dir=job.cache_dir)
    except (FileNotFoundError, ValueError) as err:
        if job.format == "text" or needed_for:
            raise ValueError(f"{job.model} has no usable tokenizer ({err}); " + (
                needed_for or "pass token ids (--format ids, or --format jsonl with \"input_ids\")")) from None
        return None


def check_stride(stride, model, kind) -> None:  # before any work, not at the first long line
    if stride is None:
        return
    if kind != "causal":
        raise ValueError(f"stride (--stride) applies to causal language models only; {model.architecture} is not one")
    limit = getattr(model.config, "max_position_embeddings", None)
    if not (isinstance(stride, int) and 1 <= stride <= (limit or stride + 1) - 1):
        raise ValueError(f"stride (--stride) must be an integer in 1..{limit - 1} (the position table of {limit} "
                         f"minus one), got {stride!r}")


class Batch(NamedTuple):
    """What one forward pass produced: its records, the tokens they hold, the padding positions computed."""
    records: List[dict]
    tokens: int
    padding: int


def item_length(item) -> int:  # token ids, or a (source, target) pair
    return len(item[0]) + len(item[1]) if isinstance(item, tuple) else len(item)


def item_width(item) -> int:  # positions one row of a batch needs: its ids, or its longer side
    return max(len(item[0]), len(item[1])) if isinstance(item, tuple) else len(item)


def budget_batches(items, budget: int, max_lines: Optional[int] = None) -> Iterator[list]:
    """Cut items [(index, ids or (source, target))], sorted by length, into consecutive batches of at most
    `budget` positions (rows x the widest row) and `max_lines` rows. An item wider than the budget is a
    batch of its own."""
    if budget < 1:
        raise ValueError(f"--batch-tokens must be at least 1, got {budget}")
    batch, widest = [], 0
    for item in items:
        rows, width = len(batch) + 1, max(widest, item_width(item[1]))
        if batch and (rows * width > budget or (max_lines is not None and rows > max_lines)):
            yield batch
            batch, width = [], item_width(item[1])
        batch.append(item)
        widest = width
    if batch:
        yield batch


def padding(chunk, limit: float = float("inf")) -> int:
    """Positions a right-padded forward pass of `chunk` computes for no token (per side for pairs); a causal
    text longer than `limit` runs alone, unpadded (sliding windows)."""
    sides = list(zip(*(item for _, item in chunk))) if isinstance(chunk[0][1], tuple) else [
        [ids for _, ids in chunk if len(ids) <= limit]]
    return sum(len(side) * max(map(len, side)) - sum(map(len, side)) for side in sides if side)


def score_kind(model) -> str:  # -> one of KINDS, from the family's declared heads
    spec = model.spec
    for kind, heads in (("causal", spec.causal_lm), ("masked", spec.masked_lm),
                        ("classify", spec.sequence_classifiers)):
        if model.architecture in heads:
            return kind
    if model.config.is_encoder_decoder and model.architecture in spec.generates:
        return "seq2seq"
    scorable = sorted([*spec.causal_lm, *spec.masked_lm, *spec.sequence_classifiers,
                       *(spec.generates if model.config.is_encoder_decoder else ())])
    raise ValueError(f"score needs a causal LM, a seq2seq LM, a masked LM or a sequence classifier; "
                     f"{model.architecture} is none "
                     + (f"(pick one with --architecture: {', '.join(scorable)})" if scorable else
                        f"and no {spec.model_type} class can be scored"))


# ---------------------------------------------------------------- parsing one line

def parse_line(line: str, fmt: str, tokenizer):  # -> list of token ids
    if fmt == "ids":
        try:
            return [int(t) for t in line.replace(",", " ").split()]
        except ValueError:
            raise LineError("expected whitespace-separated integer token ids") from None
    if fmt == "jsonl":
        obj = parse_json(line)
        if isinstance(obj.get("input_ids"), list):
            return int_list(obj["input_ids"], "input_ids")
        if not isinstance(obj.get("text"), str):
            raise LineError('expected an object with "text" (a string) or "input_ids" (a list of integers)')
        line = obj["text"]
    return tokenize(line, tokenizer)


def parse_json(line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise LineError(f"not valid JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:
        raise LineError("not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def int_list(value, name: str) -> list:
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise LineError(f"{name} must be a list of integers")
    return value


def tokenize(text: str, tokenizer) -> list:
    if tokenizer is None:
        raise LineError("this model directory has no tokenizer files; pass token ids")
    return list(tokenizer(text)["input_ids"])


def parse_pair(line: str, tokenizer):  # -> (source ids, target ids); the target as upstream's text_target
    obj = parse_json(line)
    pair = []
    for side in ("source", "target"):
        if isinstance(obj.get(f"{side}_ids"), list):
            pair.append(int_list(obj[f"{side}_ids"], f"{side}_ids"))
        elif isinstance(obj.get(side), str):
            pair.append(tokenize(obj[side], tokenizer))
        else:
            raise LineError(f'expected "{side}" (a string) or "{side}_ids" (a list of integers)')
    return tuple(pair)


def check_ids(ids, config, fits=True, min_tokens=2, limit=None, what="text"):
    if len(ids) < min_tokens:
        raise LineError(f"{what}: {len(ids)} token(s): scoring needs at least {min_tokens}"
                        + (" (the first one is only context)" if min_tokens == 2 else ""))
    bad = [t for t in ids if not 0 <= t < config.vocab_size]
    if bad:
        raise LineError(f"{what}: token id {bad[0]} is outside the vocabulary of {config.vocab_size}")
    limit = limit or getattr(config, "max_position_embeddings", None)
    if fits and limit is not None and len(ids) > limit:
        raise LineError(f"{what}: {len(ids)} tokens exceed the model's limit of {limit} positions")


# ---------------------------------------------------------------- records

def likelihood_record(index, logprobs, **extra):  # logprobs [n] of the scored tokens
    ll, n = float(np.sum(logprobs, dtype=np.float64)), len(logprobs)
    return {"index": index, "log_likelihood": ll, "num_tokens": n, "perplexity": math.exp(-ll / n), **extra}


def padded(rows: Iterable[list], fill: int, left: bool = False):  # -> (ids [B, T], mask [B, T])
    """Rows padded to one length: on the right (an encoder, or scoring), or on the left (a decoder-only
    model continuing from the right end, `refimpl generate`)."""
    rows = list(rows)
    width = max(len(r) for r in rows)
    batch = np.full((len(rows), width), fill, dtype=np.int64)
    mask = np.zeros_like(batch)
    for r, ids in enumerate(rows):
        cols = slice(width - len(ids), width) if left else slice(0, len(ids))
        batch[r, cols] = ids
        mask[r, cols] = 1
    return batch, mask


def causal_records(model, chunk, stride=None):  # [(index, ids)] -> [record]
    """One right-padded forward for the texts that fit the position table; a longer text alone with a
    sliding window (refimpl.scoring.sliding_token_logprobs)."""
    from ..scoring import sliding_token_logprobs, token_logprobs

    limit = getattr(model.config, "max_position_embeddings", None) or float("inf")
    records = [likelihood_record(index, sliding_token_logprobs(model, ids, stride=stride))
               for index, ids in chunk if len(ids) > limit]
    fit = [(index, ids) for index, ids in chunk if len(ids) <= limit]
    if fit:
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        batch, mask = padded((ids for _, ids in fit), pad)
        logprobs = token_logprobs(model, batch, mask)  # [b, T - 1]
        records += [likelihood_record(index, logprobs[r, :len(ids) - 1]) for r, (index, ids) in enumerate(fit)]
    return records


def seq2seq_records(model, chunk):  # [(index, (source, target))] -> [record] with per-token log-probs
    """log p(target | source) by teacher forcing; global attention on the source's first token (as LED's
    summarisation checkpoints use it and `refimpl generate` does)."""
    from ..scoring import seq2seq_token_logprobs

    source, mask = padded((s for _, (s, _) in chunk), model.config.pad_token_id)
    labels, real = padded((t for _, (_, t) in chunk), -100)
    glob = np.zeros_like(mask)
    glob[:, 0] = 1
    logprobs = seq2seq_token_logprobs(model, source, labels, mask, glob)  # [b, T]
    return [likelihood_record(index, logprobs[r, :len(t)], token_logprobs=[float(v) for v in logprobs[r, :len(t)]])
            for r, (index, (_, t)) in enumerate(chunk)]


def masked_record(model, tokenizer, index, ids):  # pseudo-log-likelihood of one text
    from ..scoring import pseudo_log_likelihood

    special = np.array(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True), bool)
    n = int((~special).sum())
    if n == 0:
        return {"index": index, "error": f"line {index + 1}: no token to score besides special tokens"}
    pll = float(np.sum(pseudo_log_likelihood(model, ids, tokenizer.mask_token_id, scored=~special), dtype=np.float64))
    return {"index": index, "pseudo_log_likelihood": pll, "num_tokens": n, "pseudo_perplexity": math.exp(-pll / n)}


def classify_record(model, index, ids):  # label and probabilities of one text
    from ..scoring import classify

    logits, probs = classify(model, np.array([ids]))
    record = {"index": index, "logits": [float(v) for v in logits[0]]}
    if model.config.problem_type != "regression" and model.config.num_labels > 1:
        labels = model.config.id2label or {i: f"LABEL_{i}" for i in range(model.config.num_labels)}
        record["label"] = labels[int(np.argmax(probs[0]))]
        record["probabilities"] = {labels[i]: float(p) for i, p in enumerate(probs[0])}
    return record
