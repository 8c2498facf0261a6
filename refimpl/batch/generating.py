"""What one `refimpl generate` run computes: `GenerateJob` (picklable, like ScoreJob) and `Continuer` (the
loaded model and tokenizer), whose `score_window` turns a window of raw lines into continuation records.

It is the runners' interface (refimpl/batch/run.py, worker.py, cluster.py call `job.load().score_window`),
so `generate` streams, resumes, runs in `--workers` processes or on Dask exactly as `score` does, with the
same per-line error records {"index", "error": "line N: ..."}.

A record: {"index", "new_token_ids", "continuation"} ("continuation": the decoded text, when the model has a
tokenizer). The new tokens stop at the first eos (included): what a row receives after its eos is padding,
which depends on the other rows of its batch. With do_sample each line is generated on its own from a
generator seeded by (seed, line index), so its continuation does not depend on batching, --workers or
--resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .jobs import Batch, check_ids, job_tokenizer, padded, parse_line, parse_window
from .lines import LineError


@dataclass(frozen=True)
class GenerateJob:
    model: str                      # a checkpoint directory every process can read, or a cached repo id
    architecture: Optional[str] = None
    dtype: str = "float32"
    format: str = "text"            # text | ids | jsonl ({"text": ...} or {"input_ids": [...]})
    batch_size: int = 8
    cache_dir: Optional[str] = None
    options: Tuple[Tuple[str, object], ...] = ()  # generate() keyword arguments, e.g. (("max_new_tokens", 20),)
    seed: int = 0                   # sampling: line i draws from numpy's default_rng([seed, i])

    def load(self) -> "Continuer":
        return Continuer(self)


class Continuer:
    """A loaded GenerateJob. Raises ValueError / FileNotFoundError when the model, its tokenizer or the
    generation options are unusable: before any line is read."""

    def __init__(self, job: GenerateJob):
        import refimpl

        from ..generation import GenerationConfig
        from ..generation.config import eos_list, position_limit
        from ..generation.generate import check_can_generate

        self.job = job
        if isinstance(job.batch_size, bool) or not isinstance(job.batch_size, int) or job.batch_size < 1:
            raise ValueError(f"batch_size (--batch-size) must be an integer >= 1, got {job.batch_size!r}")
        self.model = refimpl.from_pretrained(job.model, architecture=job.architecture, dtype=job.dtype,
                                             cache_dir=job.cache_dir)
        check_can_generate(self.model)
        self.tokenizer = job_tokenizer(job)
        self.options = dict(job.options)
        cfg, _ = GenerationConfig.for_model(self.model).updated(**self.options)
        cfg.validate(self.model.config)  # the options upstream refuses, before any work
        cfg.check_batch(job.batch_size, self.model.config.vocab_size)
        self.sampling = bool(cfg.do_sample)
        self.eos = eos_list(cfg.eos_token_id)
        self.max_new_tokens = cfg.max_new_tokens if cfg.max_new_tokens is not None else 0
        self.encoder_decoder = bool(self.model.config.is_encoder_decoder)
        self.limit = position_limit(self.model.config)

    def score_window(self, lines: Sequence[Tuple[int, bytes]]) -> Iterator[Batch]:
        """A Batch (records, new tokens, the prompts' padding positions) per generate() call for the raw lines
        [(index, bytes)] of one window; error records first, then the prompts by length, `batch_size` at a
        time (one at a time when sampling)."""
        items, errors = parse_window(lines, self.parse)
        if errors:
            yield Batch(errors, 0, 0)
        items.sort(key=lambda item: len(item[1]))
        size = 1 if self.sampling else self.job.batch_size
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            records = self.generate_batch(chunk)
            width = max(len(ids) for _, ids in chunk)
            yield Batch(records, sum(len(r["new_token_ids"]) for r in records),
                        sum(width - len(ids) for _, ids in chunk))

    def parse(self, line: str) -> list:  # a decoded line -> prompt token ids, checked; or LineError
        ids = parse_line(line, self.job.format, self.tokenizer)
        config = self.model.config
        if self.encoder_decoder:  # the prompt is the encoder's input
            check_ids(ids, config, min_tokens=1, limit=config.max_encoder_position_embeddings, what="prompt")
            return ids
        check_ids(ids, config, min_tokens=1, fits=False, what="prompt")
        if self.limit is not None and len(ids) + self.max_new_tokens > self.limit:
            raise LineError(f"prompt: {len(ids)} tokens + {self.max_new_tokens} new tokens exceed the model's limit "
                            f"of {self.limit} positions")
        return ids

    def generate_batch(self, chunk) -> List[dict]:  # [(index, ids)] -> [record]
        model, pad = self.model, self.model.config.pad_token_id
        batch, mask = padded((ids for _, ids in chunk), 0 if pad is None else pad, left=not self.encoder_decoder)
        extra = {}
        if model.config.model_type == "led":  # LED's usual global attention on the first token (<s>)
            extra["global_attention_mask"] = np.zeros_like(mask)
            extra["global_attention_mask"][:, 0] = 1
        rng = np.random.default_rng([self.job.seed, chunk[0][0]]) if self.sampling else None
        out = model.generate(batch, attention_mask=mask, generator=rng, **extra, **self.options)
        first_new = 1 if self.encoder_decoder else batch.shape[1]  # after the decoder's start token
        return [self.record(index, out[r, first_new:]) for r, (index, _) in enumerate(chunk)]

    def record(self, index: int, new) -> dict:
        new = [int(t) for t in new]
        ends = [i for i, t in enumerate(new) if t in self.eos]
        new = new[:ends[0] + 1] if ends else new
        row = {"index": index, "new_token_ids": new}
        if self.tokenizer is not None:
            row["continuation"] = self.tokenizer.decode(new, skip_special_tokens=True)
        return row

