"""The `refimpl` command.

    refimpl score [FILE|-] [--model DIR|org/name] [--format text|ids|jsonl] [-o OUT] [--resume] [--workers N]
    refimpl generate [FILE|-] [--model DIR] [--max-new-tokens N] [--num-beams K] [--do-sample --seed S ...]

Both are streaming batch jobs (refimpl/batch): one JSON record per input line, in input order, written
as soon as known: {"index", "log_likelihood", "num_tokens", "perplexity"} (per head, see the README),
{"index", "new_token_ids", "continuation"} for `generate`, or, for a line that cannot be used,
{"index", "error": "line N: ..."}; the other lines go on. Exit status: EXIT_STATUS below. Every numeric
option is checked when the command line is parsed (the `*_option` types), before any work. With no
--model the commands use the small OPT model shipped in the package (refimpl/data/opt-tiny).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from .batch.jobs import DEFAULT_BATCH_TOKENS

SHIPPED_MODEL = Path(__file__).resolve().parent / "data" / "opt-tiny"


def number_option(kind, accept, expected: str):
    """An argparse type: `kind` (int or float) parsed from the text, finite and accepted by `accept`, else the
    one-line usage error "argument --x: expected <expected>, got '<text>'" (exit status 2)."""
    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


count_option = number_option(int, lambda v: v >= 1, "an integer >= 1")
natural_option = number_option(int, lambda v: v >= 0, "an integer >= 0")
positive_option = number_option(float, lambda v: v > 0, "a number > 0")
probability_option = number_option(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
real_option = number_option(float, lambda v: True, "a finite number")


EXIT_STATUS = """exit status:
  0    every line was {done}
  1    fatal error (missing model, unreadable input, a failure on a worker): a one-line message on stderr
  2    usage error (bad options, {unusable})
  3    some lines got {{"index", "error"}} records (their count is printed on stderr)
  130  interrupted (SIGINT/SIGTERM): the records written are complete; the resume command is printed"""


DIFF_EXIT_STATUS = """exit status:
  0    agree: every compared tensor is within its float32 noise, and the comparison is complete
  1    diverge: some tensor diverges (the first one is named)
  2    usage or input error (bad options, unreadable model, inputs or dump): a one-line message on stderr
  3    incomplete: the model's final output (the root module) was not compared, or fewer than half of the
       traced modules were; never reported as agreement (coverage and missing names are printed)"""


def model_path(model: str) -> str:
    """An existing local path made absolute (worker processes and Dask workers may run elsewhere); a repo id
    of the Hugging Face cache as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def score_job(args):
    from .batch import ScoreJob

    return ScoreJob(model=model_path(args.model), architecture=args.architecture, dtype=args.dtype,
                    format=args.format, batch_tokens=args.batch_tokens, batch_size=args.batch_size,
                    stride=args.stride, cache_dir=args.cache_dir)


GENERATE_OPTIONS = ("max_new_tokens", "min_new_tokens", "num_beams", "do_sample", "temperature", "top_k", "top_p",
                    "repetition_penalty", "no_repeat_ngram_size", "length_penalty")


def generate_job(args):
    from .batch import GenerateJob

    options = tuple((name, getattr(args, name)) for name in GENERATE_OPTIONS if getattr(args, name) is not None)
    return GenerateJob(model=model_path(args.model), architecture=args.architecture, dtype=args.dtype,
                       format=args.format, batch_size=args.batch_size, cache_dir=args.cache_dir, options=options,
                       seed=args.seed)


def resume_command(argv) -> str:
    import shlex

    return shlex.join(["refimpl", *argv] + ([] if "--resume" in argv else ["--resume"]))


def cmd_score(args) -> int:
    return run_job(args, score_job(args))


def cmd_generate(args) -> int:
    return run_job(args, generate_job(args))


def cli_message(err) -> str:  # an error's message with the command line's option names for the API's
    return str(err).replace("pass cache_dir=", "pass --cache-dir DIR")


