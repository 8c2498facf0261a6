"""GenerationMixin.generate: checks the request, prepares the inputs (and runs the encoder), then hands
over to one decoding strategy."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import inputs
from .beam import beam_search
from .config import GenerationConfig, eos_list
from .decoder import Decoder
from .processors import build_processors, build_warpers
from .search import greedy_or_sample


def generate(model, input_ids=None, generation_config: Optional[GenerationConfig] = None, generator=None, seed=None,
             **kwargs):
    """GenerationMixin.generate for refimpl models. Returns token ids [B * num_return_sequences, L], or
    a Generate*Output when `return_dict_in_generate=True`."""
    if model.architecture not in model.spec.generates:
        raise ValueError(f"{model.architecture} cannot generate; the {model.spec.model_type} classes that can: "
                         f"{', '.join(model.spec.generates) or 'none'}")
    hooks = model.spec.generation
    cfg, model_kwargs = (generation_config or GenerationConfig.for_model(model)).updated(**kwargs)
    cfg.validate(model.config)  # values and combinations upstream refuses; options refimpl does not implement
    if input_ids is None:
        raise ValueError("generate() needs input_ids [batch, length]")
    vocab = model.config.vocab_size
    input_ids = inputs.ids(input_ids, "input_ids", vocab_size=vocab)
    eos = eos_list(cfg.eos_token_id)
    if cfg.pad_token_id is None and eos:
        cfg.pad_token_id = eos[0]  # upstream: "Setting pad_token_id to eos_token_id for open-end generation"
    batch = input_ids.shape[0]
    cfg.check_batch(batch, vocab)  # the documented memory bounds on batch * num_beams
    is_encoder_decoder = hooks.run_encoder is not None

    _prepare_attention_mask(cfg, input_ids, model_kwargs, eos)
    model_kwargs["use_cache"] = cfg.use_cache
    encoder_input_ids = input_ids  # [B, T] upstream's inputs_tensor (encoder penalties: LED's input, else the prompt)
    if is_encoder_decoder:
        input_ids = _run_encoder(model, hooks, cfg, input_ids, model_kwargs)  # -> the decoder's start [B, 1]

    prompt_length = input_ids.shape[1]
    if cfg.max_new_tokens is not None:
        cfg.max_length = cfg.max_new_tokens + prompt_length
    processors = build_processors(cfg, prompt_length, encoder_input_ids)
    decoder = Decoder(model, model_kwargs, hooks)

    if cfg.num_beams == 1 and not cfg.do_sample:
        return greedy_or_sample(decoder, input_ids, cfg, processors, None, None, is_encoder_decoder)
    if cfg.num_beams == 1:
        rng = generator if generator is not None else np.random.default_rng(seed)
        input_ids = np.repeat(input_ids, cfg.num_return_sequences, axis=0)
        decoder.expand(cfg.num_return_sequences)
        return greedy_or_sample(decoder, input_ids, cfg, processors, build_warpers(cfg), rng, is_encoder_decoder)
    if cfg.do_sample:
        raise NotImplementedError("beam sampling (num_beams > 1 with do_sample=True) is not implemented")
    if cfg.num_return_sequences > cfg.num_beams:
        raise ValueError(f"num_return_sequences ({cfg.num_return_sequences}) must be <= num_beams ({cfg.num_beams})")
    input_ids = np.repeat(input_ids, cfg.num_beams, axis=0)
    decoder.expand(cfg.num_beams)
    return beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder)


def _prepare_attention_mask(cfg, input_ids, model_kwargs, eos):  # sets model_kwargs["attention_mask"] [B, T]
    """GenerationMixin._prepare_attention_mask_for_generation: without a mask, padding (if the pad id is
    not also eos) is masked out; a given mask is checked."""
    if model_kwargs.get("attention_mask") is None and "encoder_outputs" not in model_kwargs:
        if cfg.pad_token_id is not None and (input_ids == cfg.pad_token_id).any() and cfg.pad_token_id not in eos:
            model_kwargs["attention_mask"] = (input_ids != cfg.pad_token_id).astype(np.int64)
        else:
            model_kwargs["attention_mask"] = np.ones_like(input_ids)
    elif model_kwargs.get("attention_mask") is not None:
        model_kwargs["attention_mask"] = inputs.mask(model_kwargs["attention_mask"], input_ids.shape)


def _run_encoder(model, hooks, cfg, input_ids, model_kwargs):  # -> decoder input ids [B, 1]
    """GenerationMixin._prepare_encoder_decoder_kwargs_for_generation (the encoder runs once, unless its
    outputs were passed in) and _prepare_decoder_input_ids_for_generation (the start token)."""
    if "encoder_outputs" not in model_kwargs:
        encoder_kwargs = {k: v for k, v in model_kwargs.items()
                          if not k.startswith(("decoder_", "cross_attn", "use_cache"))}
        model_kwargs["encoder_outputs"] = hooks.run_encoder(
            model, input_ids, output_attentions=cfg.output_attentions,
            output_hidden_states=cfg.output_hidden_states, **encoder_kwargs)
    start = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else cfg.bos_token_id
    return np.full((input_ids.shape[0], 1), start, dtype=np.int64)
