"""GenerationMixin.generate: checks the request, prepares the inputs (and runs the encoder), then hands
over to one decoding strategy (GenerationMixin._get_generation_mode)."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

import numpy as np

from .. import inputs
from .beam import beam_search
from .config import GenerationConfig, eos_list
from .constrained import constrained_beam_search
from .constraints import Constraint, from_force_words_ids
from .contrastive import contrastive_search
from .decoder import Decoder
from .group_beam import group_beam_search
from .processors import build_processors, build_warpers
from .search import greedy_or_sample

# forward arguments that are not model inputs (refimpl's own) and cannot come through generate()
_NOT_MODEL_KWARGS = {"p", "cfg", "backend", "model", "_ignored", "_model_kwargs", "model_kwargs"}


def check_can_generate(model) -> None:
    if model.architecture not in model.spec.generates:
        raise ValueError(f"{model.architecture} cannot generate; the {model.spec.model_type} classes that can: "
                         f"{', '.join(model.spec.generates) or 'none'}")


def generate(model, input_ids=None, generation_config: Optional[GenerationConfig] = None, generator=None, seed=None,
             **kwargs):
    """GenerationMixin.generate for refimpl models. Returns token ids [B * num_return_sequences, L], or
    a Generate*Output when `return_dict_in_generate=True`.

    Sampling (do_sample=True) draws from `generator`: a numpy Generator (or `seed=` for a new one), or any
    object with a method `draw(probs [N, V], num_samples) -> [N, num_samples]` (search.draw).
    """
    prep = prepare(model, input_ids, generation_config, **kwargs)
    cfg, input_ids, batch, processors, decoder = prep.cfg, prep.input_ids, prep.batch, prep.processors, prep.decoder
    is_encoder_decoder = prep.is_encoder_decoder
    rng = generator if generator is not None else np.random.default_rng(seed)

    if cfg.constraints is not None or cfg.force_words_ids is not None:
        constraints = _constraints(cfg)
        input_ids = _expand(decoder, input_ids, cfg.num_beams)
        return constrained_beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder, constraints)
    if cfg.num_beams == 1 and not cfg.do_sample:
        if cfg.top_k is not None and cfg.top_k > 1 and cfg.penalty_alpha is not None and cfg.penalty_alpha > 0:
            if not cfg.use_cache:
                raise ValueError("Contrastive search requires `use_cache=True`")
            return contrastive_search(decoder, input_ids, cfg, processors, is_encoder_decoder)
        return greedy_or_sample(decoder, input_ids, cfg, processors, None, None, is_encoder_decoder)
    if cfg.num_beams == 1:
        input_ids = _expand(decoder, input_ids, cfg.num_return_sequences)
        return greedy_or_sample(decoder, input_ids, cfg, processors, build_warpers(cfg), rng, is_encoder_decoder)
    if cfg.num_return_sequences > cfg.num_beams:
        raise ValueError(f"num_return_sequences ({cfg.num_return_sequences}) must be <= num_beams ({cfg.num_beams})")
    input_ids = _expand(decoder, input_ids, cfg.num_beams)
    if cfg.num_beam_groups > 1:
        return group_beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder)
    if cfg.do_sample:
        return beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder, build_warpers(cfg), rng)
    return beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder)


@dataclasses.dataclass
class Prepared:
    """What generate() has ready when the decoding strategy starts."""

    cfg: GenerationConfig          # the request, checked; max_length set from max_new_tokens
    input_ids: np.ndarray          # [B, S] the decoder's prefix: the prompt, or LED's decoder start token(s)
    encoder_input_ids: np.ndarray  # [B, T] upstream's inputs_tensor (LED's encoder input, else the prompt)
    batch: int                     # B
    processors: list               # the logits processors, in upstream's order
    decoder: Decoder               # the cached decoding state (LED: the encoder has run)
    is_encoder_decoder: bool


def prepare(model, input_ids=None, generation_config: Optional[GenerationConfig] = None, **kwargs) -> Prepared:
    """generate()'s checks and input preparation, up to the choice of strategy (also used by
    refimpl.diff_generate to replay another implementation's tokens)."""
    check_can_generate(model)
    hooks = model.spec.generation
    is_encoder_decoder = hooks.run_encoder is not None
    cfg, model_kwargs = (generation_config or GenerationConfig.for_model(model)).updated(**kwargs)
    cfg.validate(model.config)  # values and combinations upstream refuses; options refimpl does not implement
    _check_model_kwargs(model, hooks, model_kwargs, is_encoder_decoder)
    if input_ids is None:
        raise ValueError("generate() needs input_ids [batch, length]")
    vocab = model.config.vocab_size
    input_ids = inputs.ids(input_ids, "input_ids", vocab_size=vocab)
    eos = eos_list(cfg.eos_token_id)
    if cfg.pad_token_id is None and eos:
        cfg.pad_token_id = eos[0]  # upstream: "Setting pad_token_id to eos_token_id for open-end generation"
    batch = input_ids.shape[0]
    cfg.check_batch(batch, vocab)  # the documented memory bounds on batch * num_beams

    _prepare_attention_mask(cfg, input_ids, model_kwargs, eos)
    model_kwargs["use_cache"] = cfg.use_cache
    encoder_input_ids = input_ids  # [B, T] upstream's inputs_tensor (encoder penalties: LED's input, else the prompt)
    if is_encoder_decoder:
        input_ids = _run_encoder(model, hooks, cfg, input_ids, model_kwargs)  # -> the decoder's prefix [B, S]

    prompt_length = input_ids.shape[1]
    if cfg.max_new_tokens is not None:
        cfg.max_length = cfg.max_new_tokens + prompt_length
    processors = build_processors(cfg, prompt_length, encoder_input_ids)
    decoder = Decoder(model, model_kwargs, hooks)
    return Prepared(cfg, input_ids, encoder_input_ids, batch, processors, decoder, is_encoder_decoder)