def run_job(args, job) -> int:
    """`score` and `generate`: the job in this process, in --workers processes or on a Dask cluster.
    Exit status: see EXIT_STATUS. Model, input and worker problems are fatal (1), with a one-line message."""
    from .batch import InputError, run_and_report, run_score, score_on_dask
    from .batch.cluster import WorkerError
    from .formats import CheckpointError

    if args.resume and args.output == "-":
        raise ValueError("--resume needs the output file of the interrupted run: pass -o FILE")
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
        return run_and_report(run, resume, done="scored" if args.command == "score" else "continued")
    except (InputError, FileNotFoundError, CheckpointError, OSError, WorkerError) as err:
        print(f"refimpl: error: {cli_message(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside the run's own handler (while loading the model)
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
    """Run the checkpoint under a trace and compare with another implementation's dump; the exit code
    is the verdict's (DIFF_EXIT_STATUS; refimpl/compare.py). The masks are taken from the inputs."""
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
    report = compare(reference, dump, noise, attention_mask=inputs.get("attention_mask"), padding=args.padding,
                     decoder_attention_mask=inputs.get("decoder_attention_mask"))
    if args.json:
        print(json.dumps(_finite_or_none(report.to_json())))
    else:
        print(report.table())
    if args.plot:
        plot_comparison(report, args.plot)
    return report.exit_code


def cmd_dump_onnx(args) -> int:
    """An ONNX export's module outputs, run in ONNX Runtime, as a dump for `diff --against` (refimpl/dump)."""
    from .dump import dump_onnx

    dump = dump_onnx(args.model, load_arrays(args.inputs, "--inputs"), args.output, args.optimization)
    print(f"{len(dump)} module outputs written to {args.output}")
    return 0


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
    ax.set_title(f"verdict: {report.verdict}, {report.coverage['compared']} of {report.coverage['expected']} "
                 f"modules compared")
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


def add_common_arguments(command, verb: str) -> None:  # score's and generate's: the batch job
    command.add_argument("input", nargs="?", default="-", help="input file, one item per line (- : stdin)")
    command.add_argument("-o", "--output", default="-", help="output JSONL file (- : stdout)")
    command.add_argument("--model", default=str(SHIPPED_MODEL),
                         help="checkpoint directory or a repo id in the Hugging Face cache (default: the shipped opt-tiny)")
    command.add_argument("--cache-dir", default=None, help="Hugging Face cache for repo ids (default: HF_HUB_CACHE etc.)")
    command.add_argument("--architecture", default=None, help="upstream class to load (default: from config.json)")
    command.add_argument("--format", choices=["text", "ids", "jsonl"], default="text",
                         help='text: one text per line; ids: token ids per line; jsonl: {"text": ...} or '
                              '{"input_ids": [...]}' + (' ({"source": ..., "target": ...} for LED)' if verb == "score" else ""))
    command.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="compute dtype")
    command.add_argument("--batch-size", type=count_option, default=8,
                         help="items per forward pass (score: a cap beside --batch-tokens, default none)")
    command.add_argument("--progress", action="store_true", default=None,
                         help="show the progress bar even when stderr is not a terminal (default: on a terminal)")
    command.add_argument("--resume", action="store_true",
                         help=f"keep the complete records already in -o OUT and {verb} only the missing lines")
    command.add_argument("--workers", type=count_option, default=None,
                         help="processes, sharing the memory-mapped weights (default: the usable cores divided by "
                              "--threads; refimpl.runtime.plan_workers)")
    command.add_argument("--threads", type=count_option, default=None,
                         help="BLAS threads per process (default: 1, which does not collapse on a busy machine; "
                              "see README)")
    command.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                         help=f"{verb} on this Dask cluster (pip install 'refimpl[dask]'); a local --model path is "
                              "made absolute and must be readable by every worker")
    command.add_argument("--partition-lines", type=count_option, default=None,
                         help="lines per Dask task, with --scheduler (default: 8 read-ahead windows of 512 lines)")


def add_generation_arguments(command, max_new_tokens) -> None:  # generate()'s options, shared by two commands
    config = "(default: the model's generation config)"
    command.add_argument("--max-new-tokens", type=count_option, default=max_new_tokens,
                         help="tokens to add to each prompt" if max_new_tokens is not None else
                         "generate()'s limit (default: the number of new tokens in --tokens)")
    command.add_argument("--min-new-tokens", type=natural_option, help=f"eos is refused before this many {config}")
    command.add_argument("--num-beams", type=count_option, help=f"beam search with this many beams {config}")
    command.add_argument("--do-sample", action="store_true", default=None,
                         help="multinomial sampling; each line draws from numpy's default_rng([--seed, line index])")
    command.add_argument("--temperature", type=positive_option, help=f"sampling temperature {config}")
    command.add_argument("--top-k", type=natural_option, help=f"sample among the k best tokens, 0: all {config}")
    command.add_argument("--top-p", type=probability_option, help=f"nucleus sampling mass, 1: all {config}")
    command.add_argument("--repetition-penalty", type=positive_option, help=f"1: none {config}")
    command.add_argument("--no-repeat-ngram-size", type=natural_option, help=f"0: no constraint {config}")
    command.add_argument("--length-penalty", type=real_option, help=f"beam search's length exponent {config}")


