"""One very long pre-token through byte-level BPE: refimpl vs upstream's slow GPT2Tokenizer (and the fast one).

    python bench/bench_long_pretokens.py [--sizes 100000 1000000] [--json bench/results/long_pretokens.json]

The hostile-input case of issue 14: `tok(" " * n)` puts n characters into one pre-token, and a merge loop
that is quadratic in a pre-token's length hangs. Texts: runs of " ", "=", "a" and "ab", which the real
roberta-base merges (tests/data/vocab/roberta-base) merge over many rounds. Each side
runs in this process; CPU time of one call each (caches cold: a fresh tokenizer per call). Checks that the
ids agree and prints seconds and refimpl / upstream ratios.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VOCAB = ROOT / "tests" / "data" / "vocab" / "roberta-base"


def files():
    return str(VOCAB / "vocab.json"), str(VOCAB / "merges.txt")


def timed(make, text):
    tok = make()
    start = time.process_time()
    ids = tok(text)["input_ids"]
    return time.process_time() - start, list(ids)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--upstream-max", type=int, default=100_000, help="skip upstream slow above this size")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "long_pretokens.json"))
    args = parser.parse_args()
    import transformers

    from refimpl.tokenizers import GPT2Tokenizer

    vocab, merges = files()
    sides = {"refimpl": lambda: GPT2Tokenizer(vocab, merges),
             "upstream_slow": lambda: transformers.GPT2Tokenizer(vocab, merges),
             "upstream_fast": lambda: transformers.GPT2TokenizerFast(vocab, merges)}
    rows = []
    for n in args.sizes:
        for unit in (" ", "=", "a", "ab"):
            text = unit * (n // len(unit))
            row = {"chars": len(text), "unit": unit}
            for side, make in sides.items():
                if side == "upstream_slow" and n > args.upstream_max:
                    continue
                row[side], ids = timed(make, text)
                row.setdefault("ids", ids)
                assert ids == row["ids"], f"{side} ids differ on {unit!r} * {n}"
            del row["ids"]
            for side in ("upstream_slow", "upstream_fast"):
                if side in row:
                    row[f"refimpl/{side}"] = row["refimpl"] / max(row[side], 1e-9)
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    Path(args.json).write_text(json.dumps({"vocab": vocab, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
