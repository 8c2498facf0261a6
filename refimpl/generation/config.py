"""GenerationConfig: every field of transformers 4.37.2's `GenerationConfig` (generation/configuration_utils.py),
with upstream's names and defaults, and the checks generate() runs before it starts.

`GenerationConfig.validate(model_config)` refuses, with a ValueError naming the field:
  - values upstream refuses (its `GenerationConfig.validate` and the constructors of the logits processors it
    would build), and a few it silently ignores (a negative `top_k`, an `epsilon_cutoff` outside [0, 1));
  - token ids outside the model's vocabulary (bad words, forced, suppressed, biased, eos, pad, ...);
  - options refimpl does not implement, set to anything but their default (`REFUSED`);
  - the documented limits (`LIMITS`): lengths beyond the decoder's position table and beam searches whose
    scores would not fit in memory.
The arguments of generate() that are not configuration (`logits_processor`, `streamer`, ...) are refused
by `updated` unless they are given their no-op value.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

# generate() arguments upstream takes besides the configuration, with their no-op values. refimpl implements
# none of them: any other value is refused (GenerationConfig.updated).
GENERATE_ARGUMENTS = {
    "logits_processor": "None or an empty list", "stopping_criteria": "None or an empty list",
    "prefix_allowed_tokens_fn": "None", "synced_gpus": "None or False", "assistant_model": "None",
    "streamer": "None", "negative_prompt_ids": "None", "negative_prompt_attention_mask": "None",
}

# fields refimpl does not implement: (the values that leave upstream's output unchanged, what upstream does)
REFUSED = {
    "max_time": ((None,), "stops after a wall-clock time (MaxTimeCriteria)"),
    "guidance_scale": ((None, 1, 1.0), "classifier-free guidance (UnbatchedClassifierFreeGuidanceLogitsProcessor)"),
    "num_assistant_tokens": ((5,), "assisted generation"),
    "num_assistant_tokens_schedule": (("heuristic",), "assisted generation"),
    "prompt_lookup_num_tokens": ((None,), "prompt lookup decoding"),
    "generation_kwargs": (({},), "arguments for pipelines"),
}

# Documented limits (README "Generation options"). Nothing upstream-compatible is refused by them except a
# length beyond the position table of XGLM, whose sinusoidal positions upstream extends without end.
LIMITS = {
    "max_rows": 2 ** 16,  # batch * num_beams (or num_return_sequences): the rows decoded side by side
    "max_score_elements": 2 ** 28,  # batch * num_beams * vocab_size: one step's beam scores (2 GiB in float64)
}

# options upstream's validate warns about when the mode does not use them (value: the default, no warning)
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "typical_p": 1.0, "top_k": 50, "epsilon_cutoff": 0.0,
                     "eta_cutoff": 0.0}
BEAM_DEFAULTS = {"early_stopping": False, "num_beam_groups": 1, "diversity_penalty": 0.0, "length_penalty": 1.0,
                 "constraints": None}


@dataclass
class GenerationConfig:
    """transformers.GenerationConfig (4.37.2): every field, upstream's names and defaults."""

    # the length of the output
    max_length: int = 20
    max_new_tokens: Optional[int] = None
    min_length: int = 0
    min_new_tokens: Optional[int] = None
    early_stopping: Any = False  # True, False or "never"
    max_time: Optional[float] = None
    # the decoding strategy
    do_sample: bool = False
    num_beams: int = 1
    num_beam_groups: int = 1
    penalty_alpha: Optional[float] = None
    use_cache: bool = True
    # logits processors and warpers (processors.py)
    temperature: Optional[float] = 1.0
    top_k: Optional[int] = 50
    top_p: Optional[float] = 1.0
    typical_p: Optional[float] = 1.0
    epsilon_cutoff: Optional[float] = 0.0
    eta_cutoff: Optional[float] = 0.0
    diversity_penalty: Optional[float] = 0.0
    repetition_penalty: Optional[float] = 1.0
    encoder_repetition_penalty: Optional[float] = 1.0
    length_penalty: float = 1.0
    no_repeat_ngram_size: Optional[int] = 0
    bad_words_ids: Optional[list] = None  # [[token, ...], ...]
    force_words_ids: Optional[list] = None  # [[token, ...], ...] or [[[token, ...], ...], ...] (disjunctive)
    renormalize_logits: bool = False
    constraints: Optional[list] = None
    forced_bos_token_id: Optional[int] = None
    forced_eos_token_id: Any = None  # a token or a list of tokens
    remove_invalid_values: bool = False
    exponential_decay_length_penalty: Optional[tuple] = None  # (start_index, decay_factor)
    suppress_tokens: Optional[list] = None
    begin_suppress_tokens: Optional[list] = None
    forced_decoder_ids: Optional[list] = None  # [[generation index, token], ...]
    sequence_bias: Optional[dict] = None  # {(token, ...): float bias}
    guidance_scale: Optional[float] = None
    low_memory: Optional[bool] = None  # upstream: contrastive search in sequential batches, same output
    # what generate() returns
    num_return_sequences: int = 1
    output_attentions: bool = False
    output_hidden_states: bool = False
    output_scores: bool = False
    return_dict_in_generate: bool = False
    # special tokens
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Any = None  # a token or a list of tokens
    # encoder-decoder models (upstream applies encoder_no_repeat_ngram_size to a decoder-only prompt too)
    encoder_no_repeat_ngram_size: Optional[int] = 0
    decoder_start_token_id: Optional[int] = None
    # assisted generation and prompt lookup (refused: REFUSED)
    num_assistant_tokens: int = 5
    num_assistant_tokens_schedule: str = "heuristic"
    prompt_lookup_num_tokens: Optional[int] = None
    generation_kwargs: dict = field(default_factory=dict)
    # metadata (no effect on generation)
    _from_model_config: bool = False
    _commit_hash: Optional[str] = None
    transformers_version: Optional[str] = "4.37.2"

    @classmethod
    def for_model(cls, model) -> "GenerationConfig":
        """What upstream's from_pretrained gives a model: the checkpoint's generation_config.json when there is
        one (GenerationConfig.from_pretrained: defaults plus the file), else GenerationConfig.from_model_config."""
        names = {f.name for f in dataclasses.fields(cls)}
        source = model.source
        file = Path(source) / "generation_config.json" if source is not None else None
        if file is not None and file.exists():
            saved = _read_json_object(file)
            for name in GENERATE_ARGUMENTS:
                if name in saved:
                    raise ValueError(f"{file}: `{name}` is an argument of generate(), not a generation option")
            config = cls(**{k: v for k, v in saved.items() if k in names})  # other keys: unused, as upstream
            config.check_types(where=f"{file}: ")
            return config
        raw = {**dataclasses.asdict(model.config), **model.config.extra}
        config = cls(**{k: v for k, v in raw.items() if k in names}, _from_model_config=True)
        config.check_types(where="config.json: ")
        return config

    def updated(self, **kwargs):  # -> (new config, the kwargs that are not generation options)
        """GenerationConfig.update on a copy. generate() arguments refimpl does not implement are refused
        unless given their no-op value (then dropped); the other unknown kwargs are model kwargs."""
        for name, no_op in GENERATE_ARGUMENTS.items():
            value = kwargs.pop(name, None)
            if not (value is None or value is False and name == "synced_gpus"
                    or name in ("logits_processor", "stopping_criteria") and _is_empty_list(value)):
                raise ValueError(f"generate(): `{name}` is not implemented by refimpl; it must be {no_op}, "
                                 f"got {_show(value)}")
        names = {f.name for f in dataclasses.fields(self)}
        options = {k: v for k, v in kwargs.items() if k in names}
        return dataclasses.replace(self, **options), {k: v for k, v in kwargs.items() if k not in names}

    def check_types(self, where: str = "") -> None:
        """Each field's type and range, without the model (what a generation_config.json must satisfy).
        `where` prefixes the messages (the file)."""
        for name, check in _FIELD_CHECKS.items():
            problem = check(getattr(self, name))
            if problem:
                raise ValueError(f"{where}{name} {problem}, got {_show(getattr(self, name))}")

    def validate(self, model_config) -> None:
        """Raises ValueError for values upstream refuses, for options refimpl does not implement, for token ids
        outside the vocabulary and for requests beyond the documented limits."""
        if self.num_beams is None:  # upstream: a warning, then 1
            warnings.warn("`num_beams` is set to None - defaulting to 1.", UserWarning)
            self.num_beams = 1
        self.check_types()
        for name, (no_ops, what) in REFUSED.items():
            value = getattr(self, name)
            if not any(value == v and type(value) is type(v) or value is v for v in no_ops):
                raise ValueError(f"{name}={_show(value)} is not implemented by refimpl (upstream: {what}); "
                                 f"leave it at {no_ops[0]!r}")
        self._check_processor_values()
        self._warn_unused()
        self._check_relations()
        self._check_tokens(model_config.vocab_size)
        self._check_limits(model_config)

    def check_batch(self, batch: int, vocab: int) -> None:
        """The memory bounds (LIMITS) once the batch is known."""
        self._check_rows(batch, vocab)

    # --- the checks behind validate ---------------------------------------------------------------------

    def _check_processor_values(self) -> None:
        """The constructors of the processors upstream would build (logits_process.py), with their conditions;
        the sampling-only warpers' ranges are checked whether or not they are used."""
        for name in ("repetition_penalty", "encoder_repetition_penalty"):
            value = getattr(self, name)
            if value is not None and value != 1.0 and not (isinstance(value, float) and value > 0):
                raise ValueError(f"{name} has to be a strictly positive float (upstream requires a float, e.g. "
                                 f"1.2), got {_show(value)}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 disables top-k), got {_show(self.top_k)}")
        for name in ("top_p", "typical_p"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"{name} must be a float in (0, 1] (1 disables it), got {_show(value)}")
        for name in ("epsilon_cutoff", "eta_cutoff"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name} must be a float in [0, 1) (0 disables it), got {_show(value)}")
        if self.do_sample and self.temperature is not None and self.temperature != 1.0:
            if not (isinstance(self.temperature, float) and self.temperature > 0):
                hint = " If you're looking for greedy decoding, set do_sample=False." if self.temperature == 0 else ""
                raise ValueError(f"temperature (={_show(self.temperature)}) has to be a strictly positive float, "
                                 f"otherwise your next token scores will be invalid.{hint}")
        if self.diversity_penalty is not None and self.diversity_penalty != 0:
            if not (isinstance(self.diversity_penalty, float) and self.diversity_penalty > 0):
                raise ValueError(f"diversity_penalty should be a float strictly larger than 0, "
                                 f"got {_show(self.diversity_penalty)}")
            if self.num_beams < 2 or self.num_beam_groups < 2:
                raise ValueError(f"diversity_penalty={self.diversity_penalty} needs group beam search: num_beams "
                                 f"({self.num_beams}) and num_beam_groups ({self.num_beam_groups}) must both be > 1")
        if self.num_beam_groups > self.num_beams:
            raise ValueError(f"num_beam_groups ({self.num_beam_groups}) has to be smaller or equal to num_beams "
                             f"({self.num_beams})")
        if self.sequence_bias is not None:
            _check_sequence_bias(self.sequence_bias)
        if self.bad_words_ids is not None and not _without_eos(self.bad_words_ids, self.eos_token_id):
            raise ValueError(f"bad_words_ids {self.bad_words_ids} holds only eos tokens, which are never banned: "
                             f"nothing is left to ban (upstream refuses it too)")
        if self.exponential_decay_length_penalty is not None and self.eos_token_id is None:
            raise ValueError("exponential_decay_length_penalty raises the eos score: it needs eos_token_id")

    def _warn_unused(self) -> None:
        """GenerationConfig.validate's warnings: options the chosen mode does not use (upstream's messages)."""
        unused = []
        if self.do_sample is False:
            unused += [(name, "do_sample", "`do_sample` is set to `False`", "sample-based generation modes",
                        "`do_sample=True`") for name, default in SAMPLING_DEFAULTS.items()
                       if getattr(self, name) != default and not (name == "top_k" and self.penalty_alpha is not None)]
        if self.num_beams == 1:
            unused += [(name, "num_beams", "`num_beams` is set to 1", "beam-based generation modes", "`num_beams>1`")
                       for name, default in BEAM_DEFAULTS.items() if getattr(self, name) != default]
        for name, _, state, modes, fix in unused:
            warnings.warn(f"{state}. However, `{name}` is set to `{getattr(self, name)}` -- this flag is only used in "
                          f"{modes}. You should set {fix} or unset `{name}`.", UserWarning)

    def _check_relations(self) -> None:
        """GenerationConfig.validate's checks of attribute relations (upstream's messages)."""
        if self.num_beams > 1 and self.constraints is not None:
            for flag, bad in (("do_sample", self.do_sample is True), ("num_beam_groups", self.num_beam_groups != 1)):
                if bad:
                    raise ValueError(f"`constraints` is not `None`, triggering constrained beam search. However, "
                                     f"`{flag}` is set to `{getattr(self, flag)}`, which is incompatible with this "
                                     f"generation mode. Set `constraints=None` or unset `{flag}` to continue.")
        if self.num_beams > 1 and (self.diversity_penalty != 0.0 or self.num_beam_groups != 1):
            prefix = ("`diversity_penalty` is not 0.0 or `num_beam_groups` is not 1, triggering group beam search. "
                      "In this generation mode, ")
            if self.do_sample is True:
                raise ValueError(prefix + "`do_sample` must be set to `False`")
            if self.num_beams % self.num_beam_groups != 0:
                raise ValueError(prefix + "`num_beams` should be divisible by `num_beam_groups`")
            if not self.diversity_penalty:
                raise ValueError(prefix + "`diversity_penalty` should be greater than `0.0`, otherwise your groups "
                                          "will be identical.")
        if self.num_return_sequences != 1:
            if self.num_beams == 1 and not self.do_sample:
                raise ValueError("Greedy methods without beam search do not support `num_return_sequences` different "
                                 f"than 1 (got {self.num_return_sequences}).")
            if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
                raise ValueError(f"`num_return_sequences` ({self.num_return_sequences}) has to be smaller or equal "
                                 f"to `num_beams` ({self.num_beams}).")

    def _check_tokens(self, vocab: int) -> None:
        """Every token id that indexes the scores or is fed to the model lies in [0, vocab), as upstream indexes
        with it; an eos that a processor indexes with may also be negative (torch, like NumPy, counts it from
        the end). pad_token_id, and an eos that is only compared, may be any int, as upstream (its own recipes
        set both to -1: never generated). A pad outside the vocabulary that fills a finished row is then fed
        to the model, which refuses it (upstream: torch's IndexError)."""
        for name, ids in self._token_ids():
            low = -vocab if name == "eos_token_id" else 0
            for token in ids:
                if not low <= token < vocab:
                    raise ValueError(f"{name} holds the token id {token}, outside the vocabulary [{low}, {vocab}) "
                                     f"of this model")

    def _eos_indexes_scores(self) -> bool:  # min_length, min_new_tokens, exponential_decay_length_penalty
        return (self.min_length or 0) > 0 or (self.min_new_tokens or 0) > 0 \
            or self.exponential_decay_length_penalty is not None

    def _token_ids(self):  # -> (field, [ids]) for every field whose token ids index the scores
        eos = ("eos_token_id",) if self._eos_indexes_scores() else ()
        yield from ((name, _flat(getattr(self, name))) for name in (
            "bos_token_id", *eos, "decoder_start_token_id", "forced_bos_token_id",
            "forced_eos_token_id", "bad_words_ids", "force_words_ids", "suppress_tokens", "begin_suppress_tokens"))
        yield "forced_decoder_ids", [token for _, token in self.forced_decoder_ids or ()]
        yield "sequence_bias", [t for key in (self.sequence_bias or {}) for t in key]

    def _check_limits(self, model_config) -> None:
        """The documented limits: a length within the decoder's position table, a beam search that fits."""
        limit = position_limit(model_config)
        requested = ("max_new_tokens", self.max_new_tokens) if self.max_new_tokens is not None \
            else ("max_length", self.max_length)
        if limit is not None and requested[1] > limit:
            raise ValueError(f"{requested[0]}={requested[1]} exceeds this model's position limit {limit} "
                             f"(max_position_embeddings): refimpl generates at most that many positions")
        self._check_rows(1, model_config.vocab_size)

    def _check_rows(self, batch: int, vocab: int) -> None:
        per_input = max(self.num_beams, self.num_return_sequences)
        if per_input == 1:
            return
        rows = batch * per_input
        if rows > LIMITS["max_rows"]:
            raise ValueError(f"batch ({batch}) * num_beams or num_return_sequences ({per_input}) = {rows} rows "
                             f"exceeds refimpl's limit of {LIMITS['max_rows']} rows decoded side by side")
        if rows * vocab > LIMITS["max_score_elements"]:
            raise ValueError(f"batch ({batch}) * num_beams ({self.num_beams}) rows with a vocabulary of {vocab} need "
                             f"{rows * vocab} scores per step, above refimpl's limit of {LIMITS['max_score_elements']}")