def generation_options(args) -> dict:  # the options add_generation_arguments defines, as generate() kwargs
    names = ("max_new_tokens", "min_new_tokens", "num_beams", "do_sample", "temperature", "top_k", "top_p",
             "repetition_penalty", "no_repeat_ngram_size", "length_penalty")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


DIFF_GENERATE_STATUS = """exit status:
  0    agree (every token is refimpl's choice), tie (differences within float32 noise only), or possible
       (sampling: every token has non-zero probability; the draws are not judged)
  1    divergence: a token refimpl does not choose, beyond float32 noise
  2    usage error (bad files or options, a strategy that cannot be judged)"""


def cmd_diff_generate(args) -> int:
    import refimpl

    from .diff_generate import diff_generate

    inputs = load_arrays(args.inputs, "--inputs")
    tokens = load_tokens(args.tokens)
    model = refimpl.from_pretrained(args.model, architecture=args.architecture, dtype=args.dtype)
    try:
        report = diff_generate(model, inputs, tokens, **generation_options(args))
    except TypeError as err:  # an array name generate() does not take
        raise ValueError(f"--inputs: {err}") from None
    print(json.dumps(report.to_json()) if args.json else report.text())
    return report.exit_code


DIFF_TOKENIZE_STATUS = """exit status:
  0    every line gives the same ids
  1    some lines differ (their count, and the first --show of them)
  2    usage error (unreadable files, a line count mismatch, a line that is not {"input_ids": [...]})"""


def cmd_diff_tokenize(args) -> int:
    import refimpl

    from .diff_tokenize import diff_tokenize, read_ids, read_lines

    tokenizer = refimpl.load_tokenizer(args.tokenizer, model_type=args.model_type)
    texts, against = read_lines(args.input), read_ids(args.against)
    report = diff_tokenize(tokenizer, texts, against, add_special_tokens=not args.no_special_tokens,
                           shown=args.show)
    print(json.dumps(report.to_json(), ensure_ascii=False) if args.json else report.text())
    return report.exit_code


