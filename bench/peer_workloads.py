"""The workloads of bench/peers.py: which checkpoint (made by the existing bench's `upstream_model()`), which
inputs, which engines, how many FLOPs. The artifacts each engine reads are made by bench/peer_export.py,
the engines themselves run in bench/peer_engines.py.

Kinds of workload:
- score:  per-token log-likelihoods of a causal LM, logits -> log_softmax -> gather of the next token ([B, T-1])
- hidden: NezhaModel's last_hidden_state ([B, T, d])
- led:    LEDEncoder's last_hidden_state, the first token global ([1, T, d])
- greedy: greedy decoding with the KV cache, 32 new tokens after a 16-token prompt (the new token ids)
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import flops  # noqa: E402

ENGINES = ("refimpl", "upstream", "onnxruntime", "ctranslate2")
ENGINE_TITLES = {"refimpl": "refimpl", "upstream": "upstream torch", "onnxruntime": "ONNX Runtime",
                 "ctranslate2": "CTranslate2"}


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    bench: str  # the module in bench/ whose upstream_model() and inputs this workload reuses
    checkpoint: str  # the cache folder of the checkpoint (workloads of one model share it)
    kind: str  # score | hidden | led | greedy (module docstring)
    engines: tuple
    make_inputs: Callable[[object], dict]  # the bench module -> {input name: int64 array}
    count_flops: Optional[Callable[[dict], float]] = None  # upstream's config dict -> FLOPs of one call

    def module(self):
        return importlib.import_module(self.bench)

    def inputs(self) -> dict:
        return self.make_inputs(self.module())


def _score_inputs(bench) -> dict:
    import numpy as np

    ids = bench.token_ids()
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _nezha_inputs(bench) -> dict:
    ids, mask = bench.inputs("nezha-base 8x128")
    return {"input_ids": ids, "attention_mask": mask}


def _led_inputs(length: int):
    def make(bench) -> dict:
        ids, mask, global_mask = bench.inputs(length)
        return {"input_ids": ids, "attention_mask": mask, "global_attention_mask": global_mask}

    return make


def _prompt(bench) -> dict:
    return {"input_ids": bench.prompt()}


WORKLOADS = {w.name: w for w in [
    Workload("opt-score", "OPT-125m shape, score 8x128 (logits, log_softmax, gather)", "bench_opt", "opt-125m",
             "score", ENGINES, _score_inputs, lambda c: flops.opt_score(c, 8, 128)),
    Workload("opt-greedy", "OPT-125m shape, greedy decoding with the KV cache, 32 new tokens after 16",
             "bench_opt", "opt-125m", "greedy", ENGINES, _prompt),
    Workload("nezha", "NEZHA-base, 8x128, last_hidden_state", "bench_nezha", "nezha-base", "hidden",
             ENGINES[:3], _nezha_inputs, lambda c: flops.nezha_model(c, 8, 128)),
    Workload("xglm-score", "XGLM-564M shape, score 1x128", "bench_xglm", "xglm-564M", "score", ENGINES[:3],
             _score_inputs, lambda c: flops.xglm_score(c, 1, 128)),
    Workload("led-4096", "LED-base encoder, 4096 tokens", "bench_led", "led-base-encoder", "led", ENGINES[:3],
             _led_inputs(4096), lambda c: flops.led_encoder(c, 1, 4096, 1)),
    Workload("led-16384", "LED-base encoder, 16384 tokens", "bench_led", "led-base-encoder", "led", ENGINES[:2],
             _led_inputs(16384), lambda c: flops.led_encoder(c, 1, 16384, 1)),
]}
QUICK = ("opt-score", "nezha", "opt-greedy")  # --quick: the small models only