def _check_model_kwargs(model, hooks, model_kwargs, is_encoder_decoder):
    """GenerationMixin._validate_model_kwargs: a keyword argument that is neither a generation option nor an
    input of the model (its forward, prepare_inputs_for_generation, for LED its encoder) is refused by name."""
    accepted = {"return_dict"}
    functions = [model.spec.architectures[model.architecture], hooks.prepare_inputs]
    if is_encoder_decoder:
        functions.append(hooks.run_encoder)
    for function in functions:
        accepted |= set(inspect.signature(function).parameters) - _NOT_MODEL_KWARGS
    unused = [k for k, v in model_kwargs.items() if v is not None and k not in accepted]
    if unused:
        raise ValueError(f"The following `model_kwargs` are not used by the model: {unused} (note: typos in the "
                         "generate arguments will also show up in this list)")
    if model_kwargs.get("inputs_embeds") is not None:
        raise ValueError("generate(inputs_embeds=...) is not implemented in refimpl: pass input_ids")
    if model_kwargs.get("past_key_values") is not None and not isinstance(model_kwargs["past_key_values"], tuple):
        raise ValueError("past_key_values must be the tuple (per layer) of arrays a refimpl forward returns")


def _expand(decoder, input_ids, n):  # GenerationMixin._expand_inputs_for_generation: every row n times
    if n > 1 and decoder.kwargs.get("past_key_values") is not None:
        raise ValueError(f"past_key_values cannot be passed to generate() when it expands the batch {n} times "
                         "(num_beams or num_return_sequences > 1): upstream does not expand a given cache either")
    decoder.expand(n)
    return np.repeat(input_ids, n, axis=0)


def _constraints(cfg):  # generate()'s CONSTRAINED_BEAM_SEARCH branch: `constraints`, then `force_words_ids`
    constraints = list(cfg.constraints or [])
    if any(not isinstance(c, Constraint) for c in constraints):
        raise ValueError("constraints must be refimpl.generation constraints (PhrasalConstraint, "
                         f"DisjunctiveConstraint), got {[type(c).__name__ for c in constraints]}")
    if cfg.force_words_ids is not None:
        constraints += from_force_words_ids(cfg.force_words_ids)
    return constraints


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


def _run_encoder(model, hooks, cfg, input_ids, model_kwargs):  # -> decoder input ids [B, S]
    """GenerationMixin._prepare_encoder_decoder_kwargs_for_generation (the encoder runs once, unless its
    outputs were passed in) and _prepare_decoder_input_ids_for_generation (the start token, before a given
    `decoder_input_ids` prefix unless every row already starts with it)."""
    if "encoder_outputs" not in model_kwargs:
        encoder_kwargs = {k: v for k, v in model_kwargs.items()
                          if not k.startswith(("decoder_", "cross_attn", "use_cache"))}
        model_kwargs["encoder_outputs"] = hooks.run_encoder(
            model, input_ids, output_attentions=cfg.output_attentions,
            output_hidden_states=cfg.output_hidden_states, **encoder_kwargs)
    start = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else cfg.bos_token_id
    if start is None:
        raise ValueError("`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder generation.")
    starts = np.full((input_ids.shape[0], 1), start, dtype=np.int64)  # [B, 1]
    prefix = model_kwargs.pop("decoder_input_ids", None)
    if prefix is None:
        return starts
    prefix = inputs.ids(prefix, "decoder_input_ids", vocab_size=model.config.vocab_size)
    if prefix.shape[0] != input_ids.shape[0]:
        raise ValueError(f"decoder_input_ids has {prefix.shape[0]} rows, input_ids {input_ids.shape[0]}")
    if (prefix[:, 0] != start).all():
        prefix = np.concatenate([starts, prefix], axis=1)
        mask = model_kwargs.get("decoder_attention_mask")
        if mask is not None:
            model_kwargs["decoder_attention_mask"] = np.concatenate([np.ones_like(mask)[:, :1], mask], axis=1)
    return prefix
