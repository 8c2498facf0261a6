"""The command line's declared interface, option by option: every option is documented in --help, every
required option is required, every default is the one its help (or the README) states, every numeric
option is parsed to a number with its bound refused and the bound itself accepted, every switch is a
switch, every command reaches its handler. No model is loaded: these run in milliseconds."""
import argparse
import math
import re

import numpy as np
import pytest

from refimpl import cli
from refimpl.cli import SHIPPED_MODEL, build_parser

COMMANDS = ("score", "generate", "diff-generate", "diff-tokenize", "diff", "dump-onnx", "inspect")
REQUIRED = {  # a command's required options with a value each
    "diff-generate": ["--model", "m", "--inputs", "i.npz", "--tokens", "t.npy"],
    "diff-tokenize": ["--tokenizer", "t", "--input", "l.txt", "--against", "a.jsonl"],
    "diff": ["--model", "m", "--inputs", "i.npz", "--against", "d.npz"],
    "dump-onnx": ["m.onnx", "--inputs", "i.npz", "-o", "d.npz"],
}


def subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def parse(*argv):
    command = argv[0]
    return build_parser().parse_args([*map(str, argv), *REQUIRED.get(command, [])])


def refused(capsys, *argv):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([*map(str, argv), *REQUIRED.get(argv[0], [])])
    assert exit.value.code == 2
    return capsys.readouterr().err


def help_text(capsys, *argv):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([*argv, "--help"])
    assert exit.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_command_is_offered():
    _, commands = subparsers()
    assert tuple(commands) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command):
    parser, commands = subparsers()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert next(a for a in sub._choices_actions if a.dest == command).help, f"{command} has no summary in --help"
    for action in [*parser._actions, *commands[command]._actions]:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help text"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_reaches_its_handler(command):
    args = parse(command)
    assert args.command == command
    assert args.func is getattr(cli, "cmd_" + command.replace("-", "_"))


@pytest.mark.parametrize("command, required", [(c, r) for c, r in REQUIRED.items()])
def test_required_options_are_required(capsys, command, required):
    options = [(required[i], required[i + 1]) for i in range(len(required)) if required[i].startswith("-")
               and (i + 1 < len(required))]
    for option, _ in options:
        rest = [a for i, a in enumerate(required) if a != option and (i == 0 or required[i - 1] != option)]
        with pytest.raises(SystemExit) as exit:
            build_parser().parse_args([command, *rest])
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert "the following arguments are required:" in err and option in err, (command, option, err)


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([])
    assert exit.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


def test_version(capsys):
    from refimpl import __version__

    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"refimpl {__version__}"


def test_program_name_in_usage(capsys):
    assert refused(capsys, "score", "--dtype", "x").startswith("usage: refimpl score")


# ------------------------------------------------------------------------------ defaults

def test_defaults_of_score_and_generate():
    for command in ("score", "generate"):
        args = parse(command)
        assert (args.input, args.output, args.model, args.cache_dir, args.architecture, args.format, args.dtype,
                args.progress, args.resume, args.workers, args.threads, args.scheduler, args.partition_lines,
                args.backend) == ("-", "-", str(SHIPPED_MODEL), None, None, "text", "float32", None, False, None,
                                  None, None, None, None), command
    args = parse("score")
    assert (args.batch_size, args.batch_tokens, args.stride) == (None, 2048, None)
    args = parse("generate")
    assert (args.batch_size, args.max_new_tokens, args.seed) == (8, 20, 0)
    assert all(getattr(args, name) is None for name in cli.GENERATE_OPTIONS if name != "max_new_tokens")


def test_defaults_of_the_diff_commands():
    args = parse("diff-generate")
    assert (args.architecture, args.dtype, args.json, args.max_new_tokens) == (None, "float64", False, None)
    assert all(getattr(args, name) is None for name in cli.GENERATE_OPTIONS)
    args = parse("diff-tokenize")
    assert (args.model_type, args.no_special_tokens, args.show, args.json) == (None, False, 5, False)
    args = parse("diff")
    assert (args.architecture, args.dtype, args.json, args.plot, args.padding) == (None, "float64", False, None,
                                                                                   "lenient")
    args = parse("dump-onnx")
    assert (args.model, args.inputs, args.output, args.optimization) == ("m.onnx", "i.npz", "d.npz", "none")
    args = parse("inspect")
    assert (args.model, args.architecture, args.length) == (str(SHIPPED_MODEL), None, 16)


