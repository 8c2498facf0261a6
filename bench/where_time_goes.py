"""Where refimpl's time goes on the workloads of bench/peers.py: each call split into the matrix products
and the rest, by which of refimpl's hot functions is running.

    python bench/where_time_goes.py                          # every workload, 3 calls each
    python bench/where_time_goes.py --workload nezha --calls 5

Each function of PARTS is wrapped, wherever a refimpl module holds it, by a timer that counts only its
outermost call: the bias addition inside `ops.linear` counts as part of the product, a LayerNorm inside an
attention kernel (none today) as attention. "rest" is everything no part covers (embedding, masks, head
splits, Python). Reported per part: the median over the calls of its seconds, and its share of the call
(a markdown table, and bench/results/where_time_goes.json).
Needs the cached checkpoints of bench/peers.py (made on its first run, with torch installed).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import RESULTS, vector_flags  # noqa: E402

# part -> (module, function) pairs; a call of any of them, not inside another one, counts as the part
PARTS = {
    "products": [("refimpl.ops", "linear")],
    "lm head": [("refimpl.lm_head", "target_logprobs")],  # its products and the logsumexp, fused
    "attention": [("refimpl.attention", "attention_heads"), ("refimpl.relative_attention", "relative_attention"),
                  ("refimpl.banded_attention", "banded_attention")],
    "layer norm": [("refimpl.ops", "layer_norm")],
    "activation": [("refimpl.ops", "relu"), ("refimpl.ops", "gelu")],
    "addition": [("refimpl.ops", "add")],
}


class PartTimer:
    """Seconds per part, outermost calls only (a part's own inner calls of other parts are its time)."""

    def __init__(self):
        self.seconds = Counter()
        self.calls = Counter()  # outermost calls per part
        self._inside = False
        self._replaced = []  # (namespace, name, original function) that install() replaced

    def wrap(self, part, function):
        def timed(*args, **kwargs):
            if self._inside:
                return function(*args, **kwargs)
            self._inside, start = True, time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
                self.calls[part] += 1
                self._inside = False
        return timed

    def install(self, package):
        """Replaces each PARTS function by its timed wrapper in every module of `package` that holds it
        (by identity: `from .ops import linear` included), and in ops.ACTIVATIONS, which models look up.
        `uninstall()` puts the functions back."""
        wrapped = {}
        for part, names in PARTS.items():
            for module, name in names:
                function = getattr(importlib.import_module(module), name)
                wrapped[id(function)] = self.wrap(part, function)
        modules = [importlib.import_module(info.name)
                   for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                   if not info.name.endswith("__main__")]
        activations = importlib.import_module(package.__name__ + ".ops").ACTIVATIONS
        self._replaced = [(vars(module), name, value) for module in [package] + modules
                          for name, value in vars(module).items() if id(value) in wrapped]
        self._replaced += [(activations, name, value) for name, value in activations.items() if id(value) in wrapped]
        for namespace, name, value in self._replaced:
            namespace[name] = wrapped[id(value)]
        return self

    def uninstall(self):
        for namespace, name, value in self._replaced:
            namespace[name] = value
        self._replaced = []


def breakdown(run, timer: PartTimer, calls: int) -> dict:
    """{part: median seconds} over `calls` timed calls of `run` (after a warm-up, as peers.py does), plus
    "rest" and "total"; `timer` must be installed."""
    run()
    per_call = []
    for _ in range(calls):
        timer.seconds.clear()
        timer.calls.clear()
        start = time.perf_counter()
        run()
        seconds = dict(timer.seconds, total=time.perf_counter() - start)
        seconds["rest"] = seconds["total"] - sum(timer.seconds.values())
        per_call.append(seconds)
    return {part: statistics.median(call.get(part, 0.0) for call in per_call) for part in list(PARTS) + ["rest", "total"]}


def table_row(workload_name: str, seconds: dict) -> str:
    total = seconds["total"]
    cells = [f"{seconds[part]:.3f} s ({100 * seconds[part] / total:.0f}%)" if seconds[part] else "-"
             for part in list(PARTS) + ["rest"]]
    return f"| {workload_name} | {total:.2f} s | " + " | ".join(cells) + " |"


def main(argv=None):
    import peer_engines
    import peer_workloads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", choices=list(peer_workloads.WORKLOADS),
                        help="repeatable; default: all")
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be at least 1 (the median of the timed calls), got {args.calls}")
    runs = {name: peer_workloads.WORKLOADS[name] for name in args.workload or peer_workloads.WORKLOADS}
    print("| workload | call | " + " | ".join(list(PARTS) + ["rest"]) + " |")
    print("| --- " * (len(PARTS) + 3) + "|")
    rows = {}
    for name, workload in runs.items():
        run = peer_engines.load("refimpl", workload)  # configures the process before refimpl loads NumPy
        import refimpl

        timer = PartTimer().install(refimpl)
        try:
            rows[name] = breakdown(run, timer, args.calls)
        finally:
            timer.uninstall()
        print(table_row(name, rows[name]), flush=True)
    result = {"benchmark": "where_time_goes", "calls": args.calls, "cpu_flags": vector_flags(),
              "load_average": os.getloadavg(), "seconds": rows}
    (RESULTS / "where_time_goes.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {RESULTS / 'where_time_goes.json'}")


if __name__ == "__main__":
    main()
