"""Beam search: `generation/beam_search.py` (BeamHypotheses, BeamSearchScorer) and
GenerationMixin.beam_search (transformers 4.37.2)."""
from __future__ import annotations

import numpy as np

from ..ops import log_softmax
from .config import eos_list
from .outputs import GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput, encoder_fields, step_extras
from .processors import apply_all


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
    """beam_search.py BeamSearchScorer: keeps `num_beams` live beams and the finished hypotheses per batch row."""

    def __init__(self, batch, cfg, prompt_len):
        self.batch, self.beams, self.cfg, self.prompt_len = batch, cfg.num_beams, cfg, prompt_len
        self.eos, self.pad = eos_list(cfg.eos_token_id), cfg.pad_token_id
        self.hyps = [BeamHypotheses(cfg.num_beams, cfg.length_penalty, cfg.early_stopping, cfg.max_length)
                     for _ in range(batch)]
        self.done = np.zeros(batch, dtype=bool)

    def process(self, input_ids, top_scores, next_tokens, next_indices, beam_indices):
        """BeamSearchScorer.process: the 2 * num_beams best candidates of each row [B, 2K] -> the next beams.

        A candidate ending in eos becomes a finished hypothesis (only if among the first num_beams); the
        others fill the row's beams in rank order. Returns (scores, tokens, source rows), each [B * K].
        """
        beams, cur_len = self.beams, input_ids.shape[1] + 1
        new_scores = np.zeros((self.batch, beams), dtype=top_scores.dtype)
        new_tokens = np.zeros((self.batch, beams), dtype=np.int64)
        new_index = np.zeros((self.batch, beams), dtype=np.int64)
        for b in range(self.batch):
            if self.done[b]:
                if self.eos == [] or self.pad is None:
                    raise ValueError("generated beams >= num_beams, but eos_token_id and pad_token_id are not both set")
                new_tokens[b, :] = self.pad
                continue
            slot = 0
            for rank, (token, score, index) in enumerate(zip(next_tokens[b], top_scores[b], next_indices[b])):
                row = b * beams + index
                if token in self.eos:
                    if rank < beams:
                        self.hyps[b].add(input_ids[row].copy(), float(score), beam_indices[row] + (row,),
                                         generated_len=cur_len - self.prompt_len)
                else:
                    new_scores[b, slot], new_tokens[b, slot], new_index[b, slot] = score, token, row
                    slot += 1
                if slot == beams:
                    break
            self.done[b] = self.done[b] or self.hyps[b].is_done(float(top_scores[b].max()), cur_len, self.prompt_len)
        return new_scores.reshape(-1), new_tokens.reshape(-1), new_index.reshape(-1)

    def finalize(self, input_ids, beam_scores, beam_indices):
        """BeamSearchScorer.finalize: -> (sequences [B * n, L], sequences_scores [B * n], beam_indices [B * n, L]),
        n = num_return_sequences, padded with pad after an eos; scores in float32, as upstream."""
        for b in range(self.batch):
            if not self.done[b]:  # the live beams join the finished hypotheses
                for i in range(self.beams):
                    row = b * self.beams + i
                    self.hyps[b].add(input_ids[row], float(beam_scores[row]), beam_indices[row],
                                     input_ids.shape[1] - self.prompt_len)
        keep = self.cfg.num_return_sequences
        best, best_scores, best_indices = [], np.zeros(self.batch * keep, dtype=np.float32), []
        for b in range(self.batch):
            ranked = sorted(self.hyps[b].beams, key=lambda x: x[0])
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
        indices_out = np.full((len(best), width), -1, dtype=np.int64)
        for i, (tokens, idx) in enumerate(zip(best, best_indices)):
            sequences[i, :lengths[i]] = tokens
            indices_out[i, :len(idx)] = idx
            if lengths[i] < width:
                sequences[i, lengths[i]] = self.eos[0]
        return sequences, best_scores, indices_out


def beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder):
    """GenerationMixin.beam_search: one cached step per token, the scorer picks the beams."""
    beams, eos = cfg.num_beams, eos_list(cfg.eos_token_id)
    scorer = BeamSearchScorer(batch, cfg, input_ids.shape[1])
    # upstream: torch.zeros(..., dtype=torch.float): float32 even in a float64 run (promoted at the first add)
    beam_scores = np.zeros((batch, beams), dtype=np.float32)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.reshape(-1)  # [B * K]
    beam_indices = [()] * (batch * beams)
    scores, attentions, cross, hidden = [], [], [], []
    while True:
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        processed = apply_all(processors, input_ids, log_softmax(out.logits[:, -1, :]))  # [B * K, V]
        scores.append(processed)
        a, c, h = step_extras(out, is_encoder_decoder)
        attentions.append(a), cross.append(c), hidden.append(h)
        vocab = processed.shape[-1]
        total = (processed + beam_scores[:, None]).reshape(batch, beams * vocab)  # [B, K * V]
        top = np.argsort(-total, axis=1, kind="stable")[:, :max(2, 1 + len(eos)) * beams]  # torch.topk(sorted=True)
        top_scores = np.take_along_axis(total, top, axis=1)
        beam_scores, beam_next, beam_idx = scorer.process(input_ids, top_scores, top % vocab, top // vocab,
                                                          beam_indices)
        input_ids = np.concatenate([input_ids[beam_idx], beam_next[:, None]], axis=1)
        decoder.reorder(beam_idx)
        beam_indices = [beam_indices[i] + (i,) for i in beam_idx]
        if scorer.done.all() or input_ids.shape[1] >= cfg.max_length:
            break

    sequences, sequences_scores, indices_out = scorer.finalize(input_ids, beam_scores, beam_indices)
    if not cfg.return_dict_in_generate:
        return sequences
    keep_scores = cfg.output_scores
    common = dict(sequences=sequences, sequences_scores=sequences_scores if keep_scores else None,
                  scores=tuple(scores) if keep_scores else None,
                  beam_indices=indices_out if keep_scores else None,
                  past_key_values=decoder.kwargs.get("past_key_values"))
    if is_encoder_decoder:
        return GenerateBeamEncoderDecoderOutput(
            **common, **encoder_fields(decoder, cfg),
            decoder_attentions=tuple(attentions) if cfg.output_attentions else None,
            cross_attentions=tuple(cross) if cfg.output_attentions else None,
            decoder_hidden_states=tuple(hidden) if cfg.output_hidden_states else None)
    return GenerateBeamDecoderOnlyOutput(
        **common, attentions=tuple(attentions) if cfg.output_attentions else None,
        hidden_states=tuple(hidden) if cfg.output_hidden_states else None)
