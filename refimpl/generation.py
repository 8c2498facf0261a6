"""Text generation for every decoder (OPT, XGLM, the LED decoder): greedy search, beam search and
multinomial sampling, with upstream's logits processors, reproducing transformers 4.37.2
`generation/utils.py` (GenerationMixin.generate, greedy_search, sample, beam_search),
`generation/beam_search.py` (BeamSearchScorer, BeamHypotheses) and `generation/logits_process.py`.

    out = model.generate(input_ids, attention_mask=mask, num_beams=3, max_new_tokens=8)

Each step runs the model on the new token only, with the KV cache. A family declares its hooks in its
spec (refimpl/family.py `Generation`): `prepare_inputs(input_ids, **model_kwargs)`, upstream's
`prepare_inputs_for_generation` (XGLM builds position ids from the mask there), and, for encoder-decoder
models, `run_encoder(model, input_ids, **encoder_kwargs)`.
Sampling draws from a `numpy.random.Generator` (`generator=` or `seed=`): reproducible from its seed,
but not the same draws as torch's RNG.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from . import inputs
from .ops import log_softmax, softmax
from .outputs import ModelOutput, output_class


# ---------------------------------------------------------------- configuration


@dataclass
class GenerationConfig:
    """The `transformers.GenerationConfig` fields this implementation supports, with upstream's defaults."""

    max_length: int = 20
    max_new_tokens: Optional[int] = None
    min_length: int = 0
    min_new_tokens: Optional[int] = None
    early_stopping: Any = False  # True, False or "never"
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: Optional[int] = 50
    top_p: Optional[float] = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: Optional[list] = None
    forced_bos_token_id: Optional[int] = None
    forced_eos_token_id: Any = None
    num_return_sequences: int = 1
    output_scores: bool = False
    output_attentions: bool = False
    output_hidden_states: bool = False
    return_dict_in_generate: bool = False
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Any = None
    decoder_start_token_id: Optional[int] = None
    use_cache: bool = True

    @classmethod
    def for_model(cls, model) -> "GenerationConfig":
        """Upstream's GenerationConfig.from_model_config, then the checkpoint's generation_config.json."""
        names = {f.name for f in dataclasses.fields(cls)}
        raw = {**dataclasses.asdict(model.config), **model.config.extra}
        values = {k: v for k, v in raw.items() if k in names}
        source = model.source
        if source is not None and (Path(source) / "generation_config.json").exists():
            saved = json.loads((Path(source) / "generation_config.json").read_text())
            values.update({k: v for k, v in saved.items() if k in names})
        return cls(**values)

    def updated(self, **kwargs):  # -> (new config, the kwargs that are not generation options)
        names = {f.name for f in dataclasses.fields(self)}
        options = {k: v for k, v in kwargs.items() if k in names}
        return dataclasses.replace(self, **options), {k: v for k, v in kwargs.items() if k not in names}


def _eos_list(eos) -> List[int]:
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


# ---------------------------------------------------------------- logits processors
# Each is a function (input_ids [N, S], scores [N, V]) -> scores, applied in upstream's order
# (GenerationMixin._get_logits_processor). Scores are modified in place, as upstream does.


def repetition_penalty(penalty):  # RepetitionPenaltyLogitsProcessor
    def apply(ids, scores):
        seen = np.take_along_axis(scores, ids, axis=1)  # [N, S], the logits of tokens already present
        seen = np.where(seen < 0, seen * scores.dtype.type(penalty), seen / scores.dtype.type(penalty))
        np.put_along_axis(scores, ids, seen, axis=1)
        return scores
    return apply


def no_repeat_ngram(n):  # NoRepeatNGramLogitsProcessor: an n-gram may occur once in the whole sequence
    def apply(ids, scores):
        length = ids.shape[1]
        if length + 1 < n:
            return scores
        for row, tokens in enumerate(ids.tolist()):
            prefix = tuple(tokens[length + 1 - n:])
            banned = [gram[-1] for gram in zip(*[tokens[i:] for i in range(n)]) if tuple(gram[:-1]) == prefix]
            scores[row, banned] = -np.inf
        return scores
    return apply