def position_limit(model_config) -> Optional[int]:
    """The decoder's position table size (LED: max_decoder_position_embeddings), the generation length limit."""
    for name in ("max_decoder_position_embeddings", "max_position_embeddings"):
        if getattr(model_config, name, None) is not None:
            return getattr(model_config, name)
    return None


def eos_list(eos) -> List[int]:
    if eos is None:
        return []
    return [eos] if isinstance(eos, numbers.Integral) else list(eos)


# --- field checks: each returns None when the value is fine, else what was expected ------------------------

def _show(value) -> str:  # a value as given (a Python int stays itself, whatever its size), with its type
    text = repr(value)
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{text} ({type(value).__name__})"


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v  # not NaN


def _is_empty_list(v) -> bool:
    return isinstance(v, list) and len(v) == 0


def _int(minimum, optional=False):
    def check(v):
        if v is None and optional:
            return None
        if not _is_int(v) or v < minimum:
            return f"must be {'None or ' if optional else ''}an int >= {minimum}"
    return check


def _real(optional=False):
    def check(v):
        if v is None and optional:
            return None
        if not _is_real(v):
            return f"must be {'None or ' if optional else ''}a real number"
    return check


def _bool(optional=False):
    def check(v):
        if not (isinstance(v, bool) or v is None and optional):
            return f"must be {'None or ' if optional else ''}True or False"
    return check


