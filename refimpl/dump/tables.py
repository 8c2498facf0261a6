"""How each framework's names become upstream's `named_modules()` names: written once, as data.

One `NameMap` per framework and family (transformers 4.37.2's twins). An adapter joins a framework's own
path of a layer with "." (Flax: the module path without `__call__`; Keras: the layer names from the model
down; ONNX: the node scope without its leading "/"), then:

    drop     regexes: names that are no upstream module (dropout layers, layer collections)
    rename   (regex, replacement, when): applied in order to the joined name
    layout   (regex of the upstream name, change, when): the framework's layout -> upstream's
               "rows": [B, T, X] -> [B*T, X]   (OPT's feed-forward runs on rows of [B*T, D])
               "TBD":  [B, T, D] -> [T, B, D]   (LED's Longformer projections are time-major upstream)
    alias    (upstream name, source name, when): an upstream module the framework computes without a
             layer of its own, taken from `source` (OPT's and XGLM's tied lm_head: the logits, the root's
             output, when no lm_head was captured)
    inputs   (framework name, upstream name) pairs: the upstream module whose output is that layer's *input*
             (TF LED adds final_logits_bias in a layer of its own; its input is upstream's lm_head output)

`when` is None (always), "head" (a class with a head: *ForCausalLM, *ForConditionalGeneration), "base"
(the bare model, whose upstream names lack the main layer's prefix) or a config attribute that must be
true (OPT's do_layer_norm_before: its final_layer_norm then runs on rows too). ONNX_BASE, last, says how
the ONNX adapter recognises a family and restores the scope prefix OPT's and XGLM's exports lack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class NameMap:
    drop: Tuple[str, ...] = ()
    rename: Tuple[Tuple[str, str, object], ...] = ()
    layout: Tuple[Tuple[str, str, object], ...] = ()
    alias: Tuple[Tuple[str, str, object], ...] = ()
    inputs: Tuple[Tuple[str, str], ...] = ()


NOT_MODULES = (r"(^|\.)\w*dropout\w*$",   # dropout layers: the identity in eval, no upstream module
               r"(^|\.)layers$")           # the layer collection: upstream's ModuleList is never called
TIED_LM_HEAD = (("lm_head", "", "head"),)  # OPT, XGLM: the logits come from the tied embedding
OPT_ROWS = ((r"\.layers\.\d+\.(fc1|fc2)$", "rows", None),
            (r"\.layers\.\d+\.final_layer_norm$", "rows", "do_layer_norm_before"))

# upstream's OPTForCausalLM calls model.decoder directly: its module `model` never runs (no output to compare)
OPT_NOT_RUN = NOT_MODULES + (r"^model$",)

FLAX: Dict[str, NameMap] = {
    # FlaxOPTModule / FlaxXGLMModule keep upstream's names below the root, OPT's rows included
    "opt": NameMap(drop=OPT_NOT_RUN, alias=TIED_LM_HEAD),
    "xglm": NameMap(drop=NOT_MODULES, alias=TIED_LM_HEAD),
}

# TFOPTModel and TFXGLMModel wrap a main layer named "model" (its output is the root's); upstream's bare
# models have no such prefix
BARE_MODEL = ((r"^model$", "", "base"), (r"^model\.", "", "base"))
TF: Dict[str, NameMap] = {
    "opt": NameMap(drop=OPT_NOT_RUN, rename=BARE_MODEL, layout=OPT_ROWS, alias=TIED_LM_HEAD),
    "xglm": NameMap(drop=NOT_MODULES, rename=BARE_MODEL, alias=TIED_LM_HEAD),
    # TF LED names its shared embedding "led.shared" inside the main layer "led"; its projections are [B, T, D]
    "led": NameMap(drop=NOT_MODULES + (r"^final_logits_bias$",),
                   rename=((r"^led\.led\.shared$", "led.shared", None), (r"^led$", "", "base"), (r"^led\.", "", "base")),
                   layout=((r"longformer_self_attn\.(query|key|value)(_global)?$", "TBD", None),),
                   inputs=(("final_logits_bias", "lm_head"),)),
}

# ONNX (torch.onnx.export's TorchScript exporter): a node's scope is its module path ("/led/encoder/layers.0/
# fc1/Gemm"), except that OPT's and XGLM's exports drop the base model's attribute name ("/decoder/layers.0/
# fc1/Gemm" is model.decoder.layers.0.fc1). Per family, in the order tried: a regex that only its scopes match,
# the base model's prefix, and the base model's children, which get the prefix back when the export's weights
# carry it (a head's scope -- lm_head, cls, qa_outputs -- keeps its name).
ONNX_BASE: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "led": (r"\.longformer_self_attn(\.|$)", "led", ("shared", "encoder", "decoder")),
    "nezha": (r"(^|\.)embeddings\.word_embeddings$", "nezha", ("embeddings", "encoder", "pooler")),
    "opt": (r"(^|\.)decoder\.layers\.\d+\.self_attn$", "model", ("decoder",)),
    "xglm": (r"(^|\.)layers\.\d+\.self_attn$", "model", ("embed_tokens", "embed_positions", "layers", "layer_norm")),
}
ONNX: Dict[str, NameMap] = {family: NameMap(drop=NOT_MODULES) for family in ONNX_BASE}
# LED's encoder and decoder call the shared embedding under their own scopes ("encoder/shared", "shared_1")
ONNX["led"] = NameMap(drop=NOT_MODULES, rename=((r"^(led\.)?(encoder|decoder)\.shared(_\d+)?$", r"\1shared", None),))