def bad_words(bad_words_ids, eos):  # NoBadWordsLogitsProcessor (a SequenceBiasLogitsProcessor of -inf)
    sequences = [list(seq) for seq in bad_words_ids if not any(seq == [e] for e in eos)]

    def apply(ids, scores):
        for seq in sequences:
            if len(seq) == 1:
                scores[:, seq[0]] = -np.inf
            elif len(seq) - 1 <= ids.shape[1]:
                match = np.all(ids[:, ids.shape[1] - (len(seq) - 1):] == np.array(seq[:-1]), axis=1)
                scores[match, seq[-1]] = -np.inf
        return scores
    return apply


def min_length(minimum, eos, prompt_length=0):  # MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor
    def apply(ids, scores):
        if ids.shape[1] - prompt_length < minimum:
            scores[:, eos] = -np.inf
        return scores
    return apply


def forced_token(token, at_length):  # ForcedBOSTokenLogitsProcessor / ForcedEOSTokenLogitsProcessor
    tokens = _eos_list(token)

    def apply(ids, scores):
        if ids.shape[1] == at_length:
            scores[:] = -np.inf
            scores[:, tokens] = 0
        return scores
    return apply


def temperature(t):  # TemperatureLogitsWarper
    return lambda ids, scores: scores / scores.dtype.type(t)


def top_k(k, min_keep=1):  # TopKLogitsWarper
    k = max(k, min_keep)

    def apply(ids, scores):
        kth = -np.sort(-scores, axis=-1)[:, min(k, scores.shape[-1]) - 1:min(k, scores.shape[-1])]  # [N, 1]
        return np.where(scores < kth, -np.inf, scores).astype(scores.dtype)
    return apply


def top_p(p, min_keep=1):  # TopPLogitsWarper: drop the low tail whose total probability is <= 1 - p
    def apply(ids, scores):
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending
        sorted_scores = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(softmax(sorted_scores), axis=-1)
        remove_sorted = cumulative <= scores.dtype.type(1 - p)
        remove_sorted[:, -min_keep:] = False
        remove = np.zeros_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)
        return np.where(remove, -np.inf, scores).astype(scores.dtype)
    return apply


def build_processors(cfg: GenerationConfig, prompt_length: int):
    eos = _eos_list(cfg.eos_token_id)
    procs = []
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        procs.append(repetition_penalty(cfg.repetition_penalty))
    if cfg.no_repeat_ngram_size:
        procs.append(no_repeat_ngram(cfg.no_repeat_ngram_size))
    if cfg.bad_words_ids is not None:
        procs.append(bad_words(cfg.bad_words_ids, eos))
    if cfg.min_length and eos:
        procs.append(min_length(cfg.min_length, eos))
    if cfg.min_new_tokens and eos:
        procs.append(min_length(cfg.min_new_tokens, eos, prompt_length))
    if cfg.forced_bos_token_id is not None:
        procs.append(forced_token(cfg.forced_bos_token_id, 1))
    if cfg.forced_eos_token_id is not None:
        procs.append(forced_token(cfg.forced_eos_token_id, cfg.max_length - 1))
    return procs


def build_warpers(cfg: GenerationConfig):  # GenerationMixin._get_logits_warper (sampling only)
    min_keep = 1 if cfg.num_beams == 1 else len(_eos_list(cfg.eos_token_id)) + 1
    warpers = []
    if cfg.temperature is not None and cfg.temperature != 1.0:
        if not cfg.temperature > 0:
            raise ValueError(f"temperature must be a strictly positive float, got {cfg.temperature}")
        warpers.append(temperature(cfg.temperature))
    if cfg.top_k is not None and cfg.top_k != 0:
        warpers.append(top_k(cfg.top_k, min_keep))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        warpers.append(top_p(cfg.top_p, min_keep))
    return warpers


def apply_all(functions, ids, scores):
    for f in functions:
        scores = f(ids, scores)
    return scores


# ---------------------------------------------------------------- outputs


# generation/utils.py's output classes, fields in upstream's order
_DECODER_ONLY = ("attentions", "hidden_states", "past_key_values")
_ENCODER_DECODER = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                    "decoder_hidden_states", "past_key_values")
_BEAM = ("sequences", "sequences_scores", "scores", "beam_indices")
GenerateDecoderOnlyOutput = output_class("GenerateDecoderOnlyOutput", "sequences", "scores", *_DECODER_ONLY)
GenerateBeamDecoderOnlyOutput = output_class("GenerateBeamDecoderOnlyOutput", *_BEAM, *_DECODER_ONLY)
GenerateEncoderDecoderOutput = output_class("GenerateEncoderDecoderOutput", "sequences", "scores", *_ENCODER_DECODER)
GenerateBeamEncoderDecoderOutput = output_class("GenerateBeamEncoderDecoderOutput", *_BEAM, *_ENCODER_DECODER)


