"""End-to-end scoring of a corpus: `refimpl score` (its defaults, and other settings) against CTranslate2's
`Generator.score_iterable` (OPT) and an ONNX Runtime scoring loop with the same length-sorted token-budget
batching (OPT, XGLM). Tokens/s, peak memory, and every engine's per-line scores checked against refimpl's.

    pip install -e .[bench,upstream]
    python bench/bench_score_e2e.py                       # OPT (1,000 lines) and XGLM (100 lines)
    python bench/bench_score_e2e.py --model opt --lines 300 --run refimpl-default --run ctranslate2-2-threads
    python bench/bench_score_e2e.py --markdown            # the table of bench/results/score_e2e.json

The corpus is real prose of mixed lengths: lines of 8 to 80 consecutive words of the docstrings of
Python's standard library (whatever Python runs this; the same seed gives the same lines on the same
Python), tokenised once with the real OPT vocabulary (byte-level BPE, 50,265 entries) into token ids that
every engine reads: refimpl as `--format ids`, CTranslate2 as tokens, ONNX Runtime as arrays. XGLM reads
the same ids (its own sentencepiece vocabulary is not available here; the ids fit its 256,008).

Models: the OPT-125m and XGLM-564M shapes with random weights (bench/bench_opt.py, bench/bench_xglm.py),
saved once by bench/peer_export.py (upstream's save_pretrained, CTranslate2's conversion) in the bench
cache, with an ONNX export of the scoring graph (logits -> log_softmax -> gather) dynamic in batch and
length, made here.

Each run is a process of its own (or a process tree: `refimpl score --workers`). tokens/s is the corpus's
tokens (every id of every line, the first included) over the scoring time: for refimpl its own final
stderr line (model loading excluded), for the peers the loop around `score_iterable` / `session.run`.
Peak memory over the run's processes: the largest sum of their resident sets (RSS, sampled every 50 ms:
pages shared by processes, the memory-mapped weights of refimpl's workers, count once in each) and of
their proportional sets (PSS, every 2 s, as reading it costs CPU: a shared page split among its sharers;
the memory really held).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from harness import CACHE, RESULTS, vector_flags  # noqa: E402

RESULT_FILE = RESULTS / "score_e2e.json"
# vocab.json + merges.txt of OPT's byte-level BPE (as bench/bench_tokenizers.py finds them); REFIMPL_OPT_VOCABULARY moves it
OPT_VOCABULARY = Path(os.environ.get("REFIMPL_OPT_VOCABULARY", ROOT.parent / "shared" / "vocab" / "roberta-base"))
OPT_TOKENIZER_CONFIG = ROOT / "golden" / "tokenizers" / "opt"  # upstream's tokenizer_config of OPT
MODELS = {"opt": ("opt-score", 1000), "xglm": ("xglm-score", 100)}  # -> (bench/peer_workloads workload, lines)
TOLERANCE = 1e-5  # largest |log-likelihood difference| / |refimpl's| over the lines


# ---- the corpus --------------------------------------------------------------------------------------------

def stdlib_words() -> list:
    """The words of every docstring in the standard library's top-level modules, in file order."""
    words = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    words += doc.split()
    return words


def prose(n: int, seed: int = 0, shortest: int = 8, longest: int = 80) -> list:
    import numpy as np

    words = stdlib_words()
    rng = np.random.default_rng(seed)
    starts, lengths = rng.integers(0, len(words) - longest, n), rng.integers(shortest, longest + 1, n)
    return [" ".join(words[s:s + k]) for s, k in zip(starts, lengths)]


def tokenizer_dir() -> Path:
    import peer_export

    def make(tmp: Path) -> None:
        for source in (OPT_VOCABULARY / "vocab.json", OPT_VOCABULARY / "merges.txt",
                       OPT_TOKENIZER_CONFIG / "tokenizer_config.json", OPT_TOKENIZER_CONFIG / "special_tokens_map.json"):
            shutil.copy(source, tmp / source.name)

    folder = CACHE / "opt-tokenizer"
    peer_export._once(folder, make)
    return folder


def corpus_ids(lines: int, seed: int = 0) -> Path:
    """The corpus as token ids, one line of space-separated ids per text (cached)."""
    path = CACHE / "score-e2e" / f"prose-{lines}-{seed}.ids"
    if not path.exists():
        import refimpl

        tokenizer = refimpl.load_tokenizer(tokenizer_dir())
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [" ".join(map(str, tokenizer(text)["input_ids"])) for text in prose(lines, seed)]
        path.write_text("".join(row + "\n" for row in rows))
    return path


def read_ids(path: Path) -> list:
    return [[int(t) for t in line.split()] for line in path.read_text().splitlines()]


# ---- artifacts ---------------------------------------------------------------------------------------------

