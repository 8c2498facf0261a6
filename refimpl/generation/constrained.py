"""GenerationMixin.constrained_beam_search and beam_search.py ConstrainedBeamSearchScorer (transformers 4.37.2).

Beam search in which each step also offers, for every beam, the tokens that advance its constraints
(constraints.py); the candidates are then ranked by constraint progress ("bank") first, score second, taking
the best of each bank in turn. A beam may only finish (eos) once it has fulfilled every constraint.
"""
from __future__ import annotations

import numpy as np

from ..ops import log_softmax
from .beam import BeamSearchScorer, advance_beams, initial_beam_scores, topk_indices
from .constraints import ConstraintListState
from .outputs import Record
from .processors import apply_all


class ConstrainedBeamSearchScorer(BeamSearchScorer):
    def __init__(self, batch, cfg, prompt_len, constraints):
        if cfg.num_beams <= 1:
            raise ValueError(f"constrained beam search (force_words_ids / constraints) needs num_beams > 1, got "
                             f"{cfg.num_beams}")
        if not constraints:
            raise ValueError("constrained beam search needs at least one constraint")
        super().__init__(batch, cfg, prompt_len)
        self.constraints = constraints
        self.vocab_scores = None  # [B * K, V] this step's scores of every token, set before process()

    def states(self, n):
        return [ConstraintListState([c.copy() for c in self.constraints]) for _ in range(n)]

    def completes(self, tokens) -> bool:  # check_completes_constraints
        state = self.states(1)[0]
        state.reset([int(t) for t in tokens])
        return state.completed

    def _finished(self, h, input_ids, row, score, beam_indices, cur_len):
        if self.completes(input_ids[row]):
            super()._finished(h, input_ids, row, score, beam_indices, cur_len)

    def _after_row(self, b, input_ids, new_scores, new_tokens, new_index):
        new_scores[b], new_tokens[b], new_index[b] = self.step_sentence_constraint(
            b, input_ids, new_scores[b], new_tokens[b], new_index[b])

    def step_sentence_constraint(self, b, input_ids, beam_scores, beam_tokens, beam_index):
        """ConstrainedBeamSearchScorer.step_sentence_constraint: adds, for each beam of row b, the tokens that
        advance its constraints, and keeps K of all candidates, banks interleaved, best score first in each."""
        k = len(beam_index)
        start = b * k
        hypotheses = np.concatenate([input_ids[beam_index], beam_tokens[:, None]], axis=1)  # [K, S + 1]
        seen = hypotheses.tolist()
        topk_states = self.states(k)
        new_states, new_index, new_tokens, new_scores = [], [], [], []
        for i, previous in enumerate(input_ids[start:start + k].tolist()):
            topk_states[i].reset(hypotheses[i].tolist())
            advance_state = self.states(1)[0]
            advance_state.reset(previous)
            if advance_state.completed:
                continue
            for token in advance_state.advance():
                state = advance_state.copy(stateful=True)
                state.add(token)
                if previous + [token] not in seen:
                    seen.append(previous + [token])
                    new_index.append(start + i)
                    new_tokens.append(token)
                    new_scores.append(self.vocab_scores[start + i, token])
                    new_states.append(state)
        if not new_index:
            return beam_scores, beam_tokens, beam_index
        tokens = np.concatenate([beam_tokens, np.array(new_tokens, dtype=np.int64)])
        scores = np.concatenate([beam_scores, np.array(new_scores, dtype=beam_scores.dtype)])
        banks = np.array([s.get_bank() for s in topk_states + new_states])
        order = np.argsort(-((banks * 100).astype(scores.dtype) + scores), kind="stable")  # torch sort(descending=True)
        increments, counter, bank = [], -1, banks[order[0]]
        for current in banks[order]:  # the rank of each candidate within its bank
            counter, bank = (counter + 1, bank) if current == bank else (0, current)
            increments.append(counter)
        keep = order[np.argsort(increments, kind="mergesort")][:k]
        return scores[keep], tokens[keep], np.concatenate([beam_index, np.array(new_index, dtype=np.int64)])[keep]

    def _close(self, input_ids, beam_scores, beam_indices):
        """ConstrainedBeamSearchScorer.finalize's first part: the live beams that fulfil the constraints join
        the finished hypotheses; if too few do, the others join too (without beam indices, as upstream)."""
        for b in range(self.batch):
            if self.done[b]:
                continue
            rows = range(b * self.beams, (b + 1) * self.beams)
            complete = [r for r in rows if self.completes(input_ids[r])]
            for r in complete:
                self.hyps[b].add(input_ids[r], float(beam_scores[r]), beam_indices[r],
                                 input_ids.shape[1] - self.prompt_len)
            if len(complete) < self.cfg.num_return_sequences:
                for r in rows:
                    if r not in complete:
                        self.hyps[b].add(input_ids[r], float(beam_scores[r]), None,
                                         input_ids.shape[1] - self.prompt_len)


def constrained_beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder, constraints):
    beams = cfg.num_beams
    scorer = ConstrainedBeamSearchScorer(batch, cfg, input_ids.shape[1], constraints)
    beam_scores = initial_beam_scores(batch, beams)  # [B * K]
    beam_indices = [()] * (batch * beams)
    record = Record(cfg, is_encoder_decoder)
    while True:
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        processed = apply_all(processors, input_ids, log_softmax(out.logits[:, -1, :]))  # [B * K, V]
        scorer.vocab_scores = processed + beam_scores[:, None]  # [B * K, V]
        record.add(scorer.vocab_scores, out)  # upstream records the scores with the beam scores added
        vocab = processed.shape[-1]
        total = scorer.vocab_scores.reshape(batch, beams * vocab)
        top = topk_indices(total, max(2, 1 + len(scorer.eos)) * beams)  # [B, 2K]
        beam_scores, beam_next, beam_idx = scorer.process(input_ids, np.take_along_axis(total, top, axis=1),
                                                          top % vocab, top // vocab, beam_indices)
        input_ids, beam_indices = advance_beams(decoder, input_ids, beam_indices, beam_idx, beam_next)
        if scorer.done.all() or input_ids.shape[1] >= cfg.max_length:
            break
    sequences, sequences_scores, indices_out = scorer.finalize(input_ids, beam_scores, beam_indices)
    return record.output(decoder, sequences, beam=(sequences_scores, indices_out))