def _token(v) -> bool:
    return _is_int(v) and v >= 0


def _int64(v) -> bool:  # pad and eos: any int torch can hold
    return _is_int(v) and -2 ** 63 <= v < 2 ** 63


def _tokens(allow_single=False, optional=True, token=_token):  # None, a token (if allowed) or a list of tokens
    def check(v):
        if v is None and optional or allow_single and token(v):
            return None
        if not (isinstance(v, (list, tuple)) and all(token(t) for t in v) and (v or not allow_single)):
            what = "ints >= 0" if token is _token else "64-bit ints"
            return (f"must be None, a token id or a non-empty list of token ids ({what})" if allow_single
                    else f"must be None or a list of token ids ({what})")
    return check


def _token_lists(nested=False):  # bad_words_ids [[ids]], force_words_ids [[ids] or [[ids], ...]]
    def word(w):
        return isinstance(w, list) and len(w) > 0 and all(_token(t) for t in w)

    def check(v):
        if v is None:
            return None
        ok = isinstance(v, list) and len(v) > 0 and all(
            word(w) or nested and isinstance(w, list) and len(w) > 0 and all(word(x) for x in w) for w in v)
        if not ok:
            return ("must be None or a non-empty list of non-empty lists of token ids (ints >= 0)" +
                    (", or of lists of such lists (disjunctive constraints)" if nested else ""))
    return check


