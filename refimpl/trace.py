"""Every intermediate of a forward pass, under upstream's module names.

    with refimpl.trace.tracing() as trace:
        model(input_ids=ids, attention_mask=mask)
    trace["model.decoder.layers.0.fc1"]      # what upstream's module model.decoder.layers.0.fc1 returned
    list(trace)                               # the names in execution order

A name is the module's name in upstream's `model.named_modules()` for the same class; the value is what
that module returns (its first output when it returns a tuple or a ModelOutput), with upstream's shape
(LED's encoder internals at the padded length, OPT's pre-LN feed-forward on [B*T, D] rows, LED's
projections on [T, B, D] as upstream lays them out). A module called more than once in one forward (LED's
shared embedding, NEZHA's relative-position table) keeps its first output, as `refimpl.dump_torch` does.
The root module's output is traced under "" (the name upstream gives it). Several model calls under one
trace (generate()) keep the first call's values; `tracing(per_call=True)` keeps one Trace per call.

`tracing(internals=True)` also records what upstream computes inside a module without a module of its own,
under "<module>#<what>" (never an upstream name, so a dump of module outputs never has them):
    <attention>#scores   the scores before the softmax, masks added   [B, H, T, S]
    <attention>#probs    the softmax probabilities                     [B, H, T, S]
for every dense attention block (BART-style self_attn / encoder_attn, NEZHA's attention.self), and for
LED's longformer_self_attn: #local_probs [B, H, T, X + w + 1] (upstream's band layout) and, with global
tokens, #global_probs [B, H, X, T].

How it works: parameter views (`refimpl.layers.sub`) carry their upstream path, and the forward functions
call `record(params, child_name, value)` where a module of upstream's ends. Without an active trace a
record costs one attribute lookup; with one it stores a copy (callers may later update arrays in place).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

_state = threading.local()


class Trace(dict):
    """{upstream module name: ndarray} in execution order (dicts keep insertion order). With
    tracing(per_call=True), `calls` holds one Trace per model call (each step of generate())."""

    internals = False
    calls = None  # a list under tracing(per_call=True)


@contextlib.contextmanager
def tracing(internals: bool = False, per_call: bool = False):
    """Record every intermediate of the forward passes run inside the block (this thread only); with
    `internals`, also the named internals listed above; with `per_call`, each model call in its own
    Trace, in `trace.calls` (generate(): one per step, the prompt first)."""
    previous = getattr(_state, "trace", None)
    _state.trace = Trace()
    _state.trace.internals = internals
    _state.trace.calls = [] if per_call else None
    try:
        yield _state.trace
    finally:
        _state.trace = previous


@contextlib.contextmanager
def model_call():
    """Around one model call (refimpl.modeling.Model): under tracing(per_call=True), the call's records go
    to a fresh Trace appended to `calls`; otherwise nothing changes."""
    outer = getattr(_state, "trace", None)
    if outer is None or outer.calls is None:
        yield
        return
    _state.trace = Trace()
    _state.trace.internals = outer.internals
    try:
        yield
    finally:
        outer.calls.append(_state.trace)
        _state.trace = outer


def active() -> bool:
    return getattr(_state, "trace", None) is not None


def internals_active() -> bool:
    trace = getattr(_state, "trace", None)
    return trace is not None and trace.internals


def record_internal(params, what: str, value):  # -> value; traced as "<module>#<what>" under tracing(internals=True)
    """params None: the caller is not a module of upstream's (e.g. a kernel used inside one): nothing to name."""
    if params is not None and internals_active():
        trace = _state.trace
        name = f"{path_of(params)}#{what}"
        if name not in trace and value is not None:
            trace[name] = np.array(value, copy=True)
    return value


def path_of(params, child: str = "") -> str:
    """The upstream module name of `child` under a parameter view (`sub` records its prefix as `.path`)."""
    return ".".join(part for part in (getattr(params, "path", ""), child) if part)


def record_computed(params, child: str, compute):  # compute() -> a value only upstream materialises
    """Trace `compute()` as the output of `child`; computed only when a trace is active (NEZHA's [T, T, d]
    relative-position rows, which refimpl never builds otherwise)."""
    if getattr(_state, "trace", None) is not None:
        record(params, child, compute())


def record(params, child: str, value):  # -> value, unchanged
    """Trace `value` as the output of the module `child` under `params` (no-op without an active trace)."""
    trace = getattr(_state, "trace", None)
    if trace is not None:
        name = path_of(params, child)
        if name not in trace and value is not None:
            trace[name] = np.array(value, copy=True)
    return value