# ---------------------------------------------------------------- the decoding state


def _take_rows(value, index):  # arrays and (nested) tuples of arrays, rows picked along axis 0
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(_take_rows(v, index) for v in value)
    if isinstance(value, ModelOutput):
        return dataclasses.replace(value, **{k: _take_rows(v, index) for k, v in value.items()})
    if isinstance(value, np.ndarray):
        return value[index]
    return value


class Decoder:
    """Runs one model step at a time and keeps what upstream keeps in `model_kwargs` between steps."""

    def __init__(self, model, model_kwargs, hooks):
        self.model, self.kwargs, self.hooks = model, model_kwargs, hooks

    def step(self, input_ids, output_attentions, output_hidden_states):  # -> model output for the new token(s)
        model_inputs = self.hooks.prepare_inputs(input_ids, **self.kwargs)
        out = self.model(**model_inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        # GenerationMixin._update_model_kwargs_for_generation
        self.kwargs["past_key_values"] = out.past_key_values
        mask_name = self.hooks.decoder_mask
        if self.kwargs.get(mask_name) is not None:
            mask = self.kwargs[mask_name]
            self.kwargs[mask_name] = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)
        return out

    def expand(self, n):  # repeat_interleave every array argument n times (beams, return sequences)
        index = np.repeat(np.arange(self._batch()), n)
        self.kwargs = {k: _take_rows(v, index) for k, v in self.kwargs.items()}

    def reorder(self, beam_idx):  # beam search: the cache follows the beams that were kept
        self.kwargs["past_key_values"] = _take_rows(self.kwargs.get("past_key_values"), beam_idx)

    def _batch(self):
        for v in self.kwargs.values():
            if isinstance(v, np.ndarray):
                return v.shape[0]
            if isinstance(v, ModelOutput):
                return v.to_tuple()[0].shape[0]
        raise ValueError("cannot tell the batch size")


# ---------------------------------------------------------------- generate


def generate(model, input_ids=None, generation_config: Optional[GenerationConfig] = None, generator=None, seed=None,
             **kwargs):
    """GenerationMixin.generate for refimpl models. Returns token ids [B * num_return_sequences, L], or
    a Generate*Output when `return_dict_in_generate=True`."""
    if model.architecture not in model.spec.generates:
        raise ValueError(f"{model.architecture} cannot generate; the {model.spec.model_type} classes that can: "
                         f"{', '.join(model.spec.generates) or 'none'}")
    hooks = model.spec.generation
    cfg, model_kwargs = (generation_config or GenerationConfig.for_model(model)).updated(**kwargs)
    if input_ids is None:
        raise ValueError("generate() needs input_ids [batch, length]")
    vocab = model.config.vocab_size
    input_ids = inputs.ids(input_ids, "input_ids", vocab_size=vocab)
    eos = _eos_list(cfg.eos_token_id)
    if cfg.pad_token_id is None and eos:
        cfg.pad_token_id = eos[0]  # upstream: "Setting pad_token_id to eos_token_id for open-end generation"
    batch = input_ids.shape[0]
    is_encoder_decoder = hooks.run_encoder is not None

    _prepare_attention_mask(cfg, input_ids, model_kwargs, eos)
    model_kwargs["use_cache"] = cfg.use_cache
    if is_encoder_decoder:
        input_ids = _run_encoder(model, hooks, cfg, input_ids, model_kwargs)  # -> the decoder's start [B, 1]

    prompt_length = input_ids.shape[1]
    if cfg.max_new_tokens is not None:
        cfg.max_length = cfg.max_new_tokens + prompt_length
    processors = build_processors(cfg, prompt_length)
    decoder = Decoder(model, model_kwargs, hooks)

    if cfg.num_beams == 1 and not cfg.do_sample:
        return _greedy_or_sample(decoder, input_ids, cfg, processors, None, None, is_encoder_decoder)
    if cfg.num_beams == 1:
        rng = generator if generator is not None else np.random.default_rng(seed)
        input_ids = np.repeat(input_ids, cfg.num_return_sequences, axis=0)
        decoder.expand(cfg.num_return_sequences)
        return _greedy_or_sample(decoder, input_ids, cfg, processors, build_warpers(cfg), rng, is_encoder_decoder)
    if cfg.do_sample:
        raise NotImplementedError("beam sampling (num_beams > 1 with do_sample=True) is not implemented")
    if cfg.num_return_sequences > cfg.num_beams:
        raise ValueError(f"num_return_sequences ({cfg.num_return_sequences}) must be <= num_beams ({cfg.num_beams})")
    input_ids = np.repeat(input_ids, cfg.num_beams, axis=0)
    decoder.expand(cfg.num_beams)
    return _beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder)


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