def _forced_decoder_ids(v):
    if v is None:
        return None
    if not (isinstance(v, (list, tuple)) and len(v) > 0 and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and _is_int(p[0]) and p[0] >= 1 and _token(p[1])
            for p in v)):
        return "must be None or a non-empty list of [generation index >= 1, token id] pairs"


def _decay(v):
    if v is None:
        return None
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and _is_int(v[0]) and v[0] >= 0 and _is_real(v[1])):
        return "must be None or a pair (start_index: int >= 0, decay_factor: float)"


def _sequence_bias(v):
    if v is not None and not isinstance(v, dict):
        return "must be None or a dict {(token id, ...): float bias}"


def _check_sequence_bias(bias) -> None:  # SequenceBiasLogitsProcessor._validate_arguments, upstream's conditions
    if len(bias) == 0:
        raise ValueError(f"sequence_bias has to be a non-empty dictionary, got {_show(bias)}")
    for key, value in bias.items():
        if not isinstance(key, tuple) or len(key) == 0 or not all(_token(t) for t in key):
            raise ValueError(f"sequence_bias: each key has to be a non-empty tuple of token ids (ints >= 0), "
                             f"got the key {_show(key)}")
        if not isinstance(value, float):
            raise ValueError(f"sequence_bias: each bias has to be a float, got {_show(value)} for {key}")


