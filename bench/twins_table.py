"""What `refimpl diff` says about transformers 4.37.2's own twins of its PyTorch models: the Flax and
TensorFlow ports, and ONNX Runtime running torch.onnx.export's exports with and without its graph
optimisations. Tiny random checkpoints (tests/twins.py: the golden capture's peaked weights), float32,
batch 2 with the second row left-padded (NEZHA right-padded; LED with global attention on each row's first
real token and a decoder prompt), compared with refimpl's float64 trace and its float32 noise floors.

    /path/to/venv-with-the-twins-extra/bin/python bench/twins_table.py    # pip install -e ".[upstream,twins]"

Per twin: modules compared / traced, the verdict (lenient and --padding strict), the first divergence, and the
largest relative error over the compared tensors at attended and at padded positions; for ONNX also the
graph's own output against upstream's PyTorch forward (is a divergence the export's, not refimpl's?). Prints
a markdown table and writes bench/results/twins_table.json.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from twins import export_onnx, export_vs_upstream, padded_inputs, reference, save_upstream  # noqa: E402

import transformers  # noqa: E402

from refimpl.compare import compare  # noqa: E402
from refimpl.dump import dump_flax, dump_onnx, dump_tf  # noqa: E402

# (label, framework, upstream class, config, padding side)
TWINS = [
    ("Flax OPT", "flax", "OPTForCausalLM", "opt-preln", "left"),
    ("Flax XGLM", "flax", "XGLMForCausalLM", "xglm-scaled", "left"),
    ("TF OPT", "tf", "OPTForCausalLM", "opt-preln", "left"),
    ("TF XGLM", "tf", "XGLMForCausalLM", "xglm-scaled", "left"),
    ("TF LED", "tf", "LEDForConditionalGeneration", "led", "left"),
] + [(f"ONNX Runtime {family}{' (all optimisations)' if level == 'all' else ''}", f"onnx-{level}", arch, config, side)
     for family, arch, config, side in [("OPT", "OPTForCausalLM", "opt-preln", "left"),
                                        ("XGLM", "XGLMForCausalLM", "xglm-scaled", "left"),
                                        ("NEZHA", "NezhaForMaskedLM", "nezha", "right"),
                                        ("LED", "LEDForConditionalGeneration", "led", "left")]
     for level in ("none", "all")] + [
    ("ONNX Runtime LED, exported without config.onnx_export", "onnx-none-as_strided", "LEDForConditionalGeneration",
     "led", "left")]


def dump_of(framework, architecture, directory, inputs, work):  # -> (the twin's dump, ONNX: export vs upstream)
    if framework in ("flax", "tf"):
        prefix = "Flax" if framework == "flax" else "TF"
        twin = getattr(transformers, prefix + architecture).from_pretrained(directory, from_pt=True)
        return (dump_flax(twin, inputs) if framework == "flax" else dump_tf(twin, inputs)), None
    onnx_export = not framework.endswith("as_strided")  # LED's exportable chunking, unless told otherwise
    path = work / f"{architecture}-{onnx_export}.onnx"
    if not path.exists():
        export_onnx(directory, architecture, inputs, path, onnx_export=onnx_export)
    return dump_onnx(path, inputs, optimization=framework.split("-")[1]), export_vs_upstream(directory, architecture, inputs, path)


def largest(report, field):
    values = [getattr(t, field) for t in report.tensors if getattr(t, field) is not None]
    return max(values) if values else None


def measure() -> list:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, framework, architecture, config, side in TWINS:
            directory = work / config
            if not directory.exists():
                save_upstream(config, directory)
            inputs = padded_inputs(config, side)
            ref, noise = reference(directory, architecture, inputs)
            dump, export_error = dump_of(framework, architecture, directory, inputs, work)
            report = compare(ref, dump, noise, attention_mask=inputs["attention_mask"])
            strict = compare(ref, dump, noise, attention_mask=inputs["attention_mask"], padding="strict")
            rows.append({"twin": label, "class": architecture, "config": config, "padding": side,
                         "compared": report.coverage["compared"], "expected": report.coverage["expected"],
                         "verdict": report.verdict, "exit_code": report.exit_code, "strict_verdict": strict.verdict,
                         "first_divergence": report.first_divergence and report.first_divergence.name,
                         "padding_only": [t.name for t in report.tensors if t.padding_only],
                         "max_rel_attended": largest(report, "max_rel_attended"),
                         "max_rel_padded": largest(report, "max_rel_padded"),
                         "onnx_output_vs_upstream": export_error})
            print(f"{label}: {report.verdict}", file=sys.stderr)
    return rows


def table(rows) -> str:
    def number(x):
        return "-" if x is None else f"{x:.1e}"

    lines = ["| twin | modules compared / traced | verdict (exit) | --padding strict | largest error, attended | "
             "largest error, padded | ONNX output vs upstream's forward |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"{r['verdict']} ({r['exit_code']})"
        if r["first_divergence"] is not None:
            verdict += f": first {r['first_divergence']}"
        elif r["padding_only"]:
            verdict += f", {len(r['padding_only'])} tensors differ at padded positions only"
        lines.append(f"| {r['twin']} | {r['compared']} / {r['expected']} | {verdict} | {r['strict_verdict']} | "
                     f"{number(r['max_rel_attended'])} | {number(r['max_rel_padded'])} | "
                     f"{number(r['onnx_output_vs_upstream'])} |")
    return "\n".join(lines)


def main() -> None:
    rows = measure()
    versions = {m: __import__(m).__version__ for m in ("transformers", "torch", "jax", "flax", "tensorflow", "onnxruntime")}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "twins_table.json").write_text(json.dumps({"versions": versions, "rows": rows}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