def _encoder_fields(decoder, cfg):
    enc = decoder.kwargs.get("encoder_outputs")
    if enc is None:
        return {}
    return {"encoder_attentions": enc.attentions if cfg.output_attentions else None,
            "encoder_hidden_states": enc.hidden_states if cfg.output_hidden_states else None}


def _step_extras(out, is_encoder_decoder):  # -> (self attentions, cross attentions, hidden states)
    if is_encoder_decoder:
        return out.decoder_attentions, out.cross_attentions, out.decoder_hidden_states
    return out.attentions, None, out.hidden_states


def _greedy_or_sample(decoder, input_ids, cfg, processors, warpers, rng, is_encoder_decoder):
    """GenerationMixin.greedy_search (warpers None) and GenerationMixin.sample."""
    eos = np.array(_eos_list(cfg.eos_token_id), dtype=np.int64)
    unfinished = np.ones(input_ids.shape[0], dtype=np.int64)
    scores, attentions, cross, hidden = [], [], [], []
    while True:
        out = decoder.step(input_ids, cfg.output_attentions, cfg.output_hidden_states)
        step_scores = apply_all(processors, input_ids, out.logits[:, -1, :].copy())  # [N, V]
        if warpers is None:
            next_tokens = np.argmax(step_scores, axis=-1)
        else:
            step_scores = apply_all(warpers, input_ids, step_scores)
            next_tokens = _multinomial(softmax(step_scores), rng)
        scores.append(step_scores)
        a, c, h = _step_extras(out, is_encoder_decoder)
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
            sequences=input_ids, scores=tuple(scores) if keep else None, **_encoder_fields(decoder, cfg),
            decoder_attentions=tuple(attentions) if cfg.output_attentions else None,
            cross_attentions=tuple(cross) if cfg.output_attentions else None,
            decoder_hidden_states=tuple(hidden) if cfg.output_hidden_states else None,
            past_key_values=decoder.kwargs.get("past_key_values"))
    return GenerateDecoderOnlyOutput(
        sequences=input_ids, scores=tuple(scores) if keep else None,
        attentions=tuple(attentions) if cfg.output_attentions else None,
        hidden_states=tuple(hidden) if cfg.output_hidden_states else None,
        past_key_values=decoder.kwargs.get("past_key_values"))


def _multinomial(probs, rng):  # probs [N, V] -> [N] one draw per row; a zero-probability token is never drawn
    cumulative = np.cumsum(probs.astype(np.float64), axis=-1)
    u = rng.random(probs.shape[0]) * cumulative[:, -1]
    return np.array([np.searchsorted(c, x, side="right") for c, x in zip(cumulative, u)], dtype=np.int64)


# ---------------------------------------------------------------- beam search


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
        self.eos, self.pad = _eos_list(cfg.eos_token_id), cfg.pad_token_id
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


def _beam_search(decoder, input_ids, batch, cfg, processors, is_encoder_decoder):
    """GenerationMixin.beam_search: one cached step per token, the scorer picks the beams."""
    beams, eos = cfg.num_beams, _eos_list(cfg.eos_token_id)
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
        a, c, h = _step_extras(out, is_encoder_decoder)
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
            **common, **_encoder_fields(decoder, cfg),
            decoder_attentions=tuple(attentions) if cfg.output_attentions else None,
            cross_attentions=tuple(cross) if cfg.output_attentions else None,
            decoder_hidden_states=tuple(hidden) if cfg.output_hidden_states else None)
    return GenerateBeamDecoderOnlyOutput(
        **common, attentions=tuple(attentions) if cfg.output_attentions else None,
        hidden_states=tuple(hidden) if cfg.output_hidden_states else None)