def _without_eos(bad_words_ids, eos) -> list:  # NoBadWordsLogitsProcessor: a bad word [eos] is never banned
    return [w for w in bad_words_ids if all(list(w) != [e] for e in eos_list(eos))]


def _string(v):
    if not isinstance(v, str):
        return "must be a string"


def _metadata_string(v):
    if v is not None and not isinstance(v, str):
        return "must be None or a string"


def _early_stopping(v):
    if not (isinstance(v, bool) or v == "never"):
        return "must be True, False or 'never'"


def _flat(value) -> list:  # every int inside a (nested) list / tuple
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return [value]


_FIELD_CHECKS = {
    "max_length": _int(0), "max_new_tokens": _int(0, True), "min_length": _int(0), "min_new_tokens": _int(0, True),
    "max_time": _real(True),
    "do_sample": _bool(), "num_beams": _int(1, True), "num_beam_groups": _int(1), "penalty_alpha": _real(True),
    "use_cache": _bool(),
    "temperature": _real(True), "top_k": _int(0, True), "top_p": _real(True), "typical_p": _real(True),
    "epsilon_cutoff": _real(True), "eta_cutoff": _real(True), "diversity_penalty": _real(True),
    "repetition_penalty": _real(True), "encoder_repetition_penalty": _real(True), "length_penalty": _real(),
    "no_repeat_ngram_size": _int(0, True), "encoder_no_repeat_ngram_size": _int(0, True),
    "bad_words_ids": _token_lists(), "force_words_ids": _token_lists(nested=True),
    "renormalize_logits": _bool(), "constraints": lambda v: None if v is None or isinstance(v, list) and v
    else "must be None or a non-empty list of constraints",
    "forced_bos_token_id": _int(0, True), "forced_eos_token_id": _tokens(allow_single=True),
    "remove_invalid_values": _bool(), "exponential_decay_length_penalty": _decay,
    "suppress_tokens": _tokens(), "begin_suppress_tokens": _tokens(), "forced_decoder_ids": _forced_decoder_ids,
    "sequence_bias": _sequence_bias, "guidance_scale": _real(True), "low_memory": _bool(True),
    "num_return_sequences": _int(1), "output_attentions": _bool(), "output_hidden_states": _bool(),
    "output_scores": _bool(), "return_dict_in_generate": _bool(),
    # upstream takes any int as pad and eos (its own test recipes set both to -1: "never generated")
    "pad_token_id": lambda v: None if v is None or _int64(v) else "must be None or a 64-bit int",
    "bos_token_id": _int(0, True), "eos_token_id": _tokens(allow_single=True, token=_int64),
    "decoder_start_token_id": _int(0, True),
    "num_assistant_tokens": _int(0), "num_assistant_tokens_schedule": _string,
    "prompt_lookup_num_tokens": _int(0, True),
    "generation_kwargs": lambda v: None if isinstance(v, dict) else "must be a dict",
    "_from_model_config": _bool(), "_commit_hash": _metadata_string, "transformers_version": _metadata_string,
    "early_stopping": _early_stopping,
}


def _read_json_object(file: Path) -> dict:
    """A JSON object from a regular file, with errors naming the file."""
    if not file.is_file():
        raise ValueError(f"{file} is not a regular file")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{file} is not valid JSON: {str(err)[:200] or type(err).__name__}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(raw).__name__}")
    return raw
