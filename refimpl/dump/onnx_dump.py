"""Dump an ONNX export's intermediates, run in ONNX Runtime, under upstream's (PyTorch) module names.

    from refimpl.dump import dump_onnx
    dump = dump_onnx("model.onnx", {"input_ids": ids, "attention_mask": mask}, "dump.safetensors",
                     optimization="all")
    refimpl dump-onnx model.onnx --inputs IN.npz -o DUMP.safetensors [--optimization all]

Written for upstream models of the four families exported with torch.onnx.export's TorchScript exporter
(`dynamo=False`), whose node names carry the module scope: "/led/encoder/layers.0/fc1/Gemm" is a node of
upstream's led.encoder.layers.0.fc1 (OPT's and XGLM's scopes lack the base model's "model.": tables.ONNX_BASE
puts it back when the export's weights carry it). Imports onnx and onnxruntime only when called.

A module's output is the tensor a node inside its scope makes and a node outside it (or the graph's output)
uses -- the last such float tensor, which skips the key/value caches a layer also hands out. Those tensors
are added to the graph's outputs before ONNX Runtime sees it, so its graph optimisations
(`optimization="all"`: ORT_ENABLE_ALL, with fusions; "none": ORT_DISABLE_ALL) apply to everything between
them and no fused node has to be named. The root module "" is the graph's first output.

Your own ONNX graph: name each node "/<module path with '/'>/<op>" as the exporter does, or add the module
outputs to the graph's outputs under upstream's module names and read them with ONNX Runtime yourself.
"""
from __future__ import annotations

import importlib
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import numpy as np

from .common import finish, to_upstream
from .tables import ONNX, ONNX_BASE

LEVELS = {"none": "ORT_DISABLE_ALL", "all": "ORT_ENABLE_ALL"}
ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
             "tensor(double)": np.float64, "tensor(bool)": np.bool_}
FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def dump_onnx(onnx_path: Union[str, Path], inputs: Mapping, path: Optional[Union[str, Path]] = None,
              optimization: str = "none") -> Dict[str, np.ndarray]:
    """Run the ONNX file on `inputs` (the graph's inputs by name: upstream's argument names when exported
    with input_names=[...]) in ONNX Runtime; -> {upstream module name: first output, float64}."""
    onnx = importlib.import_module("onnx")
    if optimization not in LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(LEVELS)}, got {optimization!r}")
    if not Path(onnx_path).is_file():
        raise ValueError(f"{onnx_path} is not a file (expected an ONNX model exported with torch.onnx.export)")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as err:  # onnx raises DecodeError and others for a file that is no ONNX model
        raise ValueError(f"{onnx_path} is not a readable ONNX model: {err}") from None
    graph = model.graph
    family, prefix = base_of(graph)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}  # types, shapes
    outputs = module_outputs(graph, inferred)                    # {scope: tensor name}
    first = graph.output[0].name
    known = {o.name for o in graph.output}
    for tensor in outputs.values():
        if tensor not in known:
            known.add(tensor)
            graph.output.append(inferred.get(tensor) or onnx.helper.make_empty_tensor_value_info(tensor))
    values = run(model, inputs, optimization)
    raw = {"": values[first]}
    for scope, tensor in outputs.items():
        raw[upstream_name(scope, family, prefix)] = values[tensor]
    raw = {name: np.asarray(value, dtype=np.float64) for name, value in raw.items()}
    return finish(to_upstream(raw, ONNX[family], {}), path)


def base_of(graph):  # -> (family, the prefix its scopes lack or ""), from the node scopes and weight names
    scopes = {".".join(node_scope(node.name)) for node in graph.node}
    names = [t.name for t in graph.initializer] + [o for node in graph.node for o in node.output]
    for family, (signature, prefix, _children) in ONNX_BASE.items():
        if any(re.search(signature, scope) for scope in scopes):
            carried = any(name.startswith(prefix + ".") for name in names)
            in_scopes = any(scope.split(".")[0] == prefix for scope in scopes)
            return family, prefix if carried and not in_scopes else ""
    raise ValueError("the ONNX graph's node names carry no module scopes of OPT, XGLM, LED or NEZHA (export with "
                     "torch.onnx.export(..., dynamo=False) from the upstream model)")


def upstream_name(scope: str, family: str, prefix: str) -> str:  # "decoder.layers.0" -> "model.decoder.layers.0"
    if prefix and scope.split(".")[0] in ONNX_BASE[family][2]:
        return f"{prefix}.{scope}"
    return scope


def module_outputs(graph, inferred: Mapping) -> Dict[str, str]:
    """{module scope ("decoder.layers.0.fc1"): the tensor it hands out}: the last float tensor made by a node
    inside the scope and used outside it (or a graph output). `inferred`: {tensor: its inferred ValueInfo}."""
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.values()) + list(graph.output)}
    scope_of: Dict[str, List[str]] = {}   # tensor -> the scope path of the node making it
    users = defaultdict(list)             # tensor -> scope paths of the nodes using it
    for node in graph.node:
        path = node_scope(node.name)
        for tensor in node.output:
            scope_of[tensor] = path
        for tensor in node.input:
            users[tensor].append(path)
    graph_outputs = {o.name for o in graph.output}
    found: Dict[str, str] = {}
    for tensor, path in scope_of.items():  # graph order: a later tensor replaces an earlier one
        if types.get(tensor, 1) not in FLOAT_TYPES:
            continue
        for depth in range(1, len(path) + 1):
            scope = path[:depth]
            used_outside = tensor in graph_outputs or any(user[:depth] != scope for user in users[tensor])
            if used_outside:
                found.pop(".".join(scope), None)
                found[".".join(scope)] = tensor
    return found


def node_scope(node_name: str) -> List[str]:  # "/decoder/layers.0/fc1/Gemm" -> ["decoder", "layers.0", "fc1"]
    if not node_name.startswith("/"):
        return []
    return node_name.split("/")[1:-1]


def run(model, inputs: Mapping, optimization: str) -> Dict[str, np.ndarray]:  # -> {output name: array}
    ort = importlib.import_module("onnxruntime")
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a mapping of the graph's input arrays, got {type(inputs).__name__}")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[optimization])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name: i.type for i in session.get_inputs()}
    missing, unknown = sorted(set(wanted) - set(inputs)), sorted(set(inputs) - set(wanted))
    if missing or unknown:
        raise ValueError(f"the ONNX graph's inputs are {', '.join(wanted)}"
                         + (f"; missing: {', '.join(missing)}" if missing else "")
                         + (f"; not inputs of this graph: {', '.join(unknown)}" if unknown else ""))
    feed = {name: np.asarray(inputs[name]).astype(ORT_TYPES.get(kind, np.asarray(inputs[name]).dtype))
            for name, kind in wanted.items()}
    names = [o.name for o in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, feed)))
    except Exception as err:  # ONNX Runtime's own error types: wrong ranks, shapes, values
        raise ValueError(f"ONNX Runtime could not run the graph on these inputs: {err}") from None
