"""refimpl against refimpl: the same benchmark workloads in two checkouts, side by side, as ratios.

    git worktree add /tmp/before HEAD~5          # the checkout to compare with
    python bench/compare_trees.py /tmp/before    # this checkout ("after") against it

For a change that should not change speed (a refactoring), or one that should. Each side runs every
workload's refimpl child of `bench/bench_<name>.py` (harness.py) in its own process, from its own tree
(PYTHONPATH), alternating the sides over `--rounds` rounds so that the machine's drift hits both alike;
a side's time is the median over all its timed calls. Writes bench/results/compare_trees.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = [("bench_opt.py", "opt-125m score 8x128"), ("bench_nezha.py", "nezha-base 8x128"),
             ("bench_nezha.py", "nezha-base 1x512"), ("bench_led.py", "led-base encoder 4096"),
             ("bench_xglm.py", "xglm-564M token logprobs 1x128")]


def run_side(tree: Path, script: str, workload: str, repeats: int) -> list:  # -> seconds of each timed call
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)  # each side sets its own process settings
    proc = subprocess.run([sys.executable, str(tree / "bench" / script), "--side", "refimpl", "--workload", workload,
                           "--repeats", str(repeats)], capture_output=True, text=True, env=env, cwd=tree)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{tree} {script} {workload!r} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])["times_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the other checkout (its bench/ and refimpl/ are used)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating processes per side (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process (default 3)")
    parser.add_argument("--workload", action="append", help="only these workloads (default: all)")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": HERE.parent}
    rows = []
    for script, workload in WORKLOADS:
        if args.workload and workload not in args.workload:
            continue
        times = {side: [] for side in trees}
        for _ in range(max(1, args.rounds)):
            for side, tree in trees.items():
                times[side] += run_side(tree, script, workload, args.repeats)
        medians = {side: statistics.median(t) for side, t in times.items()}
        row = {"workload": workload, **{f"{side}_median_s": m for side, m in medians.items()},
               "ratio_after_over_before": medians["after"] / medians["before"]}
        rows.append(row)
        print(f"{workload:<34} before {medians['before']:.3f} s  after {medians['after']:.3f} s  "
              f"ratio {row['ratio_after_over_before']:.3f}", flush=True)
    out = HERE / "results" / "compare_trees.json"
    out.write_text(json.dumps({"before": str(trees["before"]), "rounds": args.rounds, "repeats": args.repeats,
                               "load_average_1min": os.getloadavg()[0], "rows": rows}, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
