"""GenerationMixin.contrastive_search (transformers 4.37.2): `penalty_alpha > 0` with `top_k > 1`, no sampling.

Each step takes the top_k most probable next tokens, runs the model on each of them (one batched cached step
over B * top_k rows), and picks per row the candidate maximising
    (1 - penalty_alpha) * p(token) - penalty_alpha * max_j cos(h_candidate, h_j)
over every earlier position j (padding included, as upstream). The chosen candidate's cache, hidden states
and logits become the next step's, so the model runs once per step on top_k rows.
"""
from __future__ import annotations

import numpy as np

from ..ops import softmax
from .beam import topk_indices
from .decoder import take_rows
from .outputs import Record, step_extras
from .processors import apply_all
from .search import Unfinished


def ranking(context, candidates, top_probs, alpha, k):  # [B*K, S, D], [B*K, 1, D], [B, K] -> [B] chosen
    """generation/utils.py _ranking_fast: the degeneration penalty is the largest cosine similarity
    between a candidate's hidden state and the context's."""
    unit_context = context / np.linalg.norm(context, axis=2, keepdims=True)  # [B*K, S, D]
    unit_candidates = candidates / np.linalg.norm(candidates, axis=2, keepdims=True)  # [B*K, 1, D]
    cosine = np.matmul(unit_context, unit_candidates.transpose(0, 2, 1))[..., 0]  # [B*K, S]
    penalty = cosine.max(axis=-1)  # [B*K]
    one = top_probs.dtype.type
    score = one(1.0 - alpha) * top_probs.reshape(-1) - one(alpha) * penalty  # [B*K]
    return score.reshape(-1, k).argmax(axis=-1)  # [B] the first best on ties


def contrastive_search(decoder, input_ids, cfg, processors, is_encoder_decoder):
    k, alpha, batch = cfg.top_k, cfg.penalty_alpha, input_ids.shape[0]
    if decoder.kwargs.get("past_key_values") is not None:
        raise ValueError("contrastive search cannot start from past_key_values (upstream fails there too); "
                         "pass the whole sequence as input_ids")
    decoder.kwargs["use_cache"] = True
    unfinished, record = Unfinished(cfg, batch), Record(cfg, is_encoder_decoder)
    out = decoder.step(input_ids, cfg.output_attentions, True)  # the prompt, hidden states always kept
    attentions, cross, hidden = step_extras(out, is_encoder_decoder)
    context = hidden[-1]  # [B, S, D] the last layer's states of every position so far
    logits = out.logits[:, -1, :]  # [B, V]
    decoder.expand(k)  # masks and encoder outputs: B -> B * K rows (the cache is repeated at each step)
    while True:
        scores = apply_all(processors, input_ids, logits.copy())  # [B, V]
        probs = softmax(scores)
        top_ids = topk_indices(probs, k)  # [B, K] torch.topk
        top_probs = np.take_along_axis(probs, top_ids, axis=1)
        record.add_parts(scores, attentions, cross, hidden if cfg.output_hidden_states else None)
        decoder.kwargs["past_key_values"] = take_rows(decoder.kwargs["past_key_values"],
                                                      np.repeat(np.arange(batch), k))  # [B * K, ...]
        candidates = decoder.run(top_ids.reshape(-1, 1), cfg.output_attentions, True)  # B * K rows, one token
        c_attentions, c_cross, c_hidden = step_extras(candidates, is_encoder_decoder)
        chosen = ranking(np.repeat(context, k, axis=0), c_hidden[-1], top_probs, alpha, k)  # [B]
        rows = np.arange(batch) * k + chosen  # [B] the chosen candidate's row among the B * K
        next_tokens = top_ids[np.arange(batch), chosen]
        context = np.concatenate([context, c_hidden[-1][rows]], axis=1)  # [B, S + 1, D]
        hidden = take_rows(c_hidden, rows)
        attentions = take_rows(c_attentions, rows) if cfg.output_attentions else None
        cross = take_rows(c_cross, rows) if cfg.output_attentions else None
        logits = candidates.logits[rows, -1, :]
        decoder.advance(take_rows(candidates.past_key_values, rows))
        input_ids = unfinished.append(input_ids, next_tokens)
        if unfinished.stop(input_ids, cfg):
            break
    # upstream drops the last position of every cached tensor (the last token was never fed back)
    past = tuple(tuple(item[..., :-1, :] for item in layer) for layer in decoder.kwargs["past_key_values"])
    return record.output(decoder, input_ids, past_key_values=past)
