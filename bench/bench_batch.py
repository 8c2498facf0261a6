"""`refimpl score` as a batch job: throughput quiet and with a competing CPU load, BLAS thread policies,
--workers, and peak RSS against input length. Results: bench/results/batch.json (and README).

    python bench/bench_batch.py                 # everything (~30 min on 2 busy cores)
    python bench/bench_batch.py --only rss      # one part: throughput-shipped, throughput-opt125m, rss, upstream, side-by-side

Every run is the real command (`python -m refimpl score ...`) in its own process. lines/s and tokens/s
are the job's own final stderr line (scoring time, after the model is loaded). "busy" runs with one
spinning Python process per core beside the job (another job on a shared machine). The load average
before each run is recorded: these machines are shared, so "quiet" means no load of ours.

Thread policies: "1 thread" is refimpl's default (refimpl.runtime.DEFAULT_BLAS_THREADS); "all cores" is
OpenBLAS's own default (--threads = cpu count). Inputs are runs of real prose (this repository's
README and the machine's /usr/share/common-licenses), 3-30 words a line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "batch.json"
CORES = os.cpu_count() or 1
OPT_125M = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                max_position_embeddings=2048, word_embed_proj_dim=768)


def prose(n: int, seed: int = 0) -> list:
    import numpy as np

    words = (ROOT / "README.md").read_text().split()
    for file in sorted(Path("/usr/share/common-licenses").glob("*"))[:8]:
        if file.is_file():
            words += file.read_text(errors="replace").split()
    rng = np.random.default_rng(seed)
    starts, lengths = rng.integers(0, len(words) - 40, n), rng.integers(3, 31, n)
    return [" ".join(words[s:s + k]) for s, k in zip(starts, lengths)]


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def opt125m_checkpoint(directory: Path) -> Path:
    """opt-125m's shape with random weights, saved like upstream (config.json + model.safetensors), and
    the shipped model's tokenizer (its ids fit the larger vocabulary)."""
    import shutil

    import numpy as np
    from safetensors.numpy import save_file

    from refimpl.models.opt import OPTConfig, param_shapes

    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    cfg = OPTConfig(**OPT_125M)
    weights = {k: rng.standard_normal(shape, dtype=np.float32) * 0.02
               for k, shape in param_shapes(cfg, "OPTForCausalLM").items() if k != "lm_head.weight"}
    save_file(weights, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**OPT_125M, "model_type": "opt", "architectures": ["OPTForCausalLM"],
                                                       "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
                                                       "do_layer_norm_before": True, "activation_function": "relu"}))
    shipped = ROOT / "refimpl" / "data" / "opt-tiny"
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(shipped / name, directory / name)
    return directory


class CompetingLoad:
    """One spinning process per core, as other jobs on a shared machine."""

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(CORES)]
        time.sleep(1)
        return self

    def __exit__(self, *_):
        for proc in self.procs:
            proc.kill()
            proc.wait()


RATE = re.compile(r"refimpl: (\d+) lines, (\d+) tokens in ([\d.]+) s")


def score(input_path: Path, model: Path, extra=()) -> dict:
    """One `refimpl score` run -> its rate line's numbers, wall time and the load average before it."""
    load = os.getloadavg()[0]
    out = input_path.with_suffix(".out.jsonl")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "refimpl", "score", str(input_path), "-o", str(out),
                          "--model", str(model), *extra], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    match = RATE.search(run.stderr)
    if run.returncode not in (0, 3) or not match:
        raise RuntimeError(f"refimpl score failed ({run.returncode}): {run.stderr[-2000:]}")
    lines, tokens, seconds = int(match[1]), int(match[2]), float(match[3])
    return {"lines": lines, "tokens": tokens, "scoring_seconds": seconds, "wall_seconds": round(wall, 2),
            "lines_per_s": round(lines / seconds, 1), "tokens_per_s": round(tokens / seconds),
            "load_average_before": round(load, 2), "options": list(extra)}


