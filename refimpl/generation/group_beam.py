"""GenerationMixin.group_beam_search (transformers 4.37.2): diverse beam search.

The beams of each batch row are split into `num_beam_groups` groups of `num_beams / num_beam_groups`. Every
step runs the model once on all beams, then the groups choose their next tokens one after the other; the
HammingDiversityLogitsProcessor (built by processors.build_processors from `diversity_penalty`) lowers the
score of the tokens the earlier groups chose at this step (`current_tokens`).
"""
from __future__ import annotations

import numpy as np

from ..ops import log_softmax
from .beam import BeamSearchScorer, topk_indices
from .outputs import Record
from .processors import apply_all


def group_beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder):
    beams, groups = cfg.num_beams, cfg.num_beam_groups
    scorer = BeamSearchScorer(batch, cfg, input_ids.shape[1], num_beam_groups=groups)
    size = scorer.beams  # beams per group
    # upstream: a float32 tensor that the groups' scores are assigned into. In a float64 run upstream fails there
    # ("Index put requires the source and destination dtypes match"); refimpl keeps the scores in the model's
    # dtype, which is upstream's computation with that tensor made float64 (what the live test compares with).
    beam_scores = np.full((batch, beams), -1e9, dtype=np.float32)
    beam_scores[:, ::size] = 0  # the first beam of every group
    beam_scores = beam_scores.reshape(-1)  # [B * K]
    # upstream keeps one tuple of beam histories per group, indexed within the group, and hands the scorer
    # their concatenation (reproduced, with its indexing)
    beam_indices = [[()] * (batch * size) for _ in range(groups)]
    record = Record(cfg, is_encoder_decoder)
    while True:
        current_tokens = np.zeros(batch * beams, dtype=np.int64)  # [B * K] this step's tokens, group by group
        reordering = np.zeros(batch * beams, dtype=np.int64)  # [B * K] the cache row each beam continues
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        beam_scores = beam_scores.astype(out.logits.dtype, copy=False)
        processed_all = np.zeros_like(out.logits[:, -1, :])  # [B * K, V]
        for g in range(groups):
            rows = (np.arange(batch)[:, None] * beams + np.arange(g * size, (g + 1) * size)).reshape(-1)  # [B * size]
            group_ids = input_ids[rows]  # [B * size, S]
            processed = apply_all(processors, group_ids, log_softmax(out.logits[rows, -1, :]),
                                  current_tokens=current_tokens, beam_group_idx=g)  # [B * size, V]
            processed_all[rows] = processed
            vocab = processed.shape[-1]
            total = (processed + beam_scores[rows][:, None]).reshape(batch, size * vocab)  # [B, size * V]
            top = topk_indices(total, max(2, 1 + len(scorer.eos)) * size)
            top_scores = np.take_along_axis(total, top, axis=1)
            new_scores, new_tokens, beam_idx = scorer.process(group_ids, top_scores, top % vocab, top // vocab,
                                                              sum(beam_indices, []), group=g)
            beam_scores[rows] = new_scores
            beam_indices[g] = [beam_indices[g][i] + (i,) for i in beam_idx]
            input_ids[rows] = group_ids[beam_idx]
            current_tokens[rows] = new_tokens
            reordering[rows] = beams * (beam_idx // size) + g * size + beam_idx % size
        record.add(processed_all, out)
        input_ids = np.concatenate([input_ids, current_tokens[:, None]], axis=1)
        decoder.reorder(reordering)
        if scorer.done.all() or input_ids.shape[1] >= cfg.max_length:
            break
    sequences, sequences_scores, indices_out = scorer.finalize(input_ids, beam_scores, sum(beam_indices, []))
    return record.output(decoder, sequences, beam=(sequences_scores, indices_out))