# ------------------------------------------------------------------------------ switches and choices

@pytest.mark.parametrize("command, switch", [
    ("score", "--progress"), ("score", "--resume"), ("generate", "--progress"), ("generate", "--resume"),
    ("generate", "--do-sample"), ("diff-generate", "--do-sample"), ("diff-generate", "--json"),
    ("diff-tokenize", "--no-special-tokens"), ("diff-tokenize", "--json"), ("diff", "--json"),
])
def test_switches_take_no_value(command, switch):
    args = parse(command, switch)
    assert getattr(args, switch.lstrip("-").replace("-", "_")) is True


@pytest.mark.parametrize("command, option, choices", [
    ("diff-tokenize", "--model-type", ["opt", "led", "xglm", "nezha"]),
    ("diff", "--padding", ["lenient", "strict"]),
    ("dump-onnx", "--optimization", ["none", "all"]),
    ("diff-generate", "--dtype", ["float64", "float32"]),
    ("score", "--dtype", ["float32", "float64"]),
    ("generate", "--format", ["text", "ids", "jsonl"]),
])
def test_choices_accepted_and_others_refused(capsys, command, option, choices):
    for choice in choices:
        assert getattr(parse(command, option, choice), option.lstrip("-").replace("-", "_")) == choice
    err = refused(capsys, command, option, "other")
    assert f"argument {option}: invalid choice: 'other'" in err
    for choice in choices:
        assert repr(choice) in err


def test_backend_choices():
    for backend in ("reference", "numpy", "numba"):
        assert build_parser().parse_args(["--backend", backend, "inspect"]).backend == backend


# ------------------------------------------------------------------------------ numeric options

GENERATION_COMMANDS = ("generate", "diff-generate")
COUNTS = [(c, o) for c in ("score", "generate") for o in ("--batch-size", "--workers", "--threads",
                                                           "--partition-lines")] + [
    ("score", "--stride"), ("score", "--batch-tokens"), ("generate", "--max-new-tokens"),
    ("generate", "--num-beams"), ("diff-generate", "--max-new-tokens"), ("diff-generate", "--num-beams")]
NATURALS = [(c, o) for c in GENERATION_COMMANDS for o in ("--min-new-tokens", "--top-k", "--no-repeat-ngram-size")] + [
    ("generate", "--seed"), ("diff-tokenize", "--show")]
POSITIVES = [(c, o) for c in GENERATION_COMMANDS for o in ("--temperature", "--repetition-penalty")]
PROBABILITIES = [(c, "--top-p") for c in GENERATION_COMMANDS]
REALS = [(c, "--length-penalty") for c in GENERATION_COMMANDS]


def value_of(command, option, text):
    return getattr(parse(command, f"{option}={text}"), option.lstrip("-").replace("-", "_"))


@pytest.mark.parametrize("command, option", COUNTS)
def test_count_options(capsys, command, option):
    assert value_of(command, option, "1") == 1 and type(value_of(command, option, "1")) is int
    assert value_of(command, option, "37") == 37
    for bad in ("0", "-1", "2.5", "x", "inf"):
        assert f"argument {option}: expected an integer >= 1, got '{bad}'" in refused(capsys, command, f"{option}={bad}")


@pytest.mark.parametrize("command, option", NATURALS)
def test_natural_options(capsys, command, option):
    assert value_of(command, option, "0") == 0 and type(value_of(command, option, "0")) is int
    assert value_of(command, option, "12") == 12
    for bad in ("-1", "1.5", "one"):
        assert f"argument {option}: expected an integer >= 0, got '{bad}'" in refused(capsys, command, f"{option}={bad}")