def throughput(name: str, model: Path, work: Path, sizes: dict) -> dict:
    """sizes: {scenario: lines}. The collapsing scenario gets fewer lines (a rate is a rate)."""
    results = {}
    texts = prose(max(sizes.values()))
    files = {n: write_lines(work / f"{name}-{n}.txt", texts[:n]) for n in set(sizes.values())}
    plan = {"quiet, 1 thread (default)": ([], False), f"quiet, {CORES} threads (OpenBLAS default)": (["--threads", str(CORES)], False),
            "busy, 1 thread (default)": ([], True), f"busy, {CORES} threads (OpenBLAS default)": (["--threads", str(CORES)], True),
            "quiet, --workers 2": (["--workers", "2"], False), "busy, --workers 2": (["--workers", "2"], True)}
    for scenario, (extra, busy) in plan.items():
        key = scenario.split(" (")[0]
        lines = sizes.get(key, sizes["default"])
        with CompetingLoad() if busy else _nothing():
            results[scenario] = score(files[lines], model, extra)
        print(f"{name:10s} {scenario:40s} {results[scenario]['lines_per_s']:8.1f} lines/s "
              f"{results[scenario]['tokens_per_s']:8d} tokens/s  ({lines} lines, load {results[scenario]['load_average_before']})",
              flush=True)
    quiet1, busy1 = results["quiet, 1 thread (default)"], results["busy, 1 thread (default)"]
    busy_n = results[f"busy, {CORES} threads (OpenBLAS default)"]
    results["ratios"] = {
        "busy/quiet, 1 thread": round(busy1["lines_per_s"] / quiet1["lines_per_s"], 3),
        f"busy/quiet, {CORES} threads": round(busy_n["lines_per_s"] / results[f"quiet, {CORES} threads (OpenBLAS default)"]["lines_per_s"], 3),
        f"busy: 1 thread / {CORES} threads": round(busy1["lines_per_s"] / busy_n["lines_per_s"], 3),
        f"quiet: 1 thread / {CORES} threads": round(quiet1["lines_per_s"] / results[f"quiet, {CORES} threads (OpenBLAS default)"]["lines_per_s"], 3),
        "quiet: --workers 2 / 1 process": round(results["quiet, --workers 2"]["lines_per_s"] / quiet1["lines_per_s"], 3),
    }
    return results


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass


UPSTREAM = """
import json, sys, time
import torch, transformers
threads, path, model_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if threads:
    torch.set_num_threads(threads)
tok = transformers.AutoTokenizer.from_pretrained(model_dir, use_fast=False)
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
lines = open(path, encoding="utf-8").read().splitlines()
start, tokens = time.perf_counter(), 0
for w in range(0, len(lines), 256):  # the same windows, length-sorted batches of 8, as refimpl's job
    items = sorted((tok(t)["input_ids"] for t in lines[w:w + 256]), key=len)
    for b in range(0, len(items), 8):
        batch = tok.pad({"input_ids": items[b:b + 8]}, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        (logp * batch["attention_mask"][:, 1:]).sum(-1).tolist()
        tokens += sum(len(i) for i in items[b:b + 8])
seconds = time.perf_counter() - start
print(json.dumps({"lines": len(lines), "tokens": tokens, "scoring_seconds": round(seconds, 2),
                  "lines_per_s": round(len(lines) / seconds, 1), "tokens_per_s": round(tokens / seconds)}))
"""


def upstream(work: Path, n: int) -> dict:
    """The same lines scored by transformers + torch in the same batches (a plain loop, no job machinery)."""
    path = write_lines(work / f"upstream-{n}.txt", prose(n))
    model = ROOT / "refimpl" / "data" / "opt-tiny"
    results = {}
    for scenario, threads, busy in (("quiet, torch default threads", 0, False), ("quiet, 1 thread", 1, False),
                                    ("busy, torch default threads", 0, True), ("busy, 1 thread", 1, True)):
        load = os.getloadavg()[0]
        with CompetingLoad() if busy else _nothing():
            run = subprocess.run([sys.executable, "-c", UPSTREAM, str(threads), str(path), str(model)],
                                 capture_output=True, text=True, check=True)
        results[scenario] = {**json.loads(run.stdout.splitlines()[-1]), "load_average_before": round(load, 2)}
        print(f"upstream   {scenario:40s} {results[scenario]['lines_per_s']:8.1f} lines/s", flush=True)
    return results


