"""Scoring text: per-token log-likelihoods without the full logits tensor.

    token_logprobs          causal LM (OPT, XGLM): log p(x_t | x_<t)
    sliding_token_logprobs  the same for a text longer than the position table
    seq2seq_token_logprobs  encoder-decoder LM (LED): log p(y_t | y_<t, source), teacher forcing
    pseudo_log_likelihood   masked LM (NEZHA): each token masked in turn
    classify                sequence classifiers: logits and probabilities

For a model whose logits are `hidden @ head.T (+ bias)`, the log-probability of each target token
needs only the logsumexp over the vocabulary and the target's logit: `refimpl.lm_head.target_logprobs`
computes them in chunks, so the [B, T, V] logits array (200 MB for 8x128 tokens of OPT) is never held
at once.
"""
from __future__ import annotations

import numpy as np

from . import inputs
from .lm_head import target_logprobs
from .ops import logsumexp, sigmoid, softmax


def token_logprobs(model, input_ids, attention_mask=None):  # ids [B, T] -> [B, T-1]
    """log p(x_t | x_<t) for t = 1..T-1; 0.0 where x_t or x_{t-1} is padding (no real context).

    model: a causal LM (its family spec lists the class in `causal_lm`); anything else is refused.
    """
    spec = model.spec
    if model.architecture not in spec.causal_lm:
        raise ValueError(f"token_logprobs needs a causal language model; {model.architecture} is not one "
                         f"(the {spec.model_type} causal LMs: {', '.join(spec.causal_lm) or 'none'})")
    input_ids = inputs.ids(input_ids, vocab_size=model.config.vocab_size)
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    attention_mask = inputs.mask(attention_mask, input_ids.shape)
    base = spec.architectures[spec.base_model]
    hidden = base(spec.base_params(model.params, model.architecture), model.config, input_ids=input_ids,
                  attention_mask=attention_mask, use_cache=False, return_dict=True,
                  skip_padding=True).last_hidden_state  # [B, T, E]: the layers skip the padding
    head = model.params[spec.causal_lm[model.architecture]]  # [V, E]
    scored = (attention_mask[:, 1:] == 1) & (attention_mask[:, :-1] == 1)  # [B, T-1]
    return scattered(target_logprobs(hidden[:, :-1][scored], head, input_ids[:, 1:][scored]), scored)


def scattered(values, where):  # values [n], where [B, T] bool with n True -> [B, T], 0.0 elsewhere
    """Only the scored positions go through the head (a third of a small model's work), not the padding."""
    out = np.zeros(where.shape, values.dtype)
    out[where] = values
    return out


# LEDForConditionalGeneration's output layer: logits = lm_head(h) + final_logits_bias (modeling_led.py)
SEQ2SEQ_HEAD, SEQ2SEQ_BIAS = "lm_head.weight", "final_logits_bias"


def seq2seq_token_logprobs(model, input_ids, labels, attention_mask=None, global_attention_mask=None):
    """log p(labels[b, t] | labels[b, <t], source b) for an encoder-decoder LM (LEDForConditionalGeneration).

    input_ids [B, S] (+ attention_mask [B, S], global_attention_mask [B, S]): the sources.
    labels [B, T]: the targets, right-padded with -100. -> [B, T], 0.0 where labels == -100.
    Teacher forcing as upstream's forward with `labels`: the decoder reads
    shift_tokens_right(labels) (decoder_start_token_id first, -100 -> pad; no decoder mask, only the
    causal one), and logits = lm_head(h) + final_logits_bias. -mean over labels != -100 is upstream's loss.
    """
    from .models.led import shift_tokens_right

    if model.architecture not in model.spec.generates or not model.config.is_encoder_decoder:
        raise ValueError(f"seq2seq_token_logprobs needs an encoder-decoder language model; {model.architecture} "
                         "is not one (LED: LEDForConditionalGeneration)")
    cfg = model.config
    labels = inputs.ids(labels, "labels")  # [B, T]
    real = labels != -100  # [B, T]
    targets = np.where(real, labels, 0)  # [B, T]
    inputs.ids(targets, "labels", vocab_size=cfg.vocab_size)  # every real label inside the vocabulary
    spec = model.spec
    base = spec.architectures[spec.base_model]
    hidden = base(spec.base_params(model.params, model.architecture), cfg, input_ids=input_ids,
                  attention_mask=attention_mask, global_attention_mask=global_attention_mask,
                  decoder_input_ids=shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id),
                  use_cache=False, return_dict=True).last_hidden_state  # [B, T, E]
    return scattered(target_logprobs(hidden[real], model.params[SEQ2SEQ_HEAD], targets[real],
                                     model.params[SEQ2SEQ_BIAS][0]), real)


