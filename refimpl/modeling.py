"""`from_pretrained` and the thin model object that bundles (config, params, forward function).

The forward passes themselves are plain functions in `refimpl.models.<family>`; the object exists so
that `model(input_ids=..., attention_mask=...)` reads like upstream.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from .checkpoint import match_params, read_state_dict, resolve_checkpoint
from .config import BaseConfig, check_islands
from .models import family, load_config
from .layers import Params
from .trace import model_call, record

DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype) -> np.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; use 'float32' or 'float64'")
        return np.dtype(DTYPES[dtype])
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype {dt} is not supported; use float32 or float64")
    return dt


class Model:
    """A loaded model: `model(**upstream_kwargs)` runs the forward function of `architecture`."""

    def __init__(self, config: BaseConfig, params: dict, architecture: str, dtype, source=None):
        self.spec = family(config.model_type)  # the family's declared interface (refimpl/family.py)
        self.config, self.architecture = config, self.spec.check_architecture(architecture)
        self.params = Params(params)  # its sub-views are kept (refimpl.layers.sub)
        self.source = source  # the checkpoint directory (generate() reads its generation_config.json)
        self.dtype = np.dtype(dtype)
        self.forward_fn = self.spec.architectures[architecture]

    def __call__(self, *args, **kwargs):
        """Upstream's forward: the same keyword (and positional) arguments, `return_dict` included."""
        with model_call():  # refimpl.trace: one Trace per call under tracing(per_call=True)
            out = self.forward_fn(self.params, self.config, *args, **kwargs)
            items = out if isinstance(out, tuple) else out.to_tuple()  # return_dict=False: upstream's tuple
            record(self.params, "", items[0] if items else None)  # the root module (trace)
        return out

    forward = __call__

    def generate(self, input_ids=None, **kwargs):
        """Upstream's model.generate(): greedy, beam search or sampling; see refimpl.generation."""
        from .generation import generate

        return generate(self, input_ids, **kwargs)

    def __repr__(self):
        n = sum(v.size for v in self.params.values())
        islands = f", islands={self.config.islands} ({self.config.islands_cpu})" if self.config.islands else ""
        return f"<refimpl {self.architecture} ({n:,} parameters, {self.dtype}{islands})>"


def default_architecture(config: BaseConfig) -> str:
    if config.architectures:
        return config.architectures[0]
    return family(config.model_type).base_model


def from_pretrained(path: Union[str, Path], architecture: Optional[str] = None, dtype="float32",
                    cache_dir=None, revision: Optional[str] = None, islands: Optional[str] = None,
                    islands_cpu: str = "avx2", mmap: bool = False) -> Model:
    """Load a checkpoint directory saved by upstream's `save_pretrained` (config.json + weights).

    path: a directory, or a repo id ("facebook/opt-125m") already in the Hugging Face cache
    (`cache_dir`, else the standard environment variables; `revision` defaults to "main"); never downloads.

    architecture: the upstream class name whose head to build (default: the config's first
    `architectures` entry). dtype: "float32" (default) or "float64"; every weight is cast to it once
    and all computation happens in it.

    islands: None (default): float64 computes every step in float64, the exact mathematics, the same bits
    on every CPU. "upstream": reproduce upstream's float64 runs, which compute a few steps in float32
    (refimpl.config.ISLANDS), LED's softmaxes as torch's `islands_cpu` kernel does ("avx2" or "avx512":
    torch.backends.cpu.get_cpu_capability() says which upstream runs), XGLM's and NEZHA's sinusoid tables
    with torch's own float32 exp/sin/cos, the same on every kernel (MKL's; needs `pip install mkl==2024.2.0`:
    refimpl/torch_vml.py). No effect on float32 models.

    mmap: False (default) copies the weights, so later changes to the files cannot affect the model. True keeps
    weights needing no cast memory-mapped, shared by processes loading the same files; then never truncate or
    rewrite the files in place while loaded (SIGBUS, or silently changed weights). See refimpl/checkpoint.py.
    """
    dtype = resolve_dtype(dtype)
    check_islands(islands, islands_cpu)
    path = resolve_checkpoint(path, cache_dir=cache_dir, revision=revision)
    config = load_config(path).replace(islands=islands, islands_cpu=islands_cpu)
    spec = family(config.model_type)
    architecture = spec.check_architecture(architecture or default_architecture(config))
    state = read_state_dict(path)
    shapes = spec.param_shapes(config, architecture)
    # a zero-size weight (every head of a layer pruned) holds no numbers; save_pretrained drops it as "shared"
    defaults = {**{name: np.zeros for name, shape in shapes.items() if 0 in shape}, **spec.missing_defaults}
    params = match_params(state, shapes, dtype, base_prefix=spec.base_prefix, tied=spec.tied,
                          ignore=spec.ignored_buffers, defaults=defaults, source=str(path), mmap=mmap)
    return Model(config, params, architecture, dtype, source=Path(path))