@pytest.mark.parametrize("command, option", POSITIVES)
def test_positive_options(capsys, command, option):
    assert value_of(command, option, "0.25") == 0.25 and type(value_of(command, option, "2")) is float
    assert value_of(command, option, "1e-300") == 1e-300
    for bad in ("0", "-0.5", "inf", "nan", "-inf", "x"):
        assert f"argument {option}: expected a number > 0, got '{bad}'" in refused(capsys, command, f"{option}={bad}")


@pytest.mark.parametrize("command, option", PROBABILITIES)
def test_probability_options(capsys, command, option):
    assert value_of(command, option, "1") == 1.0 and value_of(command, option, "0.5") == 0.5
    assert value_of(command, option, "1e-9") == 1e-9
    for bad in ("0", "1.0001", "2", "-0.5", "nan"):
        assert f"argument {option}: expected a number in (0, 1], got '{bad}'" in refused(capsys, command, f"{option}={bad}")


@pytest.mark.parametrize("command, option", REALS)
def test_real_options(capsys, command, option):
    for text in ("-2.5", "0", "3"):
        assert value_of(command, option, text) == float(text) and type(value_of(command, option, text)) is float
    for bad in ("inf", "-inf", "nan", "x"):
        assert f"argument {option}: expected a finite number, got '{bad}'" in refused(capsys, command, f"{option}={bad}")


def test_inspect_length_bound(capsys):
    assert value_of("inspect", "--length", "2") == 2 and value_of("inspect", "--length", "3") == 3
    for bad in ("1", "0", "-3", "2.5"):
        assert f"argument --length: expected an integer >= 2, got '{bad}'" in refused(capsys, "inspect", f"--length={bad}")


