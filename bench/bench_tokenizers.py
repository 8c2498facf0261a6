"""Tokenizer throughput: refimpl vs upstream slow (Python) and fast (Rust) tokenizers, side by side.

    python bench/bench_tokenizers.py [--mb 2] [--repeat 1] [--text FILE] [--json bench/results/tokenizers.json]

Text: a few MB of generated multilingual lines (golden/capture_tokenizers.py make_corpus, a different
seed from the golden capture). Each tokenizer is built fresh and encodes the whole list with
`tok(lines)` (special tokens added, no padding), so caches start cold on every side; CPU time, best
of --repeat interleaved rounds, on the real vocabularies in tests/data/vocab/. Prints chars per CPU
second and ratios; also checks that refimpl's ids equal upstream slow's on the benchmark text.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VOCAB = ROOT / "tests" / "data" / "vocab"


def _corpus(mb: float):
    spec = importlib.util.spec_from_file_location("capture_tokenizers", ROOT / "golden" / "capture_tokenizers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines, size, n = [], 0, 0
    while size < mb * 1e6:
        batch = mod.make_corpus(n_lines=20000, seed=999 + n)
        n += 1
        for line in batch:
            lines.append(line)
            size += len(line.encode("utf-8"))
            if size >= mb * 1e6:
                break
    return lines


def _setups():
    """name -> (make_refimpl, make_slow, make_fast, source)."""
    import transformers as tf

    import refimpl.tokenizers as rt

    out = {}
    v, m = str(VOCAB / "roberta-base" / "vocab.json"), str(VOCAB / "roberta-base" / "merges.txt")
    kw = dict(bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>", add_bos_token=True)
    out["byte-level BPE (OPT, roberta-base 50k)"] = (
        partial(rt.GPT2Tokenizer, v, m, **kw), partial(tf.GPT2Tokenizer, v, m, **kw),
        partial(tf.GPT2TokenizerFast, v, m, **kw))
    out["byte-level BPE (LED, roberta-base 50k)"] = (
        partial(rt.LEDTokenizer, v, m), partial(tf.LEDTokenizer, v, m), partial(tf.LEDTokenizerFast, v, m))
    v = str(VOCAB / "bert-base-chinese" / "vocab.txt")
    out["WordPiece (BERT, bert-base-chinese 21k)"] = (
        partial(rt.BertTokenizer, v), partial(tf.BertTokenizer, v), partial(tf.BertTokenizerFast, v))
    sp = str(VOCAB / "barthez-spm" / "sentencepiece.bpe.model")
    out["sentencepiece (XGLM)"] = (
        partial(rt.XGLMTokenizer, sp), partial(tf.XGLMTokenizer, sp), partial(tf.XGLMTokenizerFast, sp))
    return out


def _run(make, lines):
    """CPU seconds of tok(lines) on a fresh tokenizer (cold caches); construction is not timed.

    process_time, not wall time: the machine is shared, and CPU time of this process is what other
    processes disturb least.
    """
    tok = make()
    tok(["warm-up: lazy tables, not the corpus"])
    t0 = time.process_time()
    enc = tok(lines)
    return time.process_time() - t0, enc["input_ids"]


def _time_side_by_side(makers, lines, repeat):
    """Best of `repeat` rounds, the three tokenizers interleaved within each round."""
    for make in makers:  # untimed warm-up (first-use costs of the interpreter's memory, imports)
        make()(lines[:2000])
    best, ids = [float("inf")] * len(makers), [None] * len(makers)
    for _ in range(repeat):
        for k, make in enumerate(makers):
            t, ids[k] = _run(make, lines)
            best[k] = min(best[k], t)
    return best, ids


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=2.0, help="megabytes of text (utf-8)")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs per tokenizer")
    ap.add_argument("--text", help="use the non-empty lines of this UTF-8 file instead of generated text")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    if args.text:
        lines = [ln for ln in Path(args.text).read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        lines = _corpus(args.mb)
    chars = sum(len(s) for s in lines)
    print(f"{len(lines)} lines, {chars:,} chars, {sum(len(s.encode()) for s in lines) / 1e6:.2f} MB utf-8")
    header = f"{'tokenizer':42s} {'refimpl':>12s} {'slow':>12s} {'fast':>12s} {'ref/slow':>9s} {'ref/fast':>9s}  ids"
    print(header)
    print("-" * len(header))
    results = {}
    for name, (mk_ref, mk_slow, mk_fast) in _setups().items():
        (t_ref, t_slow, t_fast), (ids_ref, ids_slow, _) = _time_side_by_side((mk_ref, mk_slow, mk_fast), lines,
                                                                             args.repeat)
        same = "equal" if ids_ref == ids_slow else "DIFFER"
        r = {"refimpl_chars_per_s": chars / t_ref, "slow_chars_per_s": chars / t_slow,
             "fast_chars_per_s": chars / t_fast, "ratio_vs_slow": t_slow / t_ref, "ratio_vs_fast": t_fast / t_ref,
             "ids_equal_slow": ids_ref == ids_slow}
        results[name] = r
        print(f"{name:42s} {r['refimpl_chars_per_s']:12,.0f} {r['slow_chars_per_s']:12,.0f} "
              f"{r['fast_chars_per_s']:12,.0f} {r['ratio_vs_slow']:8.2f}x {r['ratio_vs_fast']:8.2f}x  {same}",
              flush=True)
    print("(chars per CPU second; ratio = upstream time / refimpl time, >1 means refimpl is faster)")
    if args.json:
        import os
        import platform

        meta = {"chars": chars, "lines": len(lines), "mb": args.mb, "text": args.text or "generated",
                "repeat": args.repeat, "clock": "process_time",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "transformers": transformers.__version__},
                "load_average_at_end": list(os.getloadavg())}
        Path(args.json).write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
