"""Beam search: `generation/beam_search.py` (BeamHypotheses, BeamSearchScorer) and GenerationMixin.beam_search /
beam_sample (transformers 4.37.2)."""
from __future__ import annotations

import numpy as np

from ..ops import log_softmax, softmax
from .config import eos_list
from .outputs import Record
from .processors import apply_all
from .search import draw


class BeamHypotheses:
    """beam_search.py BeamHypotheses: the best `num_beams` finished sequences of one batch row."""

    def __init__(self, num_beams, length_penalty, early_stopping, max_length):
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.max_length = max_length
        self.beams = []  # (score, tokens, beam_indices)
        self.worst_score = 1e9

    def add(self, tokens, sum_logprobs, beam_indices, generated_len):
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens, beam_indices))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len, prompt_len):
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.length_penalty <= 0.0:
            highest = best_sum_logprobs / (cur_len - prompt_len) ** self.length_penalty
        else:  # "never" with a positive length penalty: the best possible score at max_length
            highest = best_sum_logprobs / (self.max_length - prompt_len) ** self.length_penalty
        return self.worst_score >= highest


class BeamSearchScorer:
    """beam_search.py BeamSearchScorer: keeps `num_beams` live beams and the finished hypotheses per batch row
    (per batch row and beam group in group beam search: `num_beams / num_beam_groups` beams each)."""

    def __init__(self, batch, cfg, prompt_len, num_beam_groups=1):
        if num_beam_groups > cfg.num_beams or cfg.num_beams % num_beam_groups:
            raise ValueError(f"num_beam_groups ({num_beam_groups}) must divide num_beams ({cfg.num_beams})")
        self.batch, self.groups, self.cfg, self.prompt_len = batch, num_beam_groups, cfg, prompt_len
        self.beams = cfg.num_beams // num_beam_groups  # upstream's group_size
        self.eos, self.pad = eos_list(cfg.eos_token_id), cfg.pad_token_id
        self.hyps = [self._hypotheses() for _ in range(batch * num_beam_groups)]  # row b, group g at b * G + g
        self.done = np.zeros(batch * num_beam_groups, dtype=bool)

    def _hypotheses(self):
        return BeamHypotheses(self.beams, self.cfg.length_penalty, self.cfg.early_stopping, self.cfg.max_length)

    def process(self, input_ids, top_scores, next_tokens, next_indices, beam_indices, group=0):
        """BeamSearchScorer.process: the best candidates of each row [B, 2K] -> the next beams.

        A candidate ending in eos becomes a finished hypothesis (only if among the first num_beams); the
        others fill the row's beams in rank order. Returns (scores, tokens, source rows), each [B * K]
        (rows of `input_ids`, which holds this group's beams only in group beam search).
        """
        beams, cur_len = self.beams, input_ids.shape[1] + 1
        new_scores = np.zeros((self.batch, beams), dtype=top_scores.dtype)
        new_tokens = np.zeros((self.batch, beams), dtype=np.int64)
        new_index = np.zeros((self.batch, beams), dtype=np.int64)
        for b in range(self.batch):
            h = b * self.groups + group
            if self.done[h]:
                if self.eos == [] or self.pad is None:
                    raise ValueError("generated beams >= num_beams, but eos_token_id and pad_token_id are not both set")
                new_tokens[b, :] = self.pad
                continue
            slot = 0
            for rank, (token, score, index) in enumerate(zip(next_tokens[b], top_scores[b], next_indices[b])):
                row = b * beams + index
                if token in self.eos:
                    if rank < beams:
                        self._finished(h, input_ids, row, float(score), beam_indices, cur_len)
                else:
                    new_scores[b, slot], new_tokens[b, slot], new_index[b, slot] = score, token, row
                    slot += 1
                if slot == beams:
                    break
            self._after_row(b, input_ids, new_scores, new_tokens, new_index)
            if slot < beams:
                raise ValueError(f"at most {beams} of the candidates {next_tokens[b].tolist()} may be eos tokens")
            self.done[h] = self.done[h] or self.hyps[h].is_done(float(top_scores[b].max()), cur_len, self.prompt_len)
        return new_scores.reshape(-1), new_tokens.reshape(-1), new_index.reshape(-1)

    def _finished(self, h, input_ids, row, score, beam_indices, cur_len):  # a beam that just produced eos
        self.hyps[h].add(input_ids[row].copy(), score, beam_indices[row] + (row,),
                                       generated_len=cur_len - self.prompt_len)

    def _after_row(self, b, input_ids, new_scores, new_tokens, new_index):  # constrained beam search re-ranks here
        pass

    def _close(self, input_ids, beam_scores, beam_indices):  # the live beams join the finished hypotheses
        for h in range(self.batch * self.groups):
            if not self.done[h]:
                for i in range(self.beams):
                    row = h * self.beams + i
                    self.hyps[h].add(input_ids[row], float(beam_scores[row]), beam_indices[row],
                                     input_ids.shape[1] - self.prompt_len)

    def finalize(self, input_ids, beam_scores, beam_indices):
        """BeamSearchScorer.finalize: -> (sequences [B * n, L], sequences_scores [B * n], beam_indices [B * n, L]),
        n = num_return_sequences, padded with pad after an eos; scores in float32, as upstream."""
        self._close(input_ids, beam_scores, beam_indices)
        keep = self.cfg.num_return_sequences
        best, best_scores, best_indices = [], np.zeros(self.batch * keep, dtype=np.float32), []
        for b in range(self.batch):
            candidates = [beam for h in self.hyps[b * self.groups:(b + 1) * self.groups] for beam in h.beams]
            ranked = sorted(candidates, key=lambda x: x[0])
            for j in range(keep):
                score, tokens, indices = ranked.pop()
                best.append(tokens)
                best_indices.append(indices)
                best_scores[b * keep + j] = score
        lengths = np.array([len(t) for t in best])
        if lengths.min() != lengths.max() and self.pad is None:
            raise ValueError("pad_token_id must be set when beams have different lengths")
        width = min(lengths.max() + 1, self.cfg.max_length)
        sequences = np.full((len(best), width), self.pad if lengths.min() != lengths.max() else 0, dtype=np.int64)
        # upstream: no beam indices at all when the best hypothesis has none (constrained search's fallback)
        indices_out = None if best_indices[0] is None else np.full((len(best), width), -1, dtype=np.int64)
        for i, (tokens, idx) in enumerate(zip(best, best_indices)):
            sequences[i, :lengths[i]] = tokens
            if indices_out is not None and idx is not None:
                indices_out[i, :len(idx)] = idx
            if lengths[i] < width:
                sequences[i, lengths[i]] = self.eos[0]
        return sequences, best_scores, indices_out


def beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder, warpers=None, rng=None):
    """GenerationMixin.beam_search, and GenerationMixin.beam_sample when `warpers` (and `rng`, see search.draw)
    are given: one cached step per token, the scorer picks the beams."""
    beams = cfg.num_beams
    scorer = BeamSearchScorer(batch, cfg, input_ids.shape[1])
    beam_scores = initial_beam_scores(batch, beams, first_only=warpers is None)  # beam_sample: every beam at 0
    beam_indices = [()] * (batch * beams)
    record = Record(cfg, is_encoder_decoder)
    while True:
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        processed = apply_all(processors, input_ids, log_softmax(out.logits[:, -1, :]))  # [B * K, V]
        if warpers is not None:
            processed = apply_all(warpers, input_ids, processed)
        record.add(processed, out)
        vocab = processed.shape[-1]
        total = (processed + beam_scores[:, None]).reshape(batch, beams * vocab)  # [B, K * V]
        if warpers is None:
            top = topk_indices(total, max(2, 1 + len(scorer.eos)) * beams)  # [B, 2K]
            top_scores = np.take_along_axis(total, top, axis=1)
        else:
            top = draw(softmax(total), 2 * beams, rng)  # [B, 2K] torch.multinomial, then sorted by score
            top_scores = np.take_along_axis(total, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        beam_scores, beam_next, beam_idx = scorer.process(input_ids, top_scores, top % vocab, top // vocab,
                                                          beam_indices)
        input_ids, beam_indices = advance_beams(decoder, input_ids, beam_indices, beam_idx, beam_next)
        if scorer.done.all() or input_ids.shape[1] >= cfg.max_length:
            break
    sequences, sequences_scores, indices_out = scorer.finalize(input_ids, beam_scores, beam_indices)
    return record.output(decoder, sequences, beam=(sequences_scores, indices_out))


def initial_beam_scores(batch, beams, first_only=True):  # -> [B * K]
    """0 for the first beam of each row, -1e9 for the others (so the first step expands one beam), or 0 for
    all (beam sampling). float32 as upstream's torch.zeros(..., dtype=torch.float), even in a float64 run:
    promoted at the first addition."""
    scores = np.zeros((batch, beams), dtype=np.float32)
    if first_only:
        scores[:, 1:] = -1e9
    return scores.reshape(-1)


def advance_beams(decoder, input_ids, beam_indices, beam_idx, beam_next):  # -> (input_ids [B*K, L+1], beam_indices)
    """The kept beams (rows beam_idx) take their next tokens; the cache follows them."""
    input_ids = np.concatenate([input_ids[beam_idx], beam_next[:, None]], axis=1)
    decoder.reorder(beam_idx)
    return input_ids, [beam_indices[i] + (i,) for i in beam_idx]


def topk_indices(scores, k):  # [N, M] -> [N, k] torch.topk(largest=True, sorted=True); ties: the lower index first
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]