def sliding_token_logprobs(model, ids, window=None, stride=None):  # ids [T] -> [T-1]
    """log p(x_t | context) for a sequence longer than the position table.

    Windows of `window` tokens (default: max_position_embeddings) advance by `stride` (default half a
    window); each token is scored once, in the first window that holds it after the previous window's
    end, so every token after the first window sees at least `window - stride` tokens of context.
    Equal to token_logprobs when the sequence fits one window.
    """
    ids = inputs.ids(np.asarray(ids)[None], vocab_size=model.config.vocab_size)[0]
    window = window or model.config.max_position_embeddings
    stride = max(1, window // 2) if stride is None else stride  # 0 is refused below, not the default
    if not 0 < stride <= window - 1:
        raise ValueError(f"stride must be in 1..window-1 (window={window}), got {stride}")
    length = len(ids)
    out = np.empty(length - 1, dtype=model.dtype)
    scored = 0  # tokens 1..scored already have their log-probability
    start = 0
    while scored < length - 1:
        stop = min(start + window, length)
        piece = token_logprobs(model, ids[None, start:stop])[0]  # predictions of tokens start+1..stop-1
        first_new = scored + 1  # absolute index of the first token not scored yet
        out[first_new - 1:stop - 1] = piece[first_new - start - 1:]
        scored = stop - 1
        start += stride
    return out


def pseudo_log_likelihood(model, ids, mask_token_id, scored=None, batch_size=32):  # ids [T] -> [T]
    """Masked-LM pseudo-log-likelihood terms (Salazar et al. 2020): log p(x_i | x without x_i), each
    position i masked in turn; 0.0 where `scored` is False (special tokens). One forward per masked copy,
    `batch_size` copies at a time. model: a masked LM (its family spec lists the class in `masked_lm`)."""
    field = model.spec.masked_lm.get(model.architecture)
    if field is None:
        raise ValueError(f"pseudo_log_likelihood needs a masked language model; {model.architecture} is not one")
    ids = inputs.ids(np.asarray(ids)[None], vocab_size=model.config.vocab_size)[0]
    scored = np.ones(len(ids), bool) if scored is None else np.asarray(scored, bool)
    positions = np.flatnonzero(scored)
    out = np.zeros(len(ids), dtype=model.dtype)
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        copies = np.repeat(ids[None], len(chunk), axis=0)  # [n, T], copy r masked at chunk[r]
        copies[np.arange(len(chunk)), chunk] = mask_token_id
        logits = model(input_ids=copies, return_dict=True)[field]  # [n, T, V]
        rows = logits[np.arange(len(chunk)), chunk]  # [n, V]
        out[chunk] = rows[np.arange(len(chunk)), ids[chunk]] - logsumexp(rows)
    return out


def classify(model, input_ids, attention_mask=None):  # ids [B, T] -> (logits [B, C], probabilities [B, C])
    """A sequence classifier's logits and probabilities: sigmoid for multi-label models, softmax otherwise."""
    if model.architecture not in model.spec.sequence_classifiers:
        raise ValueError(f"classify needs a sequence classifier; {model.architecture} is not one")
    logits = model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).logits
    if model.config.problem_type == "multi_label_classification":
        return logits, sigmoid(logits)
    return logits, softmax(logits)
