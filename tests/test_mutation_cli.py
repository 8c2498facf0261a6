"""Every option of the command line at and past its bounds, and every `choices=` list: a value out of range
is refused with exit status 2 and a message naming the option and the value; the bound itself is accepted."""
import pytest

from refimpl.cli import build_parser, example_inputs, main


@pytest.fixture
def prompt(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("hello world\n", encoding="utf-8")
    return path


def run(capfd, argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's own refusals
        status = exit.code
    out, err = capfd.readouterr()
    return status, out, err


@pytest.mark.parametrize("option", ["--batch-size", "--batch-tokens", "--workers", "--threads"])
@pytest.mark.parametrize("value", [0, -2])
def test_score_counts_below_one_are_refused(capfd, prompt, tmp_path, option, value):
    status, _, err = run(capfd, ["score", prompt, "-o", tmp_path / "out.jsonl", option, value])
    assert status == 2, err
    assert f"{option}: expected an integer >= 1, got '{value}'" in err


@pytest.mark.parametrize("option", ["--batch-size", "--workers", "--threads"])
def test_score_counts_of_one_are_accepted(capfd, prompt, tmp_path, option):
    out = tmp_path / "out.jsonl"
    status, _, err = run(capfd, ["score", prompt, "-o", out, option, 1])
    assert status == 0, err
    assert out.read_text().count("\n") == 1


@pytest.mark.parametrize("value", [-1, -7])
def test_partition_lines_below_one_is_refused(tmp_path, value):
    pytest.importorskip("distributed")
    from refimpl.batch import ScoreJob
    from refimpl.batch.cluster import score_on_dask
    from refimpl.cli import SHIPPED_MODEL

    job = ScoreJob(model=str(SHIPPED_MODEL), architecture=None, dtype="float32", format="text", batch_size=8,
                   stride=None, cache_dir=None)
    with pytest.raises(ValueError, match=f"--partition-lines must be at least 1, got {value}$"):
        score_on_dask(job, "-", str(tmp_path / "out.jsonl"), None, partition_lines=value)
    with pytest.raises(ValueError, match="--scheduler writes partition files next to the output: pass -o FILE"):
        score_on_dask(job, "-", "-", None, partition_lines=1)


def test_resume_needs_an_output_file(capfd, prompt):
    status, _, err = run(capfd, ["score", prompt, "--resume"])
    assert status == 2
    assert "--resume needs the output file" in err and "-o FILE" in err


@pytest.mark.parametrize("argv, option, choices", [
    (["score", "--dtype", "float16"], "--dtype", ["float32", "float64"]),
    (["generate", "--dtype", "float16"], "--dtype", ["float32", "float64"]),
    (["diff", "--model", "m", "--inputs", "i", "--against", "a", "--dtype", "float16"], "--dtype",
     ["float64", "float32"]),
    (["score", "--format", "csv"], "--format", ["text", "ids", "jsonl"]),
    (["generate", "--format", "csv"], "--format", ["text", "ids", "jsonl"]),
    (["--backend", "cuda", "score"], "--backend", ["reference", "numpy", "numba"]),
])
def test_choices_are_enforced(capfd, argv, option, choices):
    status, _, err = run(capfd, argv)
    assert status == 2
    bad = argv[argv.index(option) + 1]
    assert f"argument {option}: invalid choice: '{bad}'" in err
    for choice in choices:
        assert repr(choice) in err


@pytest.mark.parametrize("command, option, values", [
    ("score", "--dtype", ["float32", "float64"]), ("score", "--format", ["text", "ids", "jsonl"]),
    ("generate", "--dtype", ["float32", "float64"]), ("generate", "--format", ["text", "ids", "jsonl"]),
    ("diff", "--dtype", ["float64", "float32"]),
])
def test_every_choice_is_accepted(command, option, values):
    required = ["--model", "m", "--inputs", "i", "--against", "a"] if command == "diff" else []
    for value in values:
        args = build_parser().parse_args([command, *required, option, value])
        assert getattr(args, option.lstrip("-")) == value


def test_defaults_of_the_options():
    args = build_parser().parse_args(["score"])
    assert (args.dtype, args.format, args.batch_size, args.batch_tokens, args.workers, args.threads, args.stride,
            args.backend, args.input, args.output, args.resume) == ("float32", "text", None, 2048, None, None, None,
                                                                    None, "-", "-", False)
    args = build_parser().parse_args(["generate"])
    assert (args.max_new_tokens, args.seed, args.num_beams, args.do_sample, args.batch_size, args.workers) == (
        20, 0, None, None, 8, None)
    args = build_parser().parse_args(["diff", "--model", "m", "--inputs", "i", "--against", "a"])
    assert (args.dtype, args.json, args.plot) == ("float64", False, None)
    assert build_parser().parse_args(["inspect"]).length == 16


@pytest.mark.parametrize("option, value, expected", [
    ("--min-new-tokens", -1, "an integer >= 0"), ("--num-beams", 0, "an integer >= 1"),
    ("--top-k", -1, "an integer >= 0"), ("--no-repeat-ngram-size", -1, "an integer >= 0"),
])
def test_generate_integer_options_out_of_range(capfd, prompt, tmp_path, option, value, expected):
    status, _, err = run(capfd, ["generate", prompt, "-o", tmp_path / "o.jsonl", option, value])
    assert status == 2, err
    assert f"argument {option}: expected {expected}, got '{value}'" in err


def test_generate_batch_size_bound(capfd, prompt, tmp_path):
    out = tmp_path / "o.jsonl"
    status, _, err = run(capfd, ["generate", prompt, "-o", out, "--batch-size", 1, "--max-new-tokens", 2])
    assert status == 0, err
    assert len(out.read_text().splitlines()) == 1


def test_inspect_length_bound(capfd):
    status, _, err = run(capfd, ["inspect", "--length", 1])
    assert status == 2
    assert "argument --length: expected an integer >= 2, got '1'" in err
    status, out, err = run(capfd, ["inspect", "--length", 2])
    assert status == 0, err
    assert ", 2 tokens" in out


def test_example_inputs_length_two_keeps_bos_and_eos(load_model):
    from refimpl.cli import SHIPPED_MODEL

    model = load_model(str(SHIPPED_MODEL), None, "float32")
    ids = example_inputs(model, 2)["input_ids"]
    assert ids.tolist() == [[model.config.bos_token_id, model.config.eos_token_id]]


def test_inspect_counts_attention_products(load_model):
    """module_flops of a dense attention block: QK^T and PV, each 2 x B x T x S x E FLOPs."""
    from refimpl.cli import SHIPPED_MODEL, module_flops
    from refimpl.trace import tracing

    model = load_model(str(SHIPPED_MODEL), None, "float32")
    L, E = 12, model.config.hidden_size
    with tracing() as trace:
        model(**example_inputs(model, L))
    names = [n for n in trace if n.endswith(".self_attn")]
    assert len(names) == model.config.num_hidden_layers
    for name in names:
        assert module_flops(model.params, trace, name, trace[name]) == 2 * 2 * 1 * L * L * E


def test_score_exit_status_for_a_missing_model_is_one(capfd, prompt, tmp_path):
    status, _, err = run(capfd, ["score", prompt, "-o", tmp_path / "o.jsonl", "--model", tmp_path / "absent"])
    assert status == 1
    assert err.startswith("refimpl: error: ") and "absent" in err


def test_unreachable_scheduler_is_named(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from refimpl.cli import connect

    def refuse(address, timeout):
        raise OSError(f"Timed out trying to connect to {address} after {timeout}")

    monkeypatch.setattr(distributed, "Client", refuse)
    with pytest.raises(ConnectionError, match=r"^cannot reach the Dask scheduler at tcp://10\.0\.0\.9:8786: Timed out "
                                              r"trying to connect to tcp://10\.0\.0\.9:8786 after 10s$"):
        connect("tcp://10.0.0.9:8786")


def test_set_threads_reaches_numpys_openblas():
    from pathlib import Path

    import numpy as np

    from refimpl import accel, runtime

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    if not any("openblas" in p.name for p in libs.glob("*")):
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    assert accel.blas_thread_setter("numpy") is not None
    assert runtime.set_threads(1) is True


def test_help_shows_defaults_but_not_none_or_switches(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "positions per forward pass" in text and "(default: 2048)" in text
    assert "compute dtype (default: float32)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
