"""Dump a transformers TensorFlow (Keras 2) model's intermediates under upstream's (PyTorch) module names.

    from refimpl.dump import dump_tf
    dump = dump_tf(tf_model, {"input_ids": ids, "attention_mask": mask}, "dump.safetensors")

Written for transformers 4.37.2's TFOPTModel / TFOPTForCausalLM, TFXGLMModel / TFXGLMForCausalLM and
TFLEDModel / TFLEDForConditionalGeneration (`from_pretrained(directory, from_pt=True)` loads a PyTorch
checkpoint). Imports tensorflow only when called. Keras has no capture of its own: every layer's `call` is
wrapped for one forward (and restored afterwards); a layer's name is the Keras layer names from the model
down, joined with "." ("model.decoder.layers.0.fc1"), mapped to upstream's by tables.TF: dropout layers
dropped, the bare models' main-layer prefix removed, TF LED's "led.led.shared" -> "led.shared", OPT's
feed-forward reshaped to upstream's [B*T, X] rows, LED's Longformer projections transposed from [B, T, D]
to upstream's [T, B, D]; OPT's and XGLM's tied lm_head is the logits; LED's lm_head is the input of TF's
final_logits_bias layer. What TF computes without a layer (activation_fn, XGLM's embed_positions) is missing.

Your own Keras port: give its layers upstream's names (`Dense(name="q_proj")` in a layer named "self_attn" in
one named "layers.0" ...), return each layer's output first, and this adapter reads it as it is.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from .common import family_of, finish, first_array, model_context, to_upstream
from .tables import TF


def dump_tf(model, inputs: Mapping, path: Optional[Union[str, Path]] = None) -> Dict[str, np.ndarray]:
    """Run the TF `model` on `inputs` (the call's keyword arrays by upstream's names, e.g. input_ids,
    attention_mask, global_attention_mask, decoder_input_ids); -> {upstream module name: first output}."""
    tf = importlib.import_module("tensorflow")
    if not isinstance(model, tf.keras.layers.Layer):
        raise TypeError(f"dump_tf needs a transformers TF (Keras) model, got {type(model).__name__}")
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of the call's keyword arguments, got {type(inputs).__name__}")
    family = family_of(getattr(model, "config", None), TF, "dump_tf")
    table = TF[family]
    raw: Dict[str, Optional[np.ndarray]] = {}
    layers = named_layers(model)
    for name, layer in layers:
        wrap_call(layer, name, raw, dict(table.inputs).get(name))
    try:
        model(**{k: np.asarray(v) for k, v in inputs.items()}, training=False)
    finally:
        for _name, layer in layers:
            del layer.call  # the class's own call again
    return finish(to_upstream(raw, table, model_context(type(model).__name__, model.config)), path)


def named_layers(model):  # -> [(name, layer)]: every Keras layer once, the root as "", children by joined names
    found, seen = [("", model)], {id(model)}

    def walk(layer, path):
        for child in layer._flatten_layers(include_self=False, recursive=False):  # direct children, in order
            if id(child) in seen:  # a shared layer (LED's embedding) is named where it is first met
                continue
            seen.add(id(child))
            name = f"{path}.{child.name}" if path else child.name
            found.append((name, child))
            walk(child, name)

    walk(model, "")
    return found


def wrap_call(layer, name: str, raw: dict, input_name: Optional[str]) -> None:
    """Record the layer's first output of its first call under `name` (and with `input_name`, its first input)."""
    original = layer.call

    def call(*args, **kwargs):
        if input_name is not None and args and input_name not in raw:
            raw[input_name] = first_array(args[0])
        output = original(*args, **kwargs)
        if name not in raw:
            raw[name] = first_array(output)
        return output

    layer.call = call
