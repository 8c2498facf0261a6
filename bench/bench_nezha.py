"""NEZHA-base forward, refimpl vs upstream PyTorch, side by side: `python bench/bench_nezha.py`.

Shape: 12 layers, d=768, 12 heads, intermediate 3072, vocab 21128, max_relative_position 64, random
weights, float32, NezhaModel (last_hidden_state + pooler) on 8x128 and 1x512 tokens. Each (side, shape)
runs in its own subprocess (`--side refimpl|upstream --shape BxT`) so that its peak RSS
(resource.getrusage ru_maxrss) is its own; the time is the median of 3 runs after one warm-up. The
refimpl subprocess gets OPENBLAS_CORETYPE=SkylakeX when the CPU has avx512f (numpy's OpenBLAS otherwise
picks its slower Haswell kernels on these machines). Prints a table and writes bench/results/nezha.json.
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

HERE = Path(__file__).resolve().parent
SHAPES = ["8x128", "1x512"]
CONFIG = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
              intermediate_size=3072, max_position_embeddings=512, max_relative_position=64, type_vocab_size=2)
REPEATS = 3


def inputs(shape):  # -> (ids [B, T] int64, mask [B, T]) with the last row padded by a quarter
    import numpy as np

    batch, length = map(int, shape.split("x"))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, CONFIG["vocab_size"], size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    if batch > 1:
        mask[-1, length - length // 4:] = 0
    return ids, mask


def timed(fn):  # -> median seconds of REPEATS runs after one warm-up
    fn()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def run_refimpl(shape):
    import numpy as np

    from refimpl.config import NezhaConfig
    from refimpl.models import nezha

    cfg = NezhaConfig(**CONFIG)
    rng = np.random.default_rng(0)
    params = {}
    for name, shp in nezha.param_shapes(cfg, "NezhaModel").items():
        if name.endswith("LayerNorm.weight"):
            params[name] = np.ones(shp, np.float32)
        elif len(shp) == 1:
            params[name] = np.zeros(shp, np.float32)
        else:
            params[name] = rng.standard_normal(shp, dtype=np.float32) * np.float32(0.02)
    ids, mask = inputs(shape)
    out = {}

    def forward():
        out["result"] = nezha.nezha_model(params, cfg, ids, mask)

    median, times = timed(forward)
    assert out["result"].last_hidden_state.dtype == np.float32
    return median, times


def run_upstream(shape):
    import torch
    from transformers import NezhaConfig, NezhaModel

    torch.manual_seed(0)
    model = NezhaModel(NezhaConfig(**CONFIG)).eval()
    ids, mask = (torch.from_numpy(a) for a in inputs(shape))

    def forward():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)

    return timed(forward)


def side_main(side, shape):
    median, times = (run_refimpl if side == "refimpl" else run_upstream)(shape)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"side": side, "shape": shape, "median_s": median, "times_s": times, "peak_rss_mib": peak_mib,
                      "load_average_1min": os.getloadavg()[0]}))  # the machine is shared: record how busy it was


def has_avx512():
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def run_side(side, shape):
    env = dict(os.environ)
    if side == "refimpl" and has_avx512():
        env["OPENBLAS_CORETYPE"] = "SkylakeX"  # must be set before numpy is imported: hence the subprocess
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, __file__, "--side", side, "--shape", shape], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    rows = []
    for shape in SHAPES:
        ours, theirs = run_side("refimpl", shape), run_side("upstream", shape)
        rows.append({"shape": shape, "refimpl": ours, "upstream": theirs,
                     "time_ratio": ours["median_s"] / theirs["median_s"],
                     "rss_ratio": ours["peak_rss_mib"] / theirs["peak_rss_mib"]})
    load = max(r[side]["load_average_1min"] for r in rows for side in ("refimpl", "upstream"))
    print(f"NEZHA-base NezhaModel forward, float32, median of {REPEATS} (ratio = refimpl / upstream); "
          f"max 1-min load average during the runs: {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'shape':>7} | {'refimpl s':>9} {'upstream s':>10} {'ratio':>6} | {'refimpl MiB':>11} {'upstream MiB':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['shape']:>7} | {r['refimpl']['median_s']:9.3f} {r['upstream']['median_s']:10.3f} {r['time_ratio']:6.2f} | "
              f"{r['refimpl']['peak_rss_mib']:11.0f} {r['upstream']['peak_rss_mib']:12.0f} {r['rss_ratio']:6.2f}")
    results = {"benchmark": "nezha-base forward", "config": CONFIG, "repeats": REPEATS, "rows": rows,
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "openblas_coretype_refimpl": "SkylakeX" if has_avx512() else None}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "nezha.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["refimpl", "upstream"])
    parser.add_argument("--shape", choices=SHAPES)
    args = parser.parse_args()
    if args.side:
        side_main(args.side, args.shape or SHAPES[0])
    else:
        main()