def load_tokens(path: str) -> np.ndarray:  # TOKENS.npy -> [N, L]; never unpickles
    if not Path(path).is_file():
        raise ValueError(f"--tokens {path} is not a file (expected a .npy file of token ids [rows, length])")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"--tokens {path} is not a readable .npy file: {err}") from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every default (except None and switches) and keeps the epilog's layout."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "(default" in (action.help or ""):
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
                                epilog=EXIT_STATUS.format(done="scored", unusable="a model whose head cannot be scored"),
                                formatter_class=HelpFormatter)
    add_common_arguments(score, "score")
    score.add_argument("--stride", type=count_option, default=None,
                       help="texts longer than the position table are scored with a sliding window advancing by "
                            "this many tokens, at most the table's size - 1 (default: half the table)")
    score.add_argument("--batch-tokens", type=count_option, default=DEFAULT_BATCH_TOKENS,
                       help="positions per forward pass (lines x the longest, padding included): lines are sorted "
                            "by length within a read-ahead window and grouped to this budget; --batch-size, if "
                            "given, also caps the lines per pass")
    score.set_defaults(batch_size=None)
    score.set_defaults(func=cmd_score)
    gen = commands.add_parser("generate", help="continue prompts (greedy, beam search or sampling) as JSONL",
                              description="Continue one prompt per input line; one JSON record per line, in input "
                                          "order: {\"index\", \"new_token_ids\", \"continuation\"} (the new "
                                          "tokens up to the first eos). A decoding option left unset takes the "
                                          "model's generation_config.json value, else upstream's default.",
                              epilog=EXIT_STATUS.format(done="continued", unusable="a model that cannot generate"),
                              formatter_class=HelpFormatter)
    add_common_arguments(gen, "generate")
    add_generation_arguments(gen, max_new_tokens=20)
    gen.add_argument("--seed", type=natural_option, default=0, help="seed of the sampling generators (numpy)")
    gen.set_defaults(func=cmd_generate)

    diff_gen = commands.add_parser(
        "diff-generate", help="the first step where another implementation's generated tokens leave refimpl's "
                              "choice, and whether float32 noise explains it",
        description="Replays the candidate's tokens as a forced prefix (refimpl/diff_generate.py).",
        epilog=DIFF_GENERATE_STATUS, formatter_class=HelpFormatter)
    diff_gen.add_argument("--model", required=True, help="checkpoint directory")
    diff_gen.add_argument("--architecture", default=None, help="upstream class (default: from config.json)")
    diff_gen.add_argument("--inputs", required=True,
                          help="IN.npz: generate()'s arrays by upstream name (input_ids, attention_mask, ...)")
    diff_gen.add_argument("--tokens", required=True,
                          help="TOKENS.npy: the candidate's output as upstream's generate() returns it (prompt "
                               "included for decoder-only models; decoder start token first for LED)")
    add_generation_arguments(diff_gen, max_new_tokens=None)
    diff_gen.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="refimpl's dtype")
    diff_gen.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    diff_gen.set_defaults(func=cmd_diff_generate)

    diff_tok = commands.add_parser(
        "diff-tokenize", help="the lines another tokenizer turns into other ids than refimpl (upstream's slow "
                              "tokenizers)", epilog=DIFF_TOKENIZE_STATUS, formatter_class=HelpFormatter)
    diff_tok.add_argument("--tokenizer", required=True, help="tokenizer (or checkpoint) directory")
    diff_tok.add_argument("--model-type", choices=["opt", "led", "xglm", "nezha"], default=None,
                          help="the family's tokenizer rules, for a directory whose files do not say which")
    diff_tok.add_argument("--input", required=True, help='LINES.txt: UTF-8 texts, one per line (split on "\\n" only)')
    diff_tok.add_argument("--against", required=True, help='IDS.jsonl: {"input_ids": [...]} per input line')
    diff_tok.add_argument("--no-special-tokens", action="store_true",
                          help="encode without the special tokens the tokenizer adds (add_special_tokens=False)")
    diff_tok.add_argument("--show", type=natural_option, default=5, help="differing lines reported in full")
    diff_tok.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the text")
    diff_tok.set_defaults(func=cmd_diff_tokenize)

    diff = commands.add_parser("diff", help="find where another implementation's intermediates part ways with refimpl",
                               formatter_class=HelpFormatter, epilog=DIFF_EXIT_STATUS)
    diff.add_argument("--model", required=True, help="checkpoint directory")
    diff.add_argument("--architecture", default=None, help="upstream class (default: from config.json)")
    diff.add_argument("--inputs", required=True, help="INPUTS.npz: the forward's keyword arrays by upstream name")
    diff.add_argument("--against", required=True,
                      help="DUMP (.safetensors or .npz): {upstream module name: its first output}")
    diff.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="refimpl's dtype")
    diff.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    diff.add_argument("--plot", metavar="OUT.png", help="error and noise floor along the execution order")
    diff.add_argument("--padding", choices=["lenient", "strict"], default="lenient",
                      help="lenient: differences only at padded positions (attention_mask 0) are reported, not "
                           "counted as divergence; strict: they count")
    diff.set_defaults(func=cmd_diff)

    dump_onnx = commands.add_parser("dump-onnx", help="an ONNX export's module outputs in ONNX Runtime, for diff --against",
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    dump_onnx.add_argument("model", metavar="MODEL.onnx", help="exported from upstream with torch.onnx.export(dynamo=False)")
    dump_onnx.add_argument("--inputs", required=True, help="INPUTS.npz: the graph's input arrays by name")
    dump_onnx.add_argument("-o", "--output", required=True, help="DUMP (.safetensors or .npz)")
    dump_onnx.add_argument("--optimization", choices=["none", "all"], default="none",
                           help="ONNX Runtime's graph optimisations (all: ORT_ENABLE_ALL, with fusions)")
    dump_onnx.set_defaults(func=cmd_dump_onnx)

    inspect = commands.add_parser("inspect", help="every traced module with its output shape, parameters and FLOPs",
                                  formatter_class=HelpFormatter)
    inspect.add_argument("--model", default=str(SHIPPED_MODEL), help="checkpoint directory")
    inspect.add_argument("--architecture", default=None, help="upstream class (default: from config.json)")
    inspect.add_argument("--length", type=number_option(int, lambda v: v >= 2, "an integer >= 2"), default=16, help="tokens in the example input")
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
        print(f"refimpl: error: {cli_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
