"""Dump a PyTorch model's intermediates under its module names: what `refimpl diff --against` reads.

    from refimpl.dump import dump_torch
    dump = dump_torch(torch_model, {"input_ids": ids, "attention_mask": mask}, "dump.safetensors")

Imports torch only when called (`import refimpl` never does). Plain forward hooks on every module of
`model.named_modules()`; each module's first output (the first element of a tuple or ModelOutput, when
it is a tensor), from its first call in the forward; the root module under "". Values are stored as
float64 NumPy arrays in execution order; with `path`, also written as safetensors (or .npz).

The same names from other implementations: refimpl.dump's dump_flax, dump_tf and dump_onnx for
transformers' Flax and TF models and torch.onnx.export's exports; a C++ or GPU port writes each tensor under
the PyTorch module name it implements, in upstream's layout, with `save_dump`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from .common import save_dump


def _torch():  # imported on first use only: `import refimpl` never imports torch
    return importlib.import_module("torch")


def first_tensor(output):  # a module's output -> its first tensor, or None
    torch = _torch()
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        output = output[0] if output else None
    return output if torch.is_tensor(output) else None


def dump_torch(model, inputs: Mapping, path: Optional[Union[str, Path]] = None) -> Dict[str, np.ndarray]:
    """Run `model(**inputs)` (arrays are turned into tensors: integer ones as int64, float ones in the
    model's dtype) without gradients; -> {module name: first output as float64 ndarray}."""
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"dump_torch needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of the forward's keyword arguments, got {type(inputs).__name__}")
    dtype = next(model.parameters()).dtype
    kwargs = {k: _tensor(v, dtype) for k, v in inputs.items()}
    dump: Dict[str, np.ndarray] = {}

    def hook_for(name):
        def hook(_module, _args, output):
            tensor = first_tensor(output)
            if tensor is not None and name not in dump:
                dump[name] = tensor.detach().to(torch.float64, copy=True).cpu().numpy()  # a copy: callers update in place
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in model.named_modules()]
    try:
        with torch.no_grad():
            model(**kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if path is not None:
        save_dump(dump, path)
    return dump


def _tensor(value, dtype):
    torch = _torch()
    if torch.is_tensor(value) or not isinstance(value, np.ndarray):
        return value
    tensor = torch.from_numpy(np.ascontiguousarray(value))
    return tensor.to(dtype) if tensor.is_floating_point() else tensor.long() if value.dtype.kind in "iu" else tensor