def test_number_option_parses_and_checks():
    even = cli.number_option(int, lambda v: v % 2 == 0, "an even integer")
    assert even("4") == 4
    for bad in ("3", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^expected an even integer, got {bad!r}$"):
            even(bad)
    anything = cli.number_option(float, lambda v: True, "a finite number")
    assert anything("-1e300") == -1e300
    for bad in ("inf", "nan", "1e999"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number"):
            anything(bad)


# ------------------------------------------------------------------------------ --help

@pytest.mark.parametrize("command, done, unusable", [
    ("score", "scored", "a model whose head cannot be scored"),
    ("generate", "continued", "a model that cannot generate"),
])
def test_exit_status_in_help(capsys, command, done, unusable):
    text = help_text(capsys, command)
    assert f"0 every line was {done}" in text
    assert f"2 usage error (bad options, {unusable})" in text
    assert '3 some lines got {"index", "error"} records' in text and "130 interrupted" in text


@pytest.mark.parametrize("command, first_line", [
    ("diff", "0 agree: every compared tensor is within its float32 noise"),
    ("diff-generate", "0 agree (every token is refimpl's choice)"),
    ("diff-tokenize", "0 every line gives the same ids"),
])
def test_diff_exit_status_in_help(capsys, command, first_line):
    text = help_text(capsys, command)
    assert "exit status:" in text and first_line in text


def test_epilog_layout_is_kept(capsys):  # RawDescriptionHelpFormatter: one status per line
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert "exit status:" in lines
    assert any(re.fullmatch(r"\s+0\s+every line was scored", line) for line in lines)


@pytest.mark.parametrize("command, phrase", [
    ("score", "Score one item per input line; one JSON record per line"),
    ("generate", "Continue one prompt per input line"),
    ("diff-generate", "Replays the candidate's tokens as a forced prefix"),
])
def test_descriptions_in_help(capsys, command, phrase):
    assert phrase in help_text(capsys, command)


def test_top_level_help(capsys):
    text = help_text(capsys)
    assert "Pure-NumPy reference transformers" in text
    assert "==SUPPRESS==" not in text and "(default: None)" not in text


@pytest.mark.parametrize("command, metavar", [("score", "--scheduler tcp://HOST:PORT"),
                                              ("generate", "--scheduler tcp://HOST:PORT"),
                                              ("diff", "--plot OUT.png"), ("dump-onnx", "MODEL.onnx")])
def test_metavars_in_help(capsys, command, metavar):
    assert metavar in help_text(capsys, command, *REQUIRED.get(command, []))


@pytest.mark.parametrize("command, shown", [
    ("score", ["compute dtype (default: float32)", "(default: 2048)", "(default: text)"]),
    ("generate", ["(default: 8)", "(default: 20)", "(numpy) (default: 0)"]),
    ("diff", ["(default: float64)", "(default: lenient)"]),
    ("diff-generate", ["refimpl's dtype (default: float64)"]),
    ("diff-tokenize", ["reported in full (default: 5)"]),
    ("dump-onnx", ["(default: none)"]),
    ("inspect", ["example input (default: 16)"]),
])
def test_help_shows_the_defaults(capsys, command, shown):
    text = help_text(capsys, command, *REQUIRED.get(command, []))
    for part in shown:
        assert part in text, (command, part)
    if command != "dump-onnx":
        assert "(default: None)" not in text and "(default: False)" not in text
        assert text.count("(default: the shipped opt-tiny)") == (command in ("score", "generate"))
        assert str(SHIPPED_MODEL) not in text or command == "inspect"


def test_help_does_not_repeat_a_default_the_text_states(capsys):
    text = help_text(capsys, "score")
    # --workers' help states its default: argparse's "(default: None)" would follow it otherwise
    assert "(default: the usable cores divided by --threads; refimpl.runtime.plan_workers)" in text
    assert "plan_workers) (default" not in text
    assert "(default: the shipped opt-tiny) (default" not in text


def test_help_formatter_rules():
    formatter = cli.HelpFormatter("prog")
    action = argparse.Action(["--x"], "x", default=3, help="a count")
    assert formatter._get_help_string(action) == "a count (default: %(default)s)"
    for default in (None, False, argparse.SUPPRESS):
        action = argparse.Action(["--x"], "x", default=default, help="a thing")
        assert formatter._get_help_string(action) == "a thing"
    action = argparse.Action(["--x"], "x", default=3, help="a count (default: three)")
    assert formatter._get_help_string(action) == "a count (default: three)"
    action = argparse.Action(["--x"], "x", default=0, help="zero")  # 0 is a default to show, unlike False
    assert formatter._get_help_string(action) == "zero (default: %(default)s)"


# ------------------------------------------------------------------------------ small helpers

def test_finite_or_none():
    value = {"a": [1.0, float("inf"), -float("inf")], "b": float("nan"), "c": 2, "d": {"e": math.nan, "f": "x"},
             "g": 0.5}
    assert cli._finite_or_none(value) == {"a": [1.0, None, None], "b": None, "c": 2, "d": {"e": None, "f": "x"},
                                          "g": 0.5}
    assert cli._finite_or_none([[float("nan")], 3]) == [[None], 3]


def test_resume_command():
    assert cli.resume_command(["score", "in.txt", "-o", "out file.jsonl"]) == \
        "refimpl score in.txt -o 'out file.jsonl' --resume"
    assert cli.resume_command(["score", "--resume", "in.txt", "-o", "o"]) == "refimpl score --resume in.txt -o o"


def test_model_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    assert cli.model_path("ckpt") == str(tmp_path / "ckpt")
    assert cli.model_path("facebook/opt-125m") == "facebook/opt-125m"


def test_cli_message():
    err = ValueError("not in the cache: pass cache_dir=, or download it")
    assert cli.cli_message(err) == "not in the cache: pass --cache-dir DIR, or download it"


def test_load_arrays(tmp_path):
    from safetensors.numpy import save_file

    a, b = np.arange(6, dtype=np.int64).reshape(2, 3), np.linspace(0, 1, 4, dtype=np.float32)
    np.savez(tmp_path / "x.npz", input_ids=a, mask=b)
    got = cli.load_arrays(str(tmp_path / "x.npz"), "--inputs")
    assert sorted(got) == ["input_ids", "mask"]
    np.testing.assert_array_equal(got["input_ids"], a)
    np.testing.assert_array_equal(got["mask"], b)
    save_file({"h": b}, str(tmp_path / "y.safetensors"))
    got = cli.load_arrays(str(tmp_path / "y.safetensors"), "--against")
    assert list(got) == ["h"] and isinstance(got["h"], np.ndarray)
    np.testing.assert_array_equal(got["h"], b)


def test_load_arrays_refusals(tmp_path):
    with pytest.raises(ValueError, match=r"^--inputs .*absent\.npz is not a file \(expected a \.npz or \.safetensors"):
        cli.load_arrays(str(tmp_path / "absent.npz"), "--inputs")
    with pytest.raises(ValueError, match=r"^--against .* is not a file"):
        cli.load_arrays(str(tmp_path), "--against")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"^--inputs .*bad\.npz is not a readable \.npz file"):
        cli.load_arrays(str(tmp_path / "bad.npz"), "--inputs")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))  # would need unpickling
    with pytest.raises(ValueError, match=r"^--inputs .*obj\.npz is not a readable \.npz file"):
        cli.load_arrays(str(tmp_path / "obj.npz"), "--inputs")
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^--inputs .*x\.pt: expected a \.npz or \.safetensors file$"):
        cli.load_arrays(str(tmp_path / "x.pt"), "--inputs")


