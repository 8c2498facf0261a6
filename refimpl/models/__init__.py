"""The model families. Each `refimpl/models/<family>.py` has the same four parts, in this order:

    1. config        its config dataclass (fields = config.json keys, upstream's defaults)
    2. parameters    param_shapes(cfg, architecture) -> {state-dict name: shape}
    3. base model    the base forward, split along upstream's own classes (embeddings, layers, stack)
    4. heads         one small function per upstream head class, on the base model's outputs
and ends with `SPEC = FamilySpec(...)` (refimpl/family.py), the only thing the rest of refimpl reads.

Registering a family is one line in FAMILIES: its model_type and module. Modules load on first use
(a family's kernels pull in Numba), and each spec checks itself as its module loads.
"""
import importlib
from functools import lru_cache
from pathlib import Path
from typing import Union

from ..config import BaseConfig, read_config_json
from ..family import FamilySpec

FAMILIES = {
    "opt": "refimpl.models.opt",
    "xglm": "refimpl.models.xglm",
    "nezha": "refimpl.models.nezha",
    "led": "refimpl.models.led",
}


@lru_cache(maxsize=None)
def family(model_type: str) -> FamilySpec:
    """The spec of the family whose config.json says `"model_type": model_type`."""
    if model_type not in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not supported; expected one of {sorted(FAMILIES)}")
    spec = importlib.import_module(FAMILIES[model_type]).SPEC
    if not isinstance(spec, FamilySpec) or spec.model_type != model_type:
        raise TypeError(f"{FAMILIES[model_type]}.SPEC must be the FamilySpec of {model_type!r}")
    return spec


def config_from_dict(raw: dict) -> BaseConfig:
    """A config.json dict -> its family's config dataclass (dispatch on `model_type`)."""
    return family(raw.get("model_type")).config.from_dict(raw)


def load_config(path: Union[str, Path]) -> BaseConfig:
    """Read `config.json` from a checkpoint directory (or the file itself) into its family's config."""
    return config_from_dict(read_config_json(path))
