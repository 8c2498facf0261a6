"""The artifacts bench/peers.py's engines read, made once and cached outside the repository (harness.CACHE,
`REFIMPL_BENCH_CACHE` to move it): per checkpoint folder

    hf/                   upstream's save_pretrained of the bench's random-weight model (every engine's source)
    onnx/<workload>/      torch.onnx.export of that model (TorchScript exporter, opset 17)
    ct2/                  CTranslate2's conversion of it (OPT only: CTranslate2 has no NEZHA, XGLM or LED converter)

Each artifact is written to a temporary folder and renamed when complete, so an interrupted run leaves no
half-made artifact behind. Delete the cache folder after changing a bench's shapes or seeds.

The ONNX graphs:
- score: logits -> log_softmax -> gather of the next token's log-probability inside the graph ([B, T-1]).
- hidden: NezhaModel's last_hidden_state.
- led: LEDEncoder's last_hidden_state, exported with upstream's own `config.onnx_export = True` (its
  chunking then avoids as_strided, which the TorchScript exporter turns into a wrong graph; torch.export, the
  other exporter, fails on the data-dependent number of global tokens). One export per length.
- greedy: one decoder step with the KV cache: (input_ids [1, n], attention_mask [1, past + n], past
  key/value of every layer [1, H, past, dh]) -> (the last position's logits [1, V], the new key/values);
  dynamic in n and past, so the same graph runs the prompt (past of length 0) and every next token.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from harness import CACHE

OPSET = 17


def folder(workload) -> Path:
    return CACHE / workload.checkpoint


def checkpoint_dir(workload) -> Path:
    return folder(workload) / "hf"


def onnx_file(workload) -> Path:  # in a folder of its own, beside its external weights when over 2 GB
    return folder(workload) / "onnx" / workload.name / "model.onnx"


def ct2_dir(workload) -> Path:
    return folder(workload) / "ct2"


def prepare(workload, engines) -> None:
    """Make whatever the chosen engines need for this workload and is not cached yet."""
    _once(checkpoint_dir(workload), lambda tmp: workload.module().upstream_model().save_pretrained(tmp))
    if "onnxruntime" in engines and "onnxruntime" in workload.engines:
        _once(onnx_file(workload).parent, lambda tmp: export_onnx(workload, tmp / onnx_file(workload).name))
    if "ctranslate2" in engines and "ctranslate2" in workload.engines:
        _once(ct2_dir(workload), lambda tmp: convert_ct2(checkpoint_dir(workload), tmp))


def _once(target: Path, make) -> None:
    if target.exists():
        return
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"making {target}", flush=True)
    make(tmp)
    tmp.rename(target)


# ---- ONNX ----------------------------------------------------------------------------------------------

def export_onnx(workload, path: Path) -> None:
    import torch

    model = load_upstream(workload)
    if workload.kind == "led":
        for module in model.modules():  # every layer reads its own reference to the config
            if hasattr(module, "config"):
                module.config.onnx_export = True
    graph, inputs, names, dynamic = GRAPHS[workload.kind](model, workload)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings about Python conditions
        torch.onnx.export(graph, tuple(inputs), str(path), input_names=names[0], output_names=names[1],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def load_upstream(workload):
    """The saved checkpoint as upstream's model (float32, eval mode)."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.led.modeling_led import LEDEncoder

    path = checkpoint_dir(workload)
    if workload.kind == "led":
        return LEDEncoder.from_pretrained(path).eval()
    loader = AutoModel if workload.kind == "hidden" else AutoModelForCausalLM
    return loader.from_pretrained(path).eval()


def _score_graph(model, workload):
    import torch

    class Score(torch.nn.Module):  # [B, T] ids, mask -> [B, T-1] log p(x_t | x_<t)
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)

    return Score(), _torch_inputs(workload), (list(workload.inputs()), ["logprobs"]), None


def _hidden_graph(model, workload):
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).last_hidden_state

    names = list(workload.inputs())
    return Hidden(), _torch_inputs(workload), (names, ["last_hidden_state"]), None


def _step_graph(model, workload):
    import torch

    config = model.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, *past):
            past = tuple((past[2 * i], past[2 * i + 1]) for i in range(layers))
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past, use_cache=True)
            return (out.logits[:, -1],) + tuple(t for key_value in out.past_key_values for t in key_value)

    past_names = step_past_names(layers)
    present_names = [name.replace("past", "present") for name in past_names]
    dynamic = {"input_ids": {1: "new"}, "attention_mask": {1: "total"}}
    dynamic.update({name: {2: "past"} for name in past_names})
    dynamic.update({name: {2: "total"} for name in present_names})
    # traced with 2 new tokens after 3 cached ones, so that no length of 1 or 0 gets baked into the graph
    past = [torch.zeros(1, heads, 3, head_dim) for _ in past_names]
    inputs = [torch.ones(1, 2, dtype=torch.long) * 5, torch.ones(1, 5, dtype=torch.long), *past]
    return Step(), inputs, (["input_ids", "attention_mask", *past_names], ["logits", *present_names]), dynamic


def step_past_names(layers: int) -> list:
    return [f"past.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def _torch_inputs(workload) -> list:
    import torch

    return [torch.from_numpy(a) for a in workload.inputs().values()]


GRAPHS = {"score": _score_graph, "hidden": _hidden_graph, "led": _hidden_graph, "greedy": _step_graph}


# ---- CTranslate2 ---------------------------------------------------------------------------------------

def token(i: int) -> str:  # the synthesized vocabulary: id i <-> "tok{i}" (CTranslate2 speaks in tokens)
    return f"tok{i}"


class _Vocabulary:
    """What the converter reads from a tokenizer: the vocabulary and the special tokens. The benchmark's
    checkpoint has no tokenizer, and ids are all the benchmark needs."""

    def __init__(self, config):
        self.size = config.vocab_size
        self.bos_token, self.eos_token = token(config.bos_token_id), token(config.eos_token_id)
        self.unk_token = token(config.vocab_size - 1)

    def get_vocab(self) -> dict:
        return {token(i): i for i in range(self.size)}


def convert_ct2(source: Path, target: Path) -> None:
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoConfig

    class Converter(TransformersConverter):
        def load_model(self, model_class, path, **kwargs):
            # CTranslate2 4.8 passes `dtype=`; transformers 4.37.2 knows it as `torch_dtype`
            kwargs["torch_dtype"] = kwargs.pop("dtype", None)
            return super().load_model(model_class, path, **kwargs)

        def load_tokenizer(self, tokenizer_class, path, **kwargs):
            return _Vocabulary(AutoConfig.from_pretrained(path))

    Converter(str(source)).convert(str(target), force=True)
