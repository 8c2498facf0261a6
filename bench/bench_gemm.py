"""The GEMM libraries under the engines of bench/peers.py, on the matrix products of its workloads: how fast
each one multiplies `x [M, K] @ W.T` (W [N, K], a layer's weight) at exactly the shapes the models run.

    python bench/bench_gemm.py                  # every engine, 3 alternating rounds; bench/results/gemm.json
    python bench/bench_gemm.py --rounds 1 --engine numpy --engine onnxruntime

Engines, each in a process of its own, on every core:
- numpy: `np.matmul(x, W.T)`, numpy's OpenBLAS (what refimpl calls), in the process refimpl runs in
  (refimpl.runtime.configure_process);
- torch: `torch.nn.functional.linear` (upstream's products);
- onnxruntime: one graph of MatMul nodes, one per weight, the weights (transposed) its initializers, so
  that ONNX Runtime's MLAS packs them once, at session creation, as it does a model's weights.

Weights are cold, as in a forward pass: each timing cycles through enough distinct weights of the shape
(at least 64 MB) that none is still in the cache when its turn comes. The rate is the median over the
rounds of FLOPs / time. `peers.py`'s GEMM limit divides a workload's FLOPs by numpy's rate on square
2048 x 2048 products (the first row); the "model shapes" rows show how far each library falls short of
that on the shapes a workload runs, and the last column weighs them by their share of its FLOPs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import RESULTS, run_child, side_env, vector_flags  # noqa: E402

ENGINES = ("numpy", "torch", "onnxruntime")
COLD_BYTES = 64 << 20  # weights cycled through per timing, more than any cache of these machines

# (M, K, N) per workload, with how many products of that shape one call runs (bench/peer_workloads.py's
# shapes): the layers' products, and the LM head over the B * (T - 1) scored positions as products of 4096
# vocabulary columns (a fraction of one for the rest of the vocabulary). LED: q, k, v, out, key_global
# and value_global on every token, fc1, fc2 (its attention products are not GEMMs of this kind).
OPT_VOCAB, XGLM_VOCAB, HEAD_COLUMNS = 50272, 256008, 4096
WORKLOADS = {
    "square": {(2048, 2048, 2048): 1},
    "opt-score 8x128": {(1024, 768, 768): 48, (1024, 768, 3072): 12, (1024, 3072, 768): 12,
                        (1016, 768, HEAD_COLUMNS): OPT_VOCAB / HEAD_COLUMNS},
    "nezha 8x128": {(1024, 768, 768): 48, (1024, 768, 3072): 12, (1024, 3072, 768): 12},
    "xglm-score 1x128": {(128, 1024, 1024): 96, (128, 1024, 4096): 24, (128, 4096, 1024): 24,
                         (127, 1024, HEAD_COLUMNS): XGLM_VOCAB / HEAD_COLUMNS},
    "led-4096 dense": {(4096, 768, 768): 36, (4096, 768, 3072): 6, (4096, 3072, 768): 6},
}


def shapes() -> list:
    return sorted({shape for products in WORKLOADS.values() for shape in products})


def flops(shape) -> float:
    m, k, n = shape
    return 2.0 * m * k * n


# ---- child: one engine, every shape ---------------------------------------------------------------------

def products(engine: str, m: int, k: int, weights: list):
    """A function running x @ W.T for every weight in turn (set-up outside the timing)."""
    import numpy as np

    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    if engine == "numpy":
        out = np.empty((m, weights[0].shape[0]), np.float32)
        return lambda: [np.matmul(x, w.T, out=out) for w in weights]
    if engine == "torch":
        import torch

        xt, wt = torch.from_numpy(x), [torch.from_numpy(w) for w in weights]
        return lambda: [torch.nn.functional.linear(xt, w) for w in wt]
    session = _ort_session([np.ascontiguousarray(w.T) for w in weights], m)  # one session, as for a model
    return lambda: session.run(None, {"x": x})


def _ort_session(weights_t: list, m: int):
    """One graph of len(weights_t) MatMul nodes, x @ W_i, the W_i initializers (MLAS packs them at load)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = weights_t[0].shape
    nodes = [helper.make_node("MatMul", ["x", f"W{i}"], [f"y{i}"]) for i in range(len(weights_t))]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [m, n]) for i in range(len(weights_t))]
    graph = helper.make_graph(nodes, "matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              outputs, [numpy_helper.from_array(w, f"W{i}") for i, w in enumerate(weights_t)])
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def child_run(engine: str, repeats: int) -> None:
    import numpy as np

    rates = {}
    for m, k, n in shapes():
        count = max(2, -(-COLD_BYTES // (4 * n * k)))  # enough distinct weights to leave the cache cold
        weights = [np.random.default_rng(i).standard_normal((n, k), dtype=np.float32) for i in range(count)]
        run = products(engine, m, k, weights)
        run()  # warm-up: JIT, allocator, thread pools
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) / count)
        rates[f"{m}x{k}x{n}"] = flops((m, k, n)) / statistics.median(times) / 1e9
    print("RESULT " + json.dumps(rates))


# ---- parent ---------------------------------------------------------------------------------------------

def workload_flops(products: dict) -> float:
    return sum(flops(shape) * count for shape, count in products.items())


def weighted(rates: dict, products: dict) -> float:
    """A workload's FLOPs over the time its products take at these rates (GFLOP/s)."""
    total = workload_flops(products)
    seconds = sum(flops(s) * c / (rates[f"{s[0]}x{s[1]}x{s[2]}"] * 1e9) for s, c in products.items())
    return total / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", action="append", choices=ENGINES, help="(repeatable) default: all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "numpy":
            from refimpl.runtime import configure_process

            configure_process()
        child_run(args.child, args.repeats)
        return
    engines = args.engine or list(ENGINES)
    rounds = {e: [] for e in engines}
    for _ in range(args.rounds):  # alternate the engines, so that a drift of the machine hits all alike
        for engine in engines:
            report = run_child([__file__, "--child", engine, "--repeats", str(args.repeats)], side_env("refimpl"))
            if "error" in report:
                sys.exit(f"{engine}: {report['error']}")
            rounds[engine].append(report)
    rates = {e: {s: statistics.median(r[s] for r in rs) for s in rs[0]} for e, rs in rounds.items()}
    table = {name: {e: weighted(rates[e], products) for e in engines} for name, products in WORKLOADS.items()}
    result = {"benchmark": "gemm", "rounds": args.rounds, "repeats": args.repeats,
              "cpu_flags": vector_flags(),
              "rates_gflops": rates, "workloads_gflops": table}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gemm.json").write_text(json.dumps(result, indent=1) + "\n")
    print("GFLOP/s (cold weights, median of %d rounds)" % args.rounds)
    print("| shape M x K x N | " + " | ".join(engines) + " |")
    print("| --- |" + " --- |" * len(engines))
    for s in rates[engines[0]]:
        print(f"| {s} | " + " | ".join(f"{rates[e][s]:.0f}" for e in engines) + " |")
    print("\n| workload (its products, weighted by FLOPs) | " + " | ".join(engines) + " |")
    print("| --- |" + " --- |" * len(engines))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[e]:.0f}" for e in engines) + " |")


if __name__ == "__main__":
    main()