def prepare(model: str) -> dict:
    """The checkpoint, CTranslate2's conversion (OPT) and the dynamic ONNX scoring graph, made once."""
    import peer_export
    from peer_workloads import WORKLOADS

    workload = WORKLOADS[MODELS[model][0]]
    peer_export.prepare(workload, ["ctranslate2"] if model == "opt" else [])
    peer_export._once(onnx_path(model).parent, lambda tmp: export_dynamic(workload, tmp / "model.onnx"))
    return {"checkpoint": str(peer_export.checkpoint_dir(workload)), "ct2": str(peer_export.ct2_dir(workload)),
            "onnx": str(onnx_path(model))}


def onnx_path(model: str) -> Path:
    import peer_export
    from peer_workloads import WORKLOADS

    return peer_export.folder(WORKLOADS[MODELS[model][0]]) / "onnx" / "score-dynamic" / "model.onnx"


def export_dynamic(workload, path: Path) -> None:
    """bench/peer_export.py's scoring graph with the batch and length axes dynamic."""
    import warnings

    import torch

    import peer_export

    model = peer_export.load_upstream(workload)
    graph, inputs, names, _ = peer_export.GRAPHS["score"](model, workload)
    dynamic = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
               "logprobs": {0: "batch", 1: "scored"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(inputs), str(path), input_names=names[0], output_names=names[1],
                          dynamic_axes=dynamic, opset_version=peer_export.OPSET, dynamo=False)


# ---- the engines (each in a child process) ------------------------------------------------------------------

def child_ctranslate2(ids_path: Path, out: Path, ct2_dir: str, inter: int, intra: int, budget: int) -> dict:
    import ctranslate2
    import numpy as np

    import peer_export

    generator = ctranslate2.Generator(ct2_dir, device="cpu", compute_type="float32", inter_threads=inter,
                                      intra_threads=intra)
    rows = [[peer_export.token(i) for i in ids] for ids in read_ids(ids_path)]
    start = time.perf_counter()
    scores = [float(np.sum(r.log_probs, dtype=np.float64))
              for r in generator.score_iterable(rows, max_batch_size=budget, batch_type="tokens")]
    seconds = time.perf_counter() - start
    np.save(out, np.array(scores))
    return {"seconds": seconds}


def child_onnxruntime(ids_path: Path, out: Path, onnx: str, threads: int, budget: int, window: int) -> dict:
    """Windows of `window` lines, sorted by length and cut by the token budget as refimpl cuts them
    (refimpl.batch.jobs.budget_batches), each batch right-padded, one session.run per batch."""
    import numpy as np
    import onnxruntime as ort

    from refimpl.batch.jobs import budget_batches

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    lines = read_ids(ids_path)
    scores = np.zeros(len(lines))
    start = time.perf_counter()
    for first in range(0, len(lines), window):
        items = sorted(enumerate(lines[first:first + window], first), key=lambda item: len(item[1]))
        for batch in budget_batches(items, budget):
            width = max(len(ids) for _, ids in batch)
            x = np.ones((len(batch), width), np.int64)  # OPT's pad id; masked out
            mask = np.zeros_like(x)
            for r, (_, ids) in enumerate(batch):
                x[r, :len(ids)], mask[r, :len(ids)] = ids, 1
            logprobs = session.run(None, {"input_ids": x, "attention_mask": mask})[0]  # [b, T - 1]
            for r, (index, ids) in enumerate(batch):
                scores[index] = np.sum(logprobs[r, :len(ids) - 1], dtype=np.float64)
    seconds = time.perf_counter() - start
    np.save(out, scores)
    return {"seconds": seconds}


RATE = re.compile(r"refimpl: (\d+) lines, (\d+) tokens in ([\d.]+) s.*padding ([\d.]+)% of positions; "
                  r"(\d+) process\(es\) x (\d+) thread")


def run_refimpl(ids_path: Path, out: Path, checkpoint: str, options: list) -> dict:
    jsonl = out.with_suffix(".jsonl")
    argv = [sys.executable, "-m", "refimpl", "score", str(ids_path), "--format", "ids", "--model", checkpoint,
            "-o", str(jsonl), *options]
    report, stderr = watched(argv, {**os.environ, "PYTHONPATH": str(ROOT)})
    match = RATE.search(stderr)
    if report["exit_status"] != 0 or not match:
        return {"error": stderr.strip().splitlines()[-3:]}
    import numpy as np

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    np.save(out, np.array([r["log_likelihood"] for r in records]))
    return {**report, "seconds": float(match[3]), "padding_percent": float(match[4]),
            "processes": int(match[5]), "threads": int(match[6]), "stderr_line": match[0]}


