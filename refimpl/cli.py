"""The `refimpl` command.

    refimpl score [FILE|-] [--model DIR|org/name] [--format text|ids|jsonl] [-o OUT] [--resume] [--workers N]
    refimpl generate [FILE|-] [--model DIR] [--max-new-tokens N] [--num-beams K] [--do-sample --seed S ...]

`score` is a streaming batch job (refimpl/batch): one JSON record per input line, in input order,
written as soon as known: {"index", "log_likelihood", "num_tokens", "perplexity"} (per head, see the
README) or, for a line that cannot be scored, {"index", "error"}; the other lines are still scored.
Exit status: EXIT_STATUS below. With no --model both commands use the small OPT model shipped in the
package (refimpl/data/opt-tiny).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

SHIPPED_MODEL = Path(__file__).resolve().parent / "data" / "opt-tiny"


from .batch.jobs import DEFAULT_BATCH_TOKENS, LineError, check_ids, parse_line  # noqa: E402  (shared with `generate`)


class Progress:
    """A one-line progress bar on stderr, shown only for long runs on a terminal (or when forced)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\rscoring [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


EXIT_STATUS = """exit status:
  0    every line was scored
  1    fatal error (missing model, unreadable input): a one-line message on stderr
  2    usage error (bad options, a model whose head cannot be scored)
  3    some lines got {"index", "error"} records (their count is printed on stderr)
  130  interrupted (SIGINT/SIGTERM): the records written are complete; the resume command is printed"""


def score_job(args):
    from .batch import ScoreJob

    for name in ("batch_size", "batch_tokens", "workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.resume and args.output == "-":
        raise ValueError("--resume needs the output file of the interrupted run: pass -o FILE")
    return ScoreJob(model=args.model, architecture=args.architecture, dtype=args.dtype, format=args.format,
                    batch_tokens=args.batch_tokens, batch_size=args.batch_size, stride=args.stride,
                    cache_dir=args.cache_dir)


def resume_command(argv) -> str:
    import shlex

    return shlex.join(["refimpl", *argv] + ([] if "--resume" in argv else ["--resume"]))


def cmd_score(args) -> int:
    """Exit status: see EXIT_STATUS. Model and input problems are fatal (1), with a one-line message."""
    from .batch import InputError, run_and_report, run_score, score_on_dask
    from .formats import CheckpointError

    job = score_job(args)
    resume = None if args.output == "-" else resume_command(args.argv)
    client = None

    def run():
        nonlocal client
        if not args.scheduler:
            return run_score(job, args.input, args.output, resume=args.resume, workers=args.workers,
                             threads=args.threads, progress=args.progress)
        client = connect(args.scheduler)
        return score_on_dask(job, args.input, args.output, client, resume=args.resume,
                             partition_lines=args.partition_lines, threads=args.threads or 1,
                             progress=args.progress)

    try:
        return run_and_report(run, resume)
    except (InputError, FileNotFoundError, CheckpointError, OSError) as err:
        print(f"refimpl: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside the scoring loop's own handler (while loading the model)
        print("refimpl: interrupted" + (f"; resume with:\n  {resume}" if resume else ""), file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()


def connect(address: str):
    from .batch.cluster import need_distributed

    distributed = need_distributed()
    try:
        return distributed.Client(address, timeout="10s")
    except OSError as err:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {err}") from None


def global_first(mask):  # [B, T] -> [B, T]: LED's usual global attention on the first token (<s>)
    flags = np.zeros_like(mask)
    flags[:, 0] = 1
    return flags


def cmd_generate(args) -> int:
    import refimpl

    model = refimpl.from_pretrained(args.model, architecture=args.architecture, dtype=args.dtype)
    tokenizer = None
    if args.format != "ids":
        tokenizer = refimpl.load_tokenizer(args.model)
    source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    with source:
        lines = [line.rstrip("\n") for line in source]
    options = {k: v for k, v in dict(
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, num_beams=args.num_beams,
        do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        length_penalty=args.length_penalty).items() if v is not None}
    rng = np.random.default_rng(args.seed)
    encoder_decoder = bool(model.config.is_encoder_decoder)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    rows, items = {}, []
    for index, line in enumerate(lines):
        try:
            ids = parse_line(line, args.format, tokenizer)
            if not ids:
                raise LineError("empty prompt")
            check_ids(ids + [0], model.config, min_tokens=1)  # room for at least one new token
            items.append((index, ids))
        except LineError as err:
            rows[index] = {"index": index, "error": str(err)}
    progress = Progress(len(items), args.progress or (sys.stderr.isatty() and len(items) > args.batch_size))
    for start in range(0, len(items), args.batch_size):
        chunk = items[start:start + args.batch_size]
        width = max(len(ids) for _, ids in chunk)
        batch = np.full((len(chunk), width), pad, dtype=np.int64)
        mask = np.zeros_like(batch)
        for r, (_, ids) in enumerate(chunk):
            # decoder-only models continue from the right: pad on the left; an encoder reads padding on the right
            cols = slice(0, len(ids)) if encoder_decoder else slice(width - len(ids), width)
            batch[r, cols] = ids
            mask[r, cols] = 1
        extra = {"global_attention_mask": global_first(mask)} if model.config.model_type == "led" else {}
        out = model.generate(batch, attention_mask=mask, generator=rng, **extra, **options)
        for r, (index, ids) in enumerate(chunk):
            new = [int(t) for t in out[r, 1 if encoder_decoder else width:]]  # after the decoder start token
            row = {"index": index, "new_token_ids": new}
            if tokenizer is not None:
                row["continuation"] = tokenizer.decode(new, skip_special_tokens=True)
            rows[index] = row
        progress.update(len(chunk))
    progress.close()
    out_file = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    with out_file:
        for index in range(len(lines)):
            out_file.write(json.dumps(rows[index], ensure_ascii=False) + "\n")
    return 0


def load_arrays(path: str, what: str) -> dict:  # .npz or .safetensors -> {name: ndarray}; never unpickles
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} {path} is not a file (expected a .npz or .safetensors file)")
    if file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{what} {path} is not a readable .npz file: {err}") from None
    if file.suffix == ".safetensors":
        from .formats.safetensors_file import read_safetensors

        return {name: np.array(value) for name, value in read_safetensors(file).items()}
    raise ValueError(f"{what} {path}: expected a .npz or .safetensors file")


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def cmd_diff(args) -> int:
    """Run the checkpoint under a trace and compare with another implementation's dump: 0 when nothing
    diverges beyond noise, 1 when something does (refimpl/compare.py)."""
    import refimpl

    from .compare import compare, trace_model

    inputs = load_arrays(args.inputs, "--inputs")
    dump = load_arrays(args.against, "--against")
    other = "float32" if args.dtype == "float64" else "float64"
    model = refimpl.from_pretrained(args.model, architecture=args.architecture, dtype=args.dtype)
    noise_model = refimpl.from_pretrained(args.model, architecture=args.architecture, dtype=other)
    try:
        reference, noise = trace_model(model, inputs, noise_model)
    except TypeError as err:  # an array name the forward does not take
        raise ValueError(f"--inputs: {err}") from None
    report = compare(reference, dump, noise)
    if args.json:
        print(json.dumps(_finite_or_none(report.to_json())))
    else:
        print(report.table())
    if args.plot:
        plot_comparison(report, args.plot)
    return 1 if report.first_divergence is not None else 0


def plot_comparison(report, path) -> None:  # error and noise floor along the execution order
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from None
    rel = [t.max_rel if math.isfinite(t.max_rel) else np.nan for t in report.tensors]
    noise = [np.nan if t.noise is None else t.noise for t in report.tensors]
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.semilogy(rel, label="relative error (normwise)")
    ax.semilogy(noise, label="float32 noise floor", linestyle="--")
    if report.first_divergence is not None:
        ax.axvline(report.tensors.index(report.first_divergence), color="red",
                   label=f"first divergence: {report.first_divergence.name or '<root>'}")
    ax.set_xlabel("traced module, in execution order")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def example_inputs(model, length: int) -> dict:  # token ids [1, T] (NEZHA multiple choice: [1, 2, T])
    """Ordinary tokens between the config's bos and eos (an LED classifier pools at the last eos)."""
    if length < 2:
        raise ValueError(f"--length must be at least 2, got {length}")
    cfg = model.config
    ids = (np.arange(length) % max(1, cfg.vocab_size - 3) + 3)[None].astype(np.int64)
    specials = {t for t in (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) if t is not None}
    ids[np.isin(ids, list(specials))] = min(set(range(cfg.vocab_size)) - specials)  # no stray special token
    if cfg.bos_token_id is not None:
        ids[:, 0] = cfg.bos_token_id
    if cfg.eos_token_id is not None:
        ids[:, -1] = cfg.eos_token_id
    if model.architecture == "NezhaForMultipleChoice":
        ids = np.stack([ids, ids], axis=1)
    return {"input_ids": ids}


def cmd_inspect(args) -> int:
    """Every traced module of the class, in execution order, with its output shape, parameter count and
    matrix-product FLOPs for a `--length`-token input."""
    import refimpl

    from .trace import tracing

    model = refimpl.from_pretrained(args.model, architecture=args.architecture)
    with tracing() as trace:
        model(**example_inputs(model, args.length))
    print(f"{model.architecture}, {args.length} tokens")
    print(f"{'module':<62} {'output shape':<20} {'parameters':>12} {'FLOPs':>14}")
    total_flops = 0
    for name, value in trace.items():
        params = count_parameters(model, name)
        flops = module_flops(model.params, trace, name, value)
        total_flops += flops
        print(f"{name or '<root>':<62} {str(value.shape):<20} {params:>12,} {flops:>14,}")
    total = count_parameters(model, "")
    print(f"{'total':<62} {'':<20} {total:>12,} {total_flops:>14,}")
    return 0


def count_parameters(model, name) -> int:  # under module `name` ("" = all); a tied weight counts once
    # in a total, a weight tied to another that is also loaded (lm_head to the embeddings) is no extra
    tied = {k for k, source in model.spec.tied.items() if source in model.params} if not name else set()
    return sum(v.size for k, v in model.params.items() if (not name or k.startswith(name + ".")) and k not in tied)


def module_flops(params, trace, name, value) -> int:
    """2 x multiply-adds of a Linear module (weight [out, in]); for a dense attention block whose q and k
    projections are traced, its two score and value products. Elementwise work is not counted."""
    weight = params.get(f"{name}.weight")
    if weight is not None and weight.ndim == 2 and value.shape and value.shape[-1] == weight.shape[0]:
        return 2 * (value.size // weight.shape[0]) * weight.shape[1] * weight.shape[0]
    for q_name, k_name in (("q_proj", "k_proj"), ("query", "key")):
        q, k = trace.get(f"{name}.{q_name}"), trace.get(f"{name}.{k_name}")
        if q is not None and k is not None and q.ndim == 3 and not name.endswith("longformer_self_attn"):
            return 2 * 2 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2]  # QK^T and PV
    return 0


def add_common_arguments(command) -> None:
    command.add_argument("input", nargs="?", default="-", help="input file, one item per line (- : stdin)")
    command.add_argument("-o", "--output", default="-", help="output JSONL file (- : stdout)")
    command.add_argument("--model", default=str(SHIPPED_MODEL),
                         help="checkpoint directory or a repo id in the Hugging Face cache (default: the shipped opt-tiny)")
    command.add_argument("--cache-dir", default=None, help="Hugging Face cache for repo ids (default: HF_HUB_CACHE etc.)")
    command.add_argument("--architecture", default=None, help="upstream class to load (default: from config.json)")
    command.add_argument("--format", choices=["text", "ids", "jsonl"], default="text",
                         help='text: one text per line; ids: token ids per line; jsonl: {"text": ...} or '
                              '{"input_ids": [...]} ({"source": ..., "target": ...} for LED)')
    command.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="compute dtype")
    command.add_argument("--batch-size", type=int, default=8, help="items per forward pass")
    command.add_argument("--progress", action="store_true", default=None,
                         help="show the progress bar even when stderr is not a terminal")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default (except None and switches) and keeps the epilog's layout."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="refimpl", description="Pure-NumPy reference transformers (LED, NEZHA, XGLM, OPT).",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"refimpl {__version__}")
    parser.add_argument("--backend", choices=["reference", "numpy", "numba"], default=None,
                        help="force the hot loops' implementation (default: REFIMPL_BACKEND, else Numba for float32 "
                             "when installed, else NumPy; float64 always runs NumPy code)")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="per-text log-likelihood, token count and perplexity as JSONL",
                                description="Score one item per input line; one JSON record per line, in input "
                                            "order, each written whole as soon as it is known.",
                                epilog=EXIT_STATUS, formatter_class=HelpFormatter)
    add_common_arguments(score)
    score.add_argument("--stride", type=int, default=None,
                       help="texts longer than the position table are scored with a sliding window advancing by "
                            "this many tokens (default: half the table)")
    score.add_argument("--resume", action="store_true",
                       help="keep the complete records already in -o OUT and score only the missing lines")
    score.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                       help="positions per forward pass (lines x the longest, padding included): lines are sorted "
                            "by length within a read-ahead window and grouped to this budget; --batch-size, if "
                            "given, also caps the lines per pass")
    score.set_defaults(batch_size=None)
    score.add_argument("--workers", type=int, default=None,
                       help="scoring processes, sharing the memory-mapped weights (default: the usable cores "
                            "divided by --threads)")
    score.add_argument("--threads", type=int, default=None,
                       help="BLAS threads per process (default: refimpl.runtime.DEFAULT_BLAS_THREADS = 1, which "
                            "does not collapse on a busy machine; see README)")
    score.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="score on this Dask cluster (pip install 'refimpl[dask]'); the model path must be "
                            "readable by every worker")
    score.add_argument("--partition-lines", type=int, default=None,
                       help="lines per Dask task, with --scheduler (default: 8 read-ahead windows of 512 lines)")
    score.set_defaults(func=cmd_score)
    gen = commands.add_parser("generate", help="continue prompts (greedy, beam search or sampling) as JSONL",
                              formatter_class=HelpFormatter)
    add_common_arguments(gen)
    gen.add_argument("--max-new-tokens", type=int, default=20)
    gen.add_argument("--min-new-tokens", type=int)
    gen.add_argument("--num-beams", type=int)
    gen.add_argument("--do-sample", action="store_true", default=None, help="multinomial sampling (see --seed)")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--no-repeat-ngram-size", type=int)
    gen.add_argument("--length-penalty", type=float)
    gen.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (numpy)")
    gen.set_defaults(func=cmd_generate)

    diff = commands.add_parser("diff", help="find where another implementation's intermediates part ways with refimpl",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    diff.add_argument("--model", required=True, help="checkpoint directory")
    diff.add_argument("--architecture", default=None, help="upstream class (default: from config.json)")
    diff.add_argument("--inputs", required=True, help="INPUTS.npz: the forward's keyword arrays by upstream name")
    diff.add_argument("--against", required=True,
                      help="DUMP (.safetensors or .npz): {upstream module name: its first output}")
    diff.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="refimpl's dtype")
    diff.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    diff.add_argument("--plot", metavar="OUT.png", help="error and noise floor along the execution order")
    diff.set_defaults(func=cmd_diff)

    inspect = commands.add_parser("inspect", help="every traced module with its output shape, parameters and FLOPs",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    inspect.add_argument("--model", default=str(SHIPPED_MODEL), help="checkpoint directory")
    inspect.add_argument("--architecture", default=None, help="upstream class (default: from config.json)")
    inspect.add_argument("--length", type=int, default=16, help="tokens in the example input")
    inspect.set_defaults(func=cmd_inspect)
    return parser


def main(argv=None) -> int:
    """The commands. The installed `refimpl` script enters through refimpl/__main__.py, which applies
    refimpl.runtime's process settings first."""
    from .accel import set_backend

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        set_backend(args.backend)
        return args.func(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f"refimpl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
