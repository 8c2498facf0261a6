"""GenerationMixin.greedy_search and GenerationMixin.sample (transformers 4.37.2 `generation/utils.py`)."""
from __future__ import annotations

import numpy as np

from ..ops import softmax
from .config import eos_list
from .outputs import GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput, encoder_fields, step_extras
from .processors import apply_all


def greedy_or_sample(decoder, input_ids, cfg, processors, warpers, rng, is_encoder_decoder):
    """GenerationMixin.greedy_search (warpers None) and GenerationMixin.sample."""
    eos = np.array(eos_list(cfg.eos_token_id), dtype=np.int64)
    unfinished = np.ones(input_ids.shape[0], dtype=np.int64)
    scores, attentions, cross, hidden = [], [], [], []
    while True:
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        step_scores = apply_all(processors, input_ids, out.logits[:, -1, :].copy())  # [N, V]
        if warpers is None:
            next_tokens = np.argmax(step_scores, axis=-1)
        else:
            step_scores = apply_all(warpers, input_ids, step_scores)
            next_tokens = multinomial(softmax(step_scores), rng)
        scores.append(step_scores)
        a, c, h = step_extras(out, is_encoder_decoder)
        attentions.append(a), cross.append(c), hidden.append(h)
        if eos.size:
            if cfg.pad_token_id is None:
                raise ValueError("eos_token_id is set, so pad_token_id must be set too")
            next_tokens = next_tokens * unfinished + cfg.pad_token_id * (1 - unfinished)
        input_ids = np.concatenate([input_ids, next_tokens[:, None]], axis=1)
        if eos.size:
            unfinished = unfinished * (~np.isin(next_tokens, eos)).astype(np.int64)
        if unfinished.max() == 0 or input_ids.shape[1] >= cfg.max_length:
            break
    if not cfg.return_dict_in_generate:
        return input_ids
    keep = cfg.output_scores
    if is_encoder_decoder:
        return GenerateEncoderDecoderOutput(
            sequences=input_ids, scores=tuple(scores) if keep else None, **encoder_fields(decoder, cfg),
            decoder_attentions=tuple(attentions) if cfg.output_attentions else None,
            cross_attentions=tuple(cross) if cfg.output_attentions else None,
            decoder_hidden_states=tuple(hidden) if cfg.output_hidden_states else None,
            past_key_values=decoder.kwargs.get("past_key_values"))
    return GenerateDecoderOnlyOutput(
        sequences=input_ids, scores=tuple(scores) if keep else None,
        attentions=tuple(attentions) if cfg.output_attentions else None,
        hidden_states=tuple(hidden) if cfg.output_hidden_states else None,
        past_key_values=decoder.kwargs.get("past_key_values"))


def multinomial(probs, rng):  # probs [N, V] -> [N] one draw per row; a zero-probability token is never drawn
    cumulative = np.cumsum(probs.astype(np.float64), axis=-1)
    u = rng.random(probs.shape[0]) * cumulative[:, -1]
    return np.array([np.searchsorted(c, x, side="right") for c, x in zip(cumulative, u)], dtype=np.int64)
