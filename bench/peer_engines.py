"""The engines of bench/peers.py. `load(engine, workload)` reads the cached artifacts (bench/peer_export.py)
and returns a zero-argument callable that runs the workload once and returns its output as a NumPy array
(set-up excluded from the timing). Each engine runs in a process of its own; only its own libraries load.

Threads: every engine uses all cores of the machine (ONNX Runtime's intra-op pool, CTranslate2's
intra_threads, torch's and OpenBLAS's defaults); refimpl runs with refimpl.runtime.configure_process().
"""
from __future__ import annotations

import json
import os

import peer_export as export


def load(engine: str, workload):
    if engine == "refimpl":  # as the `refimpl` command runs it, before NumPy loads
        from refimpl.runtime import configure_process

        if not configure_process()["blas_spin_shortened"]:  # OpenBLAS's spinning workers slow refimpl ~10%
            raise RuntimeError("NumPy was imported before refimpl.runtime.configure_process(): refimpl would be "
                               "timed without the settings the `refimpl` command runs with")
    return LOADERS[engine][workload.kind](workload, workload.inputs())


def _config(workload) -> dict:  # upstream's config.json of the saved checkpoint
    return json.loads((export.checkpoint_dir(workload) / "config.json").read_text())


def _gen_kwargs(workload) -> dict:
    return workload.module().GEN_KWARGS


def _new_tokens(workload) -> int:
    return _gen_kwargs(workload)["max_new_tokens"]


# ---- refimpl --------------------------------------------------------------------------------------------

def _refimpl_score(workload, x):
    import refimpl
    from refimpl.scoring import token_logprobs

    model = refimpl.from_pretrained(export.checkpoint_dir(workload))
    return lambda: token_logprobs(model, x["input_ids"], x["attention_mask"])


def _refimpl_hidden(workload, x):
    import refimpl

    model = refimpl.from_pretrained(export.checkpoint_dir(workload))
    return lambda: model(**x).last_hidden_state


def _refimpl_led(workload, x):
    """The checkpoint is upstream's LEDEncoder alone: its names, under LEDModel's `encoder.` (the embedding
    is LEDModel's `shared`), are what refimpl.models.led.led_encoder reads."""
    from refimpl.checkpoint import read_state_dict
    from refimpl.models import load_config
    from refimpl.models.led import led_encoder

    path = export.checkpoint_dir(workload)
    config = load_config(path)
    params = {"encoder." + name: value for name, value in read_state_dict(path).items()}
    params["shared.weight"] = params.pop("encoder.embed_tokens.weight")
    return lambda: led_encoder(params, config, **x).last_hidden_state


def _refimpl_greedy(workload, x):
    import numpy as np

    import refimpl

    model = refimpl.from_pretrained(export.checkpoint_dir(workload))
    prompt = x["input_ids"]
    kwargs = _gen_kwargs(workload)
    return lambda: np.asarray(model.generate(prompt, attention_mask=np.ones_like(prompt), **kwargs))[:, prompt.shape[1]:]


# ---- upstream -------------------------------------------------------------------------------------------

def _upstream(workload, x):
    """Upstream runs the same graph that was exported (peer_export.GRAPHS), eagerly."""
    import torch

    model = export.load_upstream(workload)
    graph = export.GRAPHS[workload.kind](model, workload)[0]
    inputs = [torch.from_numpy(a) for a in x.values()]
    return torch.no_grad()(lambda: graph(*inputs).numpy())


def _upstream_greedy(workload, x):
    import torch

    model = export.load_upstream(workload)
    prompt = torch.from_numpy(x["input_ids"])
    kwargs = _gen_kwargs(workload)
    return torch.no_grad()(lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)[:, prompt.shape[1]:].numpy())


# ---- ONNX Runtime ---------------------------------------------------------------------------------------

def _session(workload):
    """ONNX Runtime with every graph optimisation, except for LED: on the LED graph (24,000 nodes, upstream's
    onnx_export chunking unrolled) ONNX Runtime 1.30's constant folding grows past 18 GB and is killed, and
    with constant folding disabled its reshape fusion fails ("Attempting to get index by a name which does
    not exist"); LED runs the graph as exported (ORT_DISABLE_ALL), which favours ONNX Runtime's memory
    and costs it speed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    level = "ORT_DISABLE_ALL" if workload.kind == "led" else "ORT_ENABLE_ALL"
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(export.onnx_file(workload)), options, providers=["CPUExecutionProvider"])


def _ort_forward(workload, x):
    session = _session(workload)
    return lambda: session.run(None, x)[0]


def _ort_greedy(workload, x):
    """Greedy search over the decoder-step graph: the prompt with an empty cache, then one token at a time;
    the end-of-sequence token is barred until max_new_tokens, as upstream's min_new_tokens does."""
    import numpy as np

    session, config = _session(workload), _config(workload)
    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    past_names = export.step_past_names(layers)
    empty = np.zeros((1, heads, 0, config["hidden_size"] // heads), np.float32)
    eos, steps = config["eos_token_id"], _new_tokens(workload)

    def generate():
        ids, past, new = x["input_ids"], [empty] * len(past_names), []
        for _ in range(steps):
            mask = np.ones((1, past[0].shape[2] + ids.shape[1]), np.int64)
            logits, *past = session.run(None, {"input_ids": ids, "attention_mask": mask, **dict(zip(past_names, past))})
            logits[:, eos] = -np.inf
            ids = logits.argmax(-1)[:, None]  # [1, 1]
            new.append(ids)
        return np.concatenate(new, axis=1)  # [1, steps]

    return generate


# ---- CTranslate2 ----------------------------------------------------------------------------------------

def _generator(workload):
    import ctranslate2

    return ctranslate2.Generator(str(export.ct2_dir(workload)), device="cpu", compute_type="float32",
                                 inter_threads=1, intra_threads=os.cpu_count() or 1)


def _ct2_score(workload, x):
    import numpy as np

    generator = _generator(workload)
    tokens = [[export.token(i) for i in row] for row in x["input_ids"]]
    return lambda: np.array([result.log_probs for result in generator.score_batch(tokens)], np.float32)


def _ct2_greedy(workload, x):
    import numpy as np

    generator = _generator(workload)
    prompt = [export.token(i) for i in x["input_ids"][0]]
    steps = _new_tokens(workload)

    def generate():
        result = generator.generate_batch([prompt], max_length=steps, min_length=steps, beam_size=1,
                                          sampling_topk=1, include_prompt_in_result=False)
        return np.array(result[0].sequences_ids)  # [1, steps]

    return generate


LOADERS = {
    "refimpl": {"score": _refimpl_score, "hidden": _refimpl_hidden, "led": _refimpl_led, "greedy": _refimpl_greedy},
    "upstream": {"score": _upstream, "hidden": _upstream, "led": _upstream, "greedy": _upstream_greedy},
    "onnxruntime": {"score": _ort_forward, "hidden": _ort_forward, "led": _ort_forward, "greedy": _ort_greedy},
    "ctranslate2": {"score": _ct2_score, "greedy": _ct2_greedy},
}