def run_child(kind: str, args: list) -> dict:
    report, stderr = watched([sys.executable, __file__, "--child", kind, *map(str, args)], dict(os.environ))
    lines = [line for line in stderr.splitlines() if line.startswith("RESULT ")]
    if report["exit_status"] != 0 or not lines:
        return {"error": stderr.strip().splitlines()[-3:]}
    return {**report, **json.loads(lines[-1][len("RESULT "):])}


RSS_EVERY, PSS_EVERY = 0.05, 2.0  # seconds between samples of the resident sets, of the proportional sets


def watched(argv: list, env: dict):
    """Run argv, sampling its process tree's resident memory -> ({wall_seconds, peak_rss_mib, exit_status,
    load_average_before}, stderr). The load average says how busy the machine was (these are shared).

    The resident sets (/proc/PID/statm, a few microseconds) are read every RSS_EVERY seconds; the
    proportional sets (/proc/PID/smaps_rollup, which walks every page table: ~35 ms of CPU for refimpl's
    three processes at opt-125m's size) only every PSS_EVERY seconds. Read every 50 ms they took 40% of a
    core, away from the engine timed on a 2-core machine (refimpl's run went from 98 s to 118 s)."""
    load, start = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def sample():
        last_pss = -PSS_EVERY
        while proc.poll() is None:
            pids = process_tree(proc.pid)
            peak[0] = max(peak[0], sum(map(resident_kib, pids)))
            if time.perf_counter() - last_pss >= PSS_EVERY:
                peak[1], last_pss = max(peak[1], sum(map(proportional_kib, pids))), time.perf_counter()
            time.sleep(RSS_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.communicate()[1]
    sampler.join()
    return {"wall_seconds": round(time.perf_counter() - start, 2), "peak_rss_mib": round(peak[0] / 1024),
            "peak_pss_mib": round(peak[1] / 1024),
            "exit_status": proc.returncode, "load_average_before": round(load, 1)}, stderr


def process_tree(pid: int) -> list:  # a process and all its descendants (those still running)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return tree


PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def resident_kib(pid: int) -> int:  # the resident set: pages shared by processes count in each
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError):
        return 0


def proportional_kib(pid: int) -> int:  # the proportional set: a page shared by n processes counts 1/n
    try:
        return int(re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)[1])
    except (OSError, TypeError):
        return 0


# ---- the plan -----------------------------------------------------------------------------------------------

def plan(model: str, cpus: int, budget: int) -> dict:
    """run name -> (engine, options). refimpl's settings are its command-line options."""
    runs = {"refimpl-default": ("refimpl", []),
            "refimpl-1-process-1-thread-8-lines": ("refimpl", ["--workers", "1", "--threads", "1",
                                                                 "--batch-size", "8", "--batch-tokens", "1000000"]),
            f"refimpl-1-process-{cpus}-threads": ("refimpl", ["--workers", "1", "--threads", str(cpus)]),
            f"refimpl-{cpus}-processes-batch-tokens-4096": ("refimpl", ["--batch-tokens", "4096"]),
            f"onnxruntime-{cpus}-threads": ("onnxruntime", [cpus, budget])}
    if model == "opt":
        runs[f"ctranslate2-{cpus}-threads"] = ("ctranslate2", [1, cpus, budget])
        runs[f"ctranslate2-{cpus}-inter-threads"] = ("ctranslate2", [cpus, 1, budget])
    return runs


def run_one(name: str, engine: str, options: list, model: str, ids_path: Path, artifacts: dict) -> dict:
    out = CACHE / "score-e2e" / f"{model}.{name}.npy"
    if engine == "refimpl":
        return run_refimpl(ids_path, out, artifacts["checkpoint"], options)
    if engine == "ctranslate2":
        inter, intra, budget = options
        return run_child("ctranslate2", [ids_path, out, artifacts["ct2"], inter, intra, budget])
    threads, budget = options
    return run_child("onnxruntime", [ids_path, out, artifacts["onnx"], threads, budget, 512])


