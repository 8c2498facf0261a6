"""GenerationMixin.greedy_search and GenerationMixin.sample (transformers 4.37.2 `generation/utils.py`), the
end-of-sequence bookkeeping they share with contrastive search, and the random draws of every sampling strategy."""
from __future__ import annotations

import numpy as np

from ..ops import softmax
from .config import eos_list
from .outputs import Record
from .processors import apply_all


class Unfinished:
    """The rows still generating: after an eos a row only receives pad (greedy, sampling, contrastive)."""

    def __init__(self, cfg, rows):
        self.eos, self.pad = np.array(eos_list(cfg.eos_token_id), dtype=np.int64), cfg.pad_token_id
        self.rows = np.ones(rows, dtype=np.int64)  # [N] 1 = still generating

    def append(self, input_ids, next_tokens):  # [N, S], [N] -> [N, S + 1]
        if self.eos.size:
            if self.pad is None:
                raise ValueError("eos_token_id is set, so pad_token_id must be set too")
            next_tokens = next_tokens * self.rows + self.pad * (1 - self.rows)
            self.rows = self.rows * (~np.isin(next_tokens, self.eos)).astype(np.int64)
        return np.concatenate([input_ids, next_tokens[:, None]], axis=1)

    def stop(self, input_ids, cfg):  # upstream: every row finished, or MaxLengthCriteria
        return self.rows.max() == 0 or input_ids.shape[1] >= cfg.max_length


def greedy_or_sample(decoder, input_ids, cfg, processors, warpers, rng, is_encoder_decoder):
    """GenerationMixin.greedy_search (warpers None) and GenerationMixin.sample."""
    unfinished, record = Unfinished(cfg, input_ids.shape[0]), Record(cfg, is_encoder_decoder)
    while True:
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        step_scores = apply_all(processors, input_ids, out.logits[:, -1, :].copy())  # [N, V]
        if warpers is None:
            next_tokens = np.argmax(step_scores, axis=-1)
        else:
            step_scores = apply_all(warpers, input_ids, step_scores)
            next_tokens = draw(softmax(step_scores), 1, rng)[:, 0]
        record.add(step_scores, out)
        input_ids = unfinished.append(input_ids, next_tokens)
        if unfinished.stop(input_ids, cfg):
            break
    return record.output(decoder, input_ids)


def draw(probs, num_samples, rng):  # probs [N, V] -> token ids [N, num_samples], no token twice in a row
    """torch.multinomial(probs, num_samples) (without replacement): the seam for every random draw.

    `rng` is a numpy Generator, or any object with a method `draw(probs, num_samples)` returning the
    indices [N, num_samples]: tests replay upstream's torch.multinomial results through it, checking
    that the probabilities offered are upstream's. A zero-probability token is never drawn.
    """
    custom = getattr(rng, "draw", None)
    if custom is not None:
        return np.asarray(custom(probs, num_samples), dtype=np.int64).reshape(probs.shape[0], num_samples)
    probs = probs.astype(np.float64)
    if num_samples == 1:  # inverse transform sampling of one uniform draw per row
        cumulative = np.cumsum(probs, axis=-1)
        u = rng.random(probs.shape[0]) * cumulative[:, -1]
        return np.array([[np.searchsorted(c, x, side="right")] for c, x in zip(cumulative, u)], dtype=np.int64)
    if ((probs > 0).sum(-1) < num_samples).any():
        raise ValueError(f"cannot draw {num_samples} distinct tokens: fewer have a non-zero probability")
    keys = probs / rng.exponential(size=probs.shape)  # the exponential race: the num_samples largest win, in order
    return np.argsort(-keys, axis=-1, kind="stable")[:, :num_samples]