def side_by_side(work: Path, n: int = 600, rounds: int = 3) -> dict:
    """refimpl and the upstream loop alternating under the same competing load, 1 thread each (the
    fair comparison: the load of a shared machine drifts between the runs above)."""
    path = write_lines(work / f"pair-{n}.txt", prose(n, seed=1))
    model = ROOT / "refimpl" / "data" / "opt-tiny"
    pairs = []
    with CompetingLoad():
        for _ in range(rounds):
            ours = score(path, model)["lines_per_s"]
            run = subprocess.run([sys.executable, "-c", UPSTREAM, "1", str(path), str(model)],
                                 capture_output=True, text=True, check=True)
            theirs = json.loads(run.stdout.splitlines()[-1])["lines_per_s"]
            pairs.append({"refimpl_lines_per_s": ours, "upstream_lines_per_s": theirs, "ratio": round(ours / theirs, 3)})
            print(f"busy, 1 thread: refimpl {ours} lines/s, upstream {theirs} lines/s", flush=True)
    return {"lines": n, "rounds": pairs}


PEAK = """
import resource, sys
from refimpl.__main__ import main
code = main(sys.argv[1:])
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def peak_rss(work: Path, sizes=(20000, 200000)) -> dict:
    """Peak RSS of the whole command for short and long inputs (tiny golden OPT model, token ids: fast)."""
    import numpy as np

    model = ROOT / "golden" / "opt" / "preln-OPTForCausalLM"
    rng = np.random.default_rng(0)
    results = {}
    for n in sizes:
        path = work / f"ids-{n}.txt"
        with open(path, "w") as f:
            for _ in range(n):
                f.write(" ".join(map(str, rng.integers(3, 37, rng.integers(2, 21)))) + "\n")
        run = subprocess.run([sys.executable, "-c", PEAK, "score", str(path), "--format", "ids", "--model", str(model),
                              "-o", str(work / "ids.out")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        peak = int(re.search(r"PEAK_KIB (\d+)", run.stderr)[1])
        results[f"{n} lines"] = {"peak_rss_mib": round(peak / 1024, 1)}
        print(f"peak RSS {n:7d} lines: {peak / 1024:.1f} MiB", flush=True)
    a, b = (results[f"{n} lines"]["peak_rss_mib"] for n in sizes)
    results["ratio"] = round(b / a, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["throughput-shipped", "throughput-opt125m", "rss", "upstream", "side-by-side"])
    parser.add_argument("--lines", type=int, default=20000, help="lines of the shipped-model runs")
    parser.add_argument("--opt125m-lines", type=int, default=160, help="lines of the opt-125m-shape runs")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = {"cpus": CORES, "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "rss"):
            results["peak_rss"] = peak_rss(work)
        if args.only in (None, "throughput-shipped"):
            n = args.lines
            results["throughput_shipped_opt_tiny"] = throughput(
                "opt-tiny", ROOT / "refimpl" / "data" / "opt-tiny", work,
                {"default": n, f"quiet, {CORES} threads": n // 4, "busy, 1 thread": n // 4,
                 f"busy, {CORES} threads": max(200, n // 20), "busy, --workers 2": n // 4})
        if args.only in (None, "throughput-opt125m"):
            n = args.opt125m_lines
            results["throughput_opt125m_shape"] = throughput(
                "opt-125m", opt125m_checkpoint(work / "opt125m"), work,
                {"default": n, f"quiet, {CORES} threads": n // 2, f"busy, {CORES} threads": max(40, n // 5)})
        if args.only in (None, "upstream"):
            results["upstream_opt_tiny"] = upstream(work, min(args.lines, 2000))
        if args.only in (None, "side-by-side"):
            results["side_by_side_busy_1_thread"] = side_by_side(work)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