def test_load_tokens(tmp_path):
    tokens = np.array([[2, 5, 7]], dtype=np.int64)
    np.save(tmp_path / "t.npy", tokens)
    got = cli.load_tokens(str(tmp_path / "t.npy"))
    np.testing.assert_array_equal(got, tokens)
    with pytest.raises(ValueError, match=r"^--tokens .*absent\.npy is not a file \(expected a \.npy file"):
        cli.load_tokens(str(tmp_path / "absent.npy"))
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match=r"^--tokens .*obj\.npy is not a readable \.npy file"):
        cli.load_tokens(str(tmp_path / "obj.npy"))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"^--tokens .*bad\.npy is not a readable \.npy file"):
        cli.load_tokens(str(tmp_path / "bad.npy"))


# ------------------------------------------------------------------------------ diff --plot

def fake_report(first=True):
    from types import SimpleNamespace as NS

    tensors = [NS(name="", max_rel=1e-9, noise=1e-7), NS(name="a.b", max_rel=float("inf"), noise=None),
               NS(name="c", max_rel=0.5, noise=1e-6)]
    return NS(tensors=tensors, first_divergence=tensors[2] if first else None, verdict="diverge" if first else "agree",
              coverage={"compared": 3, "expected": 4})


def test_plot_shows_error_noise_and_the_first_divergence(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    plt.close("all")
    cli.plot_comparison(fake_report(), tmp_path / "d.png")
    png = (tmp_path / "d.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1200, 400)  # 12 x 4 in
    (fig,) = [plt.figure(n) for n in plt.get_fignums()]
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "traced module, in execution order"
    assert ax.get_title() == "verdict: diverge, 3 of 4 modules compared"
    error, noise, divergence = ax.get_lines()
    assert error.get_label() == "relative error (normwise)" and error.get_linestyle() == "-"
    np.testing.assert_array_equal(error.get_ydata(), [1e-9, np.nan, 0.5])
    assert noise.get_label() == "float32 noise floor" and noise.get_linestyle() == "--"
    np.testing.assert_array_equal(noise.get_ydata(), [1e-7, np.nan, 1e-6])
    assert divergence.get_label() == "first divergence: c" and divergence.get_color() == "red"
    assert list(divergence.get_xdata()) == [2, 2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "relative error (normwise)", "float32 noise floor", "first divergence: c"]
    plt.close("all")
    report = fake_report()
    report.first_divergence = report.tensors[0]
    cli.plot_comparison(report, tmp_path / "root.png")
    (fig,) = [plt.figure(n) for n in plt.get_fignums()]
    assert fig.axes[0].get_lines()[2].get_label() == "first divergence: <root>"
    plt.close("all")
    cli.plot_comparison(fake_report(first=False), tmp_path / "agree.png")
    (fig,) = [plt.figure(n) for n in plt.get_fignums()]
    assert len(fig.axes[0].get_lines()) == 2 and fig.axes[0].get_title().startswith("verdict: agree")
    plt.close("all")


def test_plot_without_matplotlib_names_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ValueError, match=r"^--plot needs matplotlib \(pip install matplotlib\)$"):
        cli.plot_comparison(fake_report(), tmp_path / "d.png")
