"""Another implementation's intermediates under upstream's (PyTorch) module names: what `refimpl diff` reads.

    from refimpl.dump import dump_torch, dump_flax, dump_tf, dump_onnx
    dump = dump_flax(flax_model, {"input_ids": ids, "attention_mask": mask}, "dump.safetensors")
    # refimpl diff --model DIR --inputs IN.npz --against dump.safetensors

Every adapter returns {upstream `named_modules()` name: that module's first output} as float64 NumPy arrays,
in upstream's layout (the shapes refimpl.trace records), the root module under "", and with `path` writes it
as safetensors (or .npz). `inputs` is a dict of NumPy arrays by upstream's argument names. Each adapter
imports its framework only when called (`import refimpl.dump` imports none); each one's name mapping is a
table in tables.py. For your own port: produce the same dict -- upstream's names, upstream's layouts (OPT's
feed-forward on [B*T, D] rows, LED's Longformer projections [T, B, D]) -- and save it with `save_dump`.
"""
from .common import save_dump
from .flax_dump import dump_flax
from .onnx_dump import dump_onnx
from .tf_dump import dump_tf
from .torch_dump import dump_torch

__all__ = ["dump_torch", "dump_flax", "dump_tf", "dump_onnx", "save_dump"]
