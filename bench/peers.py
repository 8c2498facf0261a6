"""refimpl against the engines a person scoring text on CPUs would otherwise install: upstream PyTorch,
ONNX Runtime and CTranslate2, on one random-weight checkpoint per model (the one bench_<family>.py makes).

    pip install -e .[bench,upstream]
    python bench/peers.py                        # every workload and engine; table + bench/results/peers.json
    python bench/peers.py --quick                # OPT scoring and generation, NEZHA: 1 round of 1 call
    python bench/peers.py --workload opt-score --engine refimpl --engine onnxruntime --rounds 2 --repeats 3
    python bench/peers.py --markdown             # the table of bench/results/peers.json, as in the README

For each workload: the checkpoint, the ONNX export and the CTranslate2 conversion are made once and cached
outside the repository (bench/peer_export.py). Each engine then runs in a process of its own (its peak RSS
its own), the engines alternating over `--rounds` rounds of `--repeats` timed calls after a warm-up; an
engine's time is the median of all its calls. Every engine's output is checked against upstream's: the
largest |difference| over the largest |upstream value| (generated tokens: equal), a failure over
1e-5 fails the run (exit status 1) after the table.

Columns: time and peak RSS per engine; refimpl over the best peer (the fastest engine other than refimpl);
the GEMM limit (the workload's matmul FLOPs, bench/flops.py, over numpy's float32 GEMM rate measured in the
same run on 2048 x 2048 matrices, best of a measurement before and after) and each engine over it.
The generation workload reports the time per new token (its run divided by 32) and has no GEMM limit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import (CACHE, RESULTS, combine, measure, run_child, side_env, sgemm_gflops,  # noqa: E402
                     torch_sgemm_gflops, vector_flags)
from peer_workloads import ENGINE_TITLES, ENGINES, QUICK, WORKLOADS  # noqa: E402

TOLERANCE = 1e-5  # largest |engine - upstream| / largest |upstream|
RESULT_FILE = RESULTS / "peers.json"
OUTPUTS = CACHE / "outputs"  # each engine's output of its last round, for the check against upstream
# what each engine needs installed (torch and transformers also make the checkpoint, the export, the conversion)
REQUIRES = {"refimpl": (), "upstream": ("torch", "transformers"),
            "onnxruntime": ("onnxruntime", "onnx", "torch", "transformers"),
            "ctranslate2": ("ctranslate2", "torch", "transformers")}


# ---- child processes ------------------------------------------------------------------------------------

def child_run(engine: str, workload_name: str, repeats: int) -> None:
    import peer_engines

    workload = WORKLOADS[workload_name]
    # load() first: refimpl's process settings (refimpl.runtime.configure_process) must come before NumPy loads
    report, output = measure(peer_engines.load(engine, workload), repeats)
    import numpy as np

    OUTPUTS.mkdir(parents=True, exist_ok=True)
    np.save(output_file(workload_name, engine), np.asarray(output))
    print("RESULT " + json.dumps(report))


def child_prepare(workload_name: str, engines: list) -> None:
    import peer_export

    peer_export.prepare(WORKLOADS[workload_name], engines)
    config = json.loads((peer_export.checkpoint_dir(WORKLOADS[workload_name]) / "config.json").read_text())
    print("RESULT " + json.dumps({"config": config}))


def child_sgemm() -> None:
    numpy_rate = sgemm_gflops()  # before torch loads: numpy's OpenBLAS alone, as refimpl runs it
    print("RESULT " + json.dumps({"numpy": numpy_rate, "torch": torch_sgemm_gflops()}))


def output_file(workload_name: str, engine: str) -> Path:
    return OUTPUTS / f"{workload_name}.{engine}.npy"


def spawn(argv: list, engine: str = "refimpl") -> dict:
    return run_child([__file__, *argv], side_env(engine))


def check_installed(engines: list) -> None:
    import importlib.util

    missing = sorted({m for e in ["upstream", *engines] for m in REQUIRES[e] if importlib.util.find_spec(m) is None})
    if missing:
        raise SystemExit(f"bench/peers.py needs {', '.join(missing)}: pip install -e .[bench,upstream] "
                         f"(the `bench` extra: onnxruntime, onnx, onnxscript, ctranslate2; `upstream`: torch, transformers)")


def checked(report: dict, what: str) -> dict:
    if "error" in report:
        raise SystemExit(f"{what} failed: {' '.join(report['error'])}")
    return report


# ---- the parent ---------------------------------------------------------------------------------------

def compare(output, reference) -> dict:
    """An engine's output against upstream's: {"max_rel_diff", "ok"} (token ids: equal or not)."""
    import numpy as np

    output, reference = np.asarray(output), np.asarray(reference)
    if output.shape != reference.shape:
        return {"ok": False, "problem": f"shape {output.shape}, upstream's {reference.shape}"}
    if reference.dtype.kind in "iu":
        differ = int((output != reference).sum())
        return {"ok": differ == 0, "tokens_differing": differ}
    scale = float(np.abs(reference).max()) or 1.0
    rel = float(np.abs(output.astype(np.float64) - reference).max()) / scale
    return {"ok": bool(rel <= TOLERANCE), "max_rel_diff": rel}


def run_workload(workload, engines: list, rounds: int, repeats: int) -> dict:
    engines = [e for e in engines if e in workload.engines]
    config = checked(spawn(["--prepare", workload.name, *sum((["--engine", e] for e in engines), [])]),
                     f"preparing {workload.name}")["config"]
    for stale in OUTPUTS.glob(f"{workload.name}.*.npy"):
        stale.unlink()
    reports = {engine: [] for engine in engines}
    for _ in range(max(1, rounds)):
        for engine in engines:  # alternating: the machine's drift hits every engine alike
            reports[engine].append(spawn(["--child", engine, "--workload", workload.name, "--repeats", str(repeats)], engine))
    if "upstream" not in engines:  # the reference output all the same, untimed
        spawn(["--child", "upstream", "--workload", workload.name, "--repeats", "1"], "upstream")
    row = {"workload": workload.name, "description": workload.description, "engines": {}}
    for engine in engines:
        row["engines"][engine] = report = combine(reports[engine])
        if "error" not in report:
            report["check"] = check_output(workload.name, engine)
    add_ratios(row, workload, config)
    return row


def check_output(workload_name: str, engine: str) -> dict:
    import numpy as np

    reference = output_file(workload_name, "upstream")
    if not reference.exists():
        return {"ok": False, "problem": "upstream gave no output to compare with"}
    return compare(np.load(output_file(workload_name, engine)), np.load(reference))


def add_ratios(row: dict, workload, config: dict) -> None:
    timed = {e: r for e, r in row["engines"].items() if "median_s" in r}
    if workload.kind == "greedy":
        steps = workload.module().NEW_TOKENS
        for report in timed.values():
            report["per_token_s"] = report["median_s"] / steps
    if workload.count_flops:
        row["gflop"] = workload.count_flops(config) / 1e9
    peers = [e for e in timed if e != "refimpl"]
    if peers:
        best = min(peers, key=lambda e: timed[e]["median_s"])
        row["best_peer"] = best
        for report in timed.values():
            report["vs_best_peer"] = report["median_s"] / timed[best]["median_s"]
            report["memory_vs_best_peer"] = report["peak_rss_mb"] / timed[best]["peak_rss_mb"]


def add_gemm_limit(row: dict, gflops: float) -> None:
    if "gflop" not in row:
        return
    row["gemm_limit_s"] = row["gflop"] / gflops
    for report in row["engines"].values():
        if "median_s" in report:
            report["vs_gemm_limit"] = report["median_s"] / row["gemm_limit_s"]


def failures(rows: list) -> list:
    return [f"{row['workload']} {engine}: {report.get('check', report.get('error'))}"
            for row in rows for engine, report in row["engines"].items()
            if "error" in report or not report.get("check", {"ok": True})["ok"]]


def progress(row: dict) -> str:
    return row["workload"] + ": " + "; ".join(f"{e} {cell(r)} {r.get('check', '')}" for e, r in row["engines"].items())


# ---- the table ----------------------------------------------------------------------------------------

def markdown(result: dict) -> str:
    machine = result["machine"]
    engines = [e for e in ENGINES if any(e in row["engines"] for row in result["rows"])]
    head = ["workload", "GEMM limit", *(ENGINE_TITLES[e] for e in engines), "refimpl / best peer (time, memory)",
            "refimpl / GEMM limit", "best peer / GEMM limit", "max rel. diff vs upstream"]
    lines = [f"numpy sgemm {machine['numpy_sgemm_gflops']:.0f} GFLOP/s, torch sgemm {machine['torch_sgemm_gflops']:.0f} "
             f"GFLOP/s; {machine['cpus']} CPUs ({machine['cpu_model']}), flags: {', '.join(machine['cpu_flags']) or 'none'}; "
             f"median of {result['repeats']} calls x {result['rounds']} alternating rounds.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in result["rows"]:
        reports = row["engines"]
        ours, best = reports.get("refimpl", {}), reports.get(row.get("best_peer"), {})
        cells = [row["description"], f"{row['gemm_limit_s']:.2f} s ({row['gflop']:.0f} GFLOP)" if "gflop" in row else "-"]
        cells += [cell(reports.get(e)) for e in engines]
        cells.append(f"{ours['vs_best_peer']:.2f}, {ours['memory_vs_best_peer']:.2f}" if "vs_best_peer" in ours else "-")
        cells += [f"{r['vs_gemm_limit']:.2f}" if "vs_gemm_limit" in r else "-" for r in (ours, best)]
        cells.append(worst_check(reports))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(report) -> str:
    if report is None:
        return "-"
    if "error" in report:
        return "error"
    time = (f"{report['per_token_s'] * 1e3:.1f} ms/token" if "per_token_s" in report else f"{report['median_s']:.2f} s")
    return f"{time}, {report['peak_rss_mb']:.0f} MB"


def worst_check(reports: dict) -> str:
    checks = [r["check"] for e, r in reports.items() if "check" in r and e != "upstream"]
    if not checks:
        return "-"
    if any("tokens_differing" in c for c in checks):
        return "tokens equal" if all(c["ok"] for c in checks) else "tokens DIFFER"
    return f"{max(c.get('max_rel_diff', float('inf')) for c in checks):.1e}"


def machine_info(sgemm: list) -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "cpu_flags": vector_flags(),
            "numpy_sgemm_gflops": max(s["numpy"] for s in sgemm), "torch_sgemm_gflops": max(s["torch"] for s in sgemm),
            "sgemm_measurements": sgemm, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=list(WORKLOADS), action="append", help="repeatable; default: all")
    parser.add_argument("--engine", choices=ENGINES, action="append", help="repeatable; default: all")
    parser.add_argument("--rounds", type=int, default=3, help="alternating processes per engine (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process (default 3)")
    parser.add_argument("--quick", action="store_true", help=f"1 round of 1 call; workloads {', '.join(QUICK)} unless given")
    parser.add_argument("--markdown", action="store_true", help="print the table of bench/results/peers.json and stop")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--sgemm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    engines = args.engine or list(ENGINES)
    if args.child:
        return child_run(args.child, args.workload[0], args.repeats)
    if args.prepare:
        return child_prepare(args.prepare, engines)
    if args.sgemm:
        return child_sgemm()
    if args.markdown:
        return print(markdown(json.loads(RESULT_FILE.read_text())))
    if args.quick:
        args.rounds, args.repeats = 1, 1
    names = args.workload or (QUICK if args.quick else list(WORKLOADS))
    check_installed(engines)
    sgemm = [checked(spawn(["--sgemm"]), "measuring sgemm")]
    rows = []
    for name in names:
        row = run_workload(WORKLOADS[name], engines, args.rounds, args.repeats)
        rows.append(row)
        print(progress(row), flush=True)
    sgemm.append(checked(spawn(["--sgemm"]), "measuring sgemm"))
    for row in rows:  # the GEMM limit from the best of the two sgemm measurements
        add_gemm_limit(row, max(s["numpy"] for s in sgemm))
    result = {"benchmark": "peers", "rounds": args.rounds, "repeats": args.repeats, "machine": machine_info(sgemm),
              "tolerance": TOLERANCE, "rows": rows}
    # a partial run (--quick, --workload, --engine) does not replace the full table
    out = RESULT_FILE if not (args.quick or args.workload or args.engine) else CACHE / "peers-partial.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"written to {out}")
    failed = failures(rows)
    if failed:
        raise SystemExit("OUTPUTS DIFFER FROM UPSTREAM (or an engine failed):\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