def bench_model(model: str, lines: int, only: list, rounds: int) -> dict:
    import numpy as np

    from refimpl.batch.jobs import DEFAULT_BATCH_TOKENS
    from refimpl.runtime import usable_cpus

    artifacts = checked(run_child("prepare", [model]), f"preparing {model}")["artifacts"]
    ids_path = corpus_ids(lines)
    ids = read_ids(ids_path)
    tokens = sum(map(len, ids))
    runs = {k: v for k, v in plan(model, usable_cpus(), DEFAULT_BATCH_TOKENS).items() if not only or k in only}
    results = {name: [] for name in runs}
    for _ in range(rounds):  # alternating: the drift of a shared machine hits every run alike
        for name, (engine, options) in runs.items():
            report = run_one(name, engine, options, model, ids_path, artifacts)
            if "seconds" in report:
                report["tokens_per_s"] = round(tokens / report["seconds"], 1)
            print(f"{model} {name}: {json.dumps(report)}", flush=True)
            results[name].append(report)
    reference = CACHE / "score-e2e" / f"{model}.refimpl-default.npy"
    row = {"lines": lines, "tokens": tokens, "runs": {}}
    for name, reports in results.items():
        good = [r for r in reports if "error" not in r]
        if not good:
            row["runs"][name] = reports[-1]
            continue
        rates = sorted(r["tokens_per_s"] for r in good)
        summary = {**good[-1], "tokens_per_s": float(np.median(rates)), "tokens_per_s_all": rates,
                   "peak_rss_mib": max(r["peak_rss_mib"] for r in good),
                   "peak_pss_mib": max(r.get("peak_pss_mib", 0) for r in good),
                   "load_average_before": float(np.median([r["load_average_before"] for r in good]))}
        if reference.exists():
            mine = np.load(reference)
            theirs = np.load(CACHE / "score-e2e" / f"{model}.{name}.npy")
            rel = float(np.max(np.abs(theirs - mine) / np.abs(mine)))
            summary["check"] = {"max_rel_diff_vs_refimpl_default": rel, "ok": rel <= TOLERANCE}
        row["runs"][name] = summary
    return row


def checked(report: dict, what: str) -> dict:
    if "error" in report:
        raise SystemExit(f"{what} failed: {' '.join(report['error'])}")
    return report


# ---- the table ----------------------------------------------------------------------------------------------

def load_text(load) -> str:  # the 1-minute load average, as the table shows it
    return "-" if load is None else f"{load:.1f}"


def markdown(results: dict) -> str:
    out = [f"CPU: {results['machine']['cpu']}, {results['machine']['cpus']} usable cores, flags "
           f"{' '.join(results['machine']['vector_flags'])}", "",
           "| model | run | tokens/s (median, min-max) | vs best CTranslate2 | vs ONNX Runtime | peak RSS (PSS) | padding "
           "| scores vs refimpl | load average before |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, row in results["models"].items():
        runs = row["runs"]

        def best(prefix):
            rates = [r["tokens_per_s"] for n, r in runs.items() if n.startswith(prefix) and "tokens_per_s" in r]
            return max(rates) if rates else None

        ct2, ort = best("ctranslate2"), best("onnxruntime")
        for name, r in runs.items():
            if "error" in r:
                out.append(f"| {model} | {name} | error: {' '.join(r['error'])} | | | | | | |")
                continue
            spread = f"{min(r['tokens_per_s_all']):.0f}-{max(r['tokens_per_s_all']):.0f}"
            ratio = lambda peer: f"{r['tokens_per_s'] / peer:.2f}" if peer else "-"  # noqa: E731
            pad = f"{r['padding_percent']:.1f}%" if "padding_percent" in r else "-"
            check = r.get("check", {}).get("max_rel_diff_vs_refimpl_default")
            out.append(f"| {model} ({row['lines']} lines, {row['tokens']} tokens) | {name} | {r['tokens_per_s']:.0f} "
                       f"({spread}) | {ratio(ct2)} | {ratio(ort)} | {r['peak_rss_mib']} ({r.get('peak_pss_mib', '-')}) MiB | {pad} | "
                       f"{'-' if check is None else f'{check:.1e}'} | {load_text(r.get('load_average_before'))} |")
    return "\n".join(out)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), action="append")
    parser.add_argument("--lines", type=int, default=None, help="corpus lines (default: 1000 OPT, 100 XGLM)")
    parser.add_argument("--run", action="append", help="only these runs (names as in the table)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of every run")
    parser.add_argument("--markdown", action="store_true", help="print the table of the last results")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "prepare":
            report = {"artifacts": prepare(rest[0])}
        elif kind == "ctranslate2":
            report = child_ctranslate2(Path(rest[0]), Path(rest[1]), rest[2], *map(int, rest[3:]))
        else:
            report = child_onnxruntime(Path(rest[0]), Path(rest[1]), rest[2], *map(int, rest[3:]))
        print("RESULT " + json.dumps(report), file=sys.stderr)
        return
    if args.markdown:
        print(markdown(json.loads(RESULT_FILE.read_text())))
        return
    from refimpl.runtime import usable_cpus

    previous = json.loads(RESULT_FILE.read_text()) if RESULT_FILE.exists() else {"models": {}}
    results = {"benchmark": "score_e2e", "machine": {"cpu": cpu_name(), "cpus": usable_cpus(),
                                                     "vector_flags": vector_flags(), "platform": platform.platform(),
                                                     "load_average_before": os.getloadavg()[0]},
               "models": previous.get("models", {})}
    for model in args.model or list(MODELS):
        results["models"][model] = bench_model(model, args.lines or MODELS[model][1], args.run or [], args.rounds)
    RESULTS.mkdir(exist_ok=True)
    RESULT_FILE.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    print(f"written to {RESULT_FILE}")


if __name__ == "__main__":
    main()
