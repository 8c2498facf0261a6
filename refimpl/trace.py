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
The root module's output is traced under "" (the name upstream gives it).

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
    """{upstream module name: ndarray} in execution order (dicts keep insertion order)."""


@contextlib.contextmanager
def tracing():
    """Record every intermediate of the forward passes run inside the block (this thread only)."""
    previous = getattr(_state, "trace", None)
    _state.trace = Trace()
    try:
        yield _state.trace
    finally:
        _state.trace = previous


def active() -> bool:
    return getattr(_state, "trace", None) is not None


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
