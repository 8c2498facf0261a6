"""Dump a transformers Flax model's intermediates under upstream's (PyTorch) module names.

    from refimpl.dump import dump_flax
    dump = dump_flax(flax_model, {"input_ids": ids, "attention_mask": mask}, "dump.safetensors")

Written for transformers 4.37.2's FlaxOPTModel / FlaxOPTForCausalLM and FlaxXGLMModel / FlaxXGLMForCausalLM
(`from_pretrained(directory, from_pt=True)` loads a PyTorch checkpoint). Imports jax and flax only when
called. Runs `model.module.apply(..., capture_intermediates=True, mutable=["intermediates"])` with the
position_ids the model's own __call__ would build, then maps each module path to upstream's name
(tables.FLAX): "model.decoder.layers.0.fc1.__call__" is upstream's model.decoder.layers.0.fc1; its
first call's first output is kept; dropout layers and the layer collection are dropped; the tied lm_head is
the logits. Modules Flax computes as plain functions (activation_fn, XGLM's sinusoidal embed_positions) are
missing from the dump, as the verdict's coverage says.

Your own Flax port: name its modules after upstream's (`nn.Dense(name="q_proj")` inside a module named
"self_attn" inside "0" inside "layers" ...), return each module's output first, and its paths are
upstream's names; keep upstream's layouts (OPT's feed-forward on [B*T, D] rows, upstream's shapes).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from .common import family_of, finish, first_array, model_context, to_upstream
from .tables import FLAX

ARGUMENTS = ("input_ids", "attention_mask", "position_ids")


def opt_positions(mask):  # [B, T] -> [B, T]: FlaxOPTForCausalLM.__call__'s position_ids (its module adds 2)
    return mask.cumsum(axis=1) * mask - 1


def xglm_positions(mask):  # [B, T] -> [B, T]: FlaxXGLMForCausalLM.__call__'s position_ids (padding ignored)
    return np.broadcast_to(np.arange(mask.shape[1]), mask.shape)


POSITIONS = {"opt": opt_positions, "xglm": xglm_positions}


def dump_flax(model, inputs: Mapping, path: Optional[Union[str, Path]] = None, params=None) -> Dict[str, np.ndarray]:
    """Run the Flax `model` (its `params`, or those given) on `inputs` ({"input_ids", "attention_mask",
    "position_ids"} as NumPy arrays, by upstream's names); -> {upstream module name: first output, float64}."""
    jnp = importlib.import_module("jax.numpy")
    flatten_dict = importlib.import_module("flax.traverse_util").flatten_dict
    if not hasattr(model, "module") or not hasattr(model, "params"):
        raise TypeError(f"dump_flax needs a transformers Flax model (FlaxOPTForCausalLM, ...), got {type(model).__name__}")
    family = family_of(getattr(model, "config", None), FLAX, "dump_flax")
    arrays = flax_arguments(inputs, family)
    _, state = model.module.apply({"params": model.params if params is None else params},
                                  **{k: jnp.asarray(v, dtype="i4") for k, v in arrays.items()},
                                  output_attentions=False, output_hidden_states=False, return_dict=True,
                                  deterministic=True, capture_intermediates=True, mutable=["intermediates"])
    raw = {}
    for key, calls in flatten_dict(state["intermediates"]).items():  # (path..., "__call__") -> (one output per call)
        if key[-1] == "__call__":
            raw[".".join(key[:-1])] = first_array(calls[0])
    return finish(to_upstream(raw, FLAX[family], model_context(type(model).__name__, model.config)), path)


def flax_arguments(inputs: Mapping, family: str) -> Dict[str, np.ndarray]:  # -> input_ids, attention_mask, position_ids
    if not isinstance(inputs, Mapping) or "input_ids" not in inputs:
        raise ValueError("dump_flax: inputs must be a mapping with 'input_ids' (and optionally 'attention_mask', "
                         "'position_ids') as NumPy arrays")
    unknown = sorted(set(inputs) - set(ARGUMENTS))
    if unknown:
        raise ValueError(f"dump_flax: unsupported argument(s) {', '.join(unknown)} (expected {', '.join(ARGUMENTS)})")
    ids = np.asarray(inputs["input_ids"])
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"dump_flax: input_ids must be integer [B, T], got {ids.dtype} {ids.shape}")
    mask = np.asarray(inputs.get("attention_mask", np.ones_like(ids)))
    if mask.shape != ids.shape:
        raise ValueError(f"dump_flax: attention_mask {mask.shape} must have input_ids' shape {ids.shape}")
    positions = inputs.get("position_ids")
    positions = POSITIONS[family](mask.astype(np.int64)) if positions is None else np.asarray(positions)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
