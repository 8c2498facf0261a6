"""Side-by-side benchmark plumbing: each side (refimpl, upstream) runs in its own subprocess, so its peak
RSS is its own, and reports the median of a few timed runs as JSON; the parent prints a table with
ratios and writes bench/results/<name>.json.

A benchmark script defines `workloads()` -> {name: description} and `run(side, workload)` -> a
zero-argument callable to time (set-up excluded), then calls `main(__file__, workloads, run)`.

The two sides alternate over `--rounds` rounds (refimpl, upstream, refimpl, upstream, ...), each round a
fresh process per side timing `--repeats` calls; a side's time is the median over all its calls. The
speed of these shared machines drifts by 10-20% over minutes, so alternating keeps both sides under the
same conditions; the spread of each side's per-round medians is reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# checkpoints and exported graphs of bench/peers.py: outside the repository, reused between runs
CACHE = Path(os.environ.get("REFIMPL_BENCH_CACHE", Path.home() / ".cache" / "refimpl-bench"))


def cpu_flags() -> set:
    """The first CPU's flags in /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def vector_flags() -> list:
    """The CPU flags that decide which kernels BLAS, torch and Numba pick (avx*, fma, amx*), sorted."""
    return sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "amx")))


def has_avx512() -> bool:
    return "avx512f" in cpu_flags()


def side_env(side: str) -> dict:
    env = dict(os.environ)
    if side == "refimpl" and has_avx512():
        # numpy's OpenBLAS picks its AVX2 kernel on these AMD EPYC machines; the AVX-512 one is ~2x faster
        env.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    return env


def sgemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The machine's numpy float32 GEMM speed, for scale (run in the refimpl side's environment)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def torch_sgemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The same for torch's float32 GEMM."""
    import torch

    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def child(script: str, side: str, workload: str, repeats: int, run) -> None:
    if side == "refimpl":  # as the `refimpl` command runs it (refimpl/runtime.py), before NumPy loads
        from refimpl.runtime import configure_process

        configure_process()
    report, _ = measure(run(side, workload), repeats)
    if side == "refimpl":
        report["numpy_sgemm_gflops"] = sgemm_gflops()
    print("RESULT " + json.dumps(report))


def measure(fn, repeats: int):
    """Time `repeats` calls of fn after one warm-up call -> (report, the warm-up call's result)."""
    result = fn()  # warm-up (JIT compilation, allocator)
    times = [_timed(fn) for _ in range(repeats)]
    report = {"median_s": statistics.median(times), "times_s": times,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "load_average_1min": os.getloadavg()[0]}  # the machine may be shared: record how busy it was
    return report, result


def spawn(script: str, side: str, workload: str, repeats: int) -> dict:
    return run_child([script, "--side", side, "--workload", workload, "--repeats", str(repeats)], side_env(side))


def run_child(argv: list, env: dict) -> dict:
    """Run `python *argv` and return the report its last `RESULT {json}` line holds, else {"error": [last line]}."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        said = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        killed = [f"killed by signal {-proc.returncode} (out of memory?)"] if proc.returncode < 0 else []
        return {"error": said + killed or [f"exit status {proc.returncode}"]}
    return json.loads(lines[-1][len("RESULT "):])


def combine(rounds: list) -> dict:
    """One side's reports of several rounds -> one report: the median over every timed call, the largest
    peak RSS, and each round's median (to show the drift)."""
    errors = [r for r in rounds if "error" in r]
    if errors:
        return errors[0]
    report = dict(rounds[-1])
    report["times_s"] = [t for r in rounds for t in r["times_s"]]
    report["median_s"] = statistics.median(report["times_s"])
    report["round_medians_s"] = [r["median_s"] for r in rounds]
    report["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    report["load_average_1min"] = max(r["load_average_1min"] for r in rounds)
    return report


def main(script: str, workloads, run) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", choices=["refimpl", "upstream"])
    parser.add_argument("--workload", choices=list(workloads()), action="append")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=3, help="alternating processes per side")
    args = parser.parse_args()
    if args.side:  # child process
        child(script, args.side, args.workload[0], args.repeats, run)
        return
    name = Path(script).stem.replace("bench_", "")
    rows = []
    for workload, description in workloads().items():
        if args.workload and workload not in args.workload:
            continue
        ours, theirs = [], []
        for _ in range(max(1, args.rounds)):
            ours.append(spawn(script, "refimpl", workload, args.repeats))
            theirs.append(spawn(script, "upstream", workload, args.repeats))
        ours, theirs = combine(ours), combine(theirs)
        row = {"workload": workload, "description": description, "refimpl": ours, "upstream": theirs}
        if "median_s" in ours and "median_s" in theirs:
            row["time_ratio"] = ours["median_s"] / theirs["median_s"]
            row["memory_ratio"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        rows.append(row)
        print_row(row)
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": name, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                         "avx512": has_avx512()}, "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {RESULTS / (name + '.json')}")


def print_row(row: dict) -> None:
    ours, theirs = row["refimpl"], row["upstream"]

    def fmt(side):
        if "error" in side:
            return "error: " + " ".join(side["error"])
        rounds = side.get("round_medians_s", [side["median_s"]])
        spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
        return f"{side['median_s']:.3f} s{spread}, {side['peak_rss_mb']:.0f} MB"

    print(f"{row['workload']:<28} refimpl {fmt(ours):<36} upstream {fmt(theirs):<36}", end="")
    if "time_ratio" in row:
        print(f" time ratio {row['time_ratio']:.2f}  memory ratio {row['memory_ratio']:.2f}", end="")
    if "numpy_sgemm_gflops" in ours:
        print(f"  (numpy sgemm {ours['numpy_sgemm_gflops']:.0f} GFLOP/s, load {ours['load_average_1min']:.1f})", end="")
    print(flush=True)
