"""The command line as a whole: every numeric option checked at start-up (one usage line, status 2, before
any work), `generate` given the same per-line treatment and exit status as `score`, its streaming,
--resume and sampling that does not depend on batching, SIGTERM inside a long line's windows, model
paths for workers, and the help texts.

Expected continuations come from model.generate() on each prompt alone (refimpl's generate is checked
against upstream in test_generation*_live.py).
"""
import contextlib
import io
import json
import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl
from golden import GOLDEN
from refimpl.batch.lines import MAX_LINE_BYTES
from refimpl.cli import SHIPPED_MODEL, build_parser, main
from test_batch import TINY, environment, records, write_input

NUMERIC = {  # (command, option) -> which values are valid
    ("score", "--batch-size"): lambda v: v == int(v) and v >= 1,
    ("score", "--workers"): lambda v: v == int(v) and v >= 1,
    ("score", "--threads"): lambda v: v == int(v) and v >= 1,
    ("score", "--partition-lines"): lambda v: v == int(v) and v >= 1,
    ("score", "--stride"): lambda v: v == int(v) and v >= 1,
    ("generate", "--batch-size"): lambda v: v == int(v) and v >= 1,
    ("generate", "--workers"): lambda v: v == int(v) and v >= 1,
    ("generate", "--threads"): lambda v: v == int(v) and v >= 1,
    ("generate", "--partition-lines"): lambda v: v == int(v) and v >= 1,
    ("generate", "--max-new-tokens"): lambda v: v == int(v) and v >= 1,
    ("generate", "--min-new-tokens"): lambda v: v == int(v) and v >= 0,
    ("generate", "--num-beams"): lambda v: v == int(v) and v >= 1,
    ("generate", "--top-k"): lambda v: v == int(v) and v >= 0,
    ("generate", "--no-repeat-ngram-size"): lambda v: v == int(v) and v >= 0,
    ("generate", "--seed"): lambda v: v == int(v) and v >= 0,
    ("generate", "--temperature"): lambda v: v > 0,
    ("generate", "--repetition-penalty"): lambda v: v > 0,
    ("generate", "--top-p"): lambda v: 0 < v <= 1,
    ("generate", "--length-penalty"): lambda v: True,
    ("inspect", "--length"): lambda v: v == int(v) and v >= 2,
}
INTEGER_OPTIONS = {key for key, valid in NUMERIC.items() if not valid(0.5) and not valid(1.5) and not valid(2.5)}


def numeral(value) -> str:  # how a user would type it
    return repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(NUMERIC)), st.one_of(
    st.integers(-10 ** 20, 10 ** 20), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "1e", "0x10", "1,5", "one", "nan", "-inf", "2 3"])))
def test_every_numeric_option_is_checked_when_the_command_line_is_read(option, value):
    """A bad value: status 2 and one line naming the option, what it expects and the value given, before any
    model is loaded (the model path does not even exist). A good value parses to itself."""
    command, name = option
    text = numeral(value) if not isinstance(value, str) else value
    number = None
    try:
        number = float(text) if option not in INTEGER_OPTIONS else int(text)
    except ValueError:
        pass
    valid = number is not None and math.isfinite(number) and NUMERIC[option](number)
    argv = [command, "--model", "/nonexistent/model", f"{name}={text}"]
    if valid:
        args = build_parser().parse_args(argv)
        assert getattr(args, name[2:].replace("-", "_")) == number
        return
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()) as stderr:
        main(argv)
    assert stop.value.code == 2
    err = stderr.getvalue().strip().splitlines()[-1]
    assert err.startswith(f"refimpl {command}: error: argument {name}: expected ") and f"got {text!r}" in err, err


def test_stride_zero_is_refused_not_the_default_and_a_too_large_one_before_any_record(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", ["5 6 7"] * 3)
    with pytest.raises(SystemExit):
        main(["score", str(source), "--stride", "0"])
    assert "argument --stride: expected an integer >= 1, got '0'" in capsys.readouterr().err
    out = tmp_path / "o"  # TINY has 24 positions: a stride of 24 would skip tokens
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "--stride", "24", "-o", str(out)]) == 2
    assert "stride (--stride) must be an integer in 1..23 (the position table of 24 minus one), got 24" \
        in capsys.readouterr().err
    assert not out.exists() or out.read_bytes() == b""
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "--stride", "23", "-o", str(out)]) == 0


def test_stride_is_refused_for_a_model_that_does_not_slide(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", ["5 6 7"])
    assert main(["score", str(source), "--model", str(GOLDEN / "nezha" / "k2-NezhaForMaskedLM"), "--stride", "2"]) == 2
    assert "stride (--stride) applies to causal language models only" in capsys.readouterr().err


# ---------------------------------------------------------------- generate as score

def bad_file(path):  # good, bad UTF-8, empty, over-long (bytes), good, too many tokens for generate
    lines = [b"Hello there", b"ab\xff\xfecd", b"", b"x" * (MAX_LINE_BYTES + 5), b"The cat sat",
             " ".join(["word"] * 300).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_generate_and_score_treat_bad_lines_alike(tmp_path, capsys):
    """The same error records (line numbers, messages) and exit status 3 for bad UTF-8, an empty line and a
    line over the byte limit; the good lines are still processed; stderr counts the failures."""
    source = bad_file(tmp_path / "in.txt")
    assert main(["score", str(source), "-o", str(tmp_path / "s")]) == 3
    assert "3 of 6 lines could not be scored" in capsys.readouterr().err
    assert main(["generate", str(source), "--max-new-tokens", "3", "-o", str(tmp_path / "g")]) == 3
    assert "4 of 6 lines could not be continued" in capsys.readouterr().err
    scored, generated = records(tmp_path / "s"), records(tmp_path / "g")
    assert [r["index"] for r in scored] == [r["index"] for r in generated] == list(range(6))
    for i in (1, 2, 3):
        assert scored[i] == generated[i], i
    assert generated[1]["error"] == "line 2: not valid UTF-8: byte 0xff at byte 3 of the line (invalid start byte)"
    assert generated[2]["error"] == "line 3: empty line"
    assert generated[3]["error"] == f"line 4: line longer than {MAX_LINE_BYTES} bytes"
    limit = refimpl.from_pretrained(SHIPPED_MODEL).config.max_position_embeddings
    assert generated[5]["error"] == f"line 6: prompt: 301 tokens + 3 new tokens exceed the model's limit of {limit} positions"
    assert "log_likelihood" in scored[5]  # scoring slides over a long text
    for i in (0, 4):
        assert len(generated[i]["new_token_ids"]) == 3 and isinstance(generated[i]["continuation"], str)


def test_generate_records_equal_generate_on_each_prompt_alone(tmp_path):
    """Batched (left-padded, sorted by length) continuations equal the model's generate() on each prompt alone,
    new tokens up to the first eos; the continuation is their decoded text."""
    texts = ["Hello there", "The cat sat on the mat and", "A", "Once upon a time in a land far away there"]
    source = write_input(tmp_path / "in.txt", texts)
    assert main(["generate", str(source), "--max-new-tokens", "6", "--batch-size", "3", "--dtype", "float64",
                 "-o", str(tmp_path / "o")]) == 0
    model = refimpl.from_pretrained(SHIPPED_MODEL, dtype="float64")
    tokenizer = refimpl.load_tokenizer(SHIPPED_MODEL)
    eos = model.config.eos_token_id
    for text, record in zip(texts, records(tmp_path / "o")):
        ids = tokenizer(text)["input_ids"]
        new = model.generate(np.array([ids]), max_new_tokens=6)[0, len(ids):].tolist()
        new = new[:new.index(eos) + 1] if eos in new else new
        assert record["new_token_ids"] == new, text
        assert record["continuation"] == tokenizer.decode(new, skip_special_tokens=True)


def test_generate_missing_model_is_fatal_with_status_1_like_score(tmp_path):
    source = write_input(tmp_path / "in.txt", ["a b"])
    for command in ("score", "generate"):
        for model, cache in ((tmp_path / "nowhere", []), ("nobody/nothing", ["--cache-dir", str(tmp_path)])):
            run = subprocess.run([sys.executable, "-m", "refimpl", command, str(source), "--model", str(model), *cache],
                                 env=environment(), capture_output=True, text=True)
            assert run.returncode == 1, (command, run.stderr)
            assert run.stderr.startswith("refimpl: error:") and len(run.stderr.strip().splitlines()) == 1, run.stderr
            if cache:
                assert "pass --cache-dir DIR" in run.stderr and "cache_dir=" not in run.stderr, run.stderr


def test_generate_resumes_after_a_cut_and_sampling_does_not_depend_on_batching(tmp_path):
    texts = [f"Line number {i} says" for i in range(12)]
    source = write_input(tmp_path / "in.txt", texts)
    options = ["--max-new-tokens", "4", "--do-sample", "--seed", "7", "--top-k", "20"]
    full = tmp_path / "full"
    assert main(["generate", str(source), *options, "--batch-size", "4", "-o", str(full)]) == 0
    other = tmp_path / "other"
    assert main(["generate", str(source), *options, "--batch-size", "1", "-o", str(other)]) == 0
    assert records(other) == records(full)
    cut = tmp_path / "cut"
    data = full.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(data[:5]) + data[5][:10])  # five records and a write cut short
    assert main(["generate", str(source), *options, "-o", str(cut), "--resume"]) == 0
    assert records(cut) == records(full)
    reseeded = tmp_path / "reseeded"
    assert main(["generate", str(source), *options[:-4], "--seed", "8", "-o", str(reseeded)]) == 0
    assert records(reseeded) != records(full)


def test_generate_in_worker_processes_equals_one_process(tmp_path):
    source = write_input(tmp_path / "in.txt", [f"Prompt {i} is" for i in range(10)])
    assert main(["generate", str(source), "--max-new-tokens", "3", "-o", str(tmp_path / "one")]) == 0
    assert main(["generate", str(source), "--max-new-tokens", "3", "--workers", "2", "--batch-size", "2",
                 "-o", str(tmp_path / "two")]) == 0
    assert records(tmp_path / "two") == records(tmp_path / "one")


def test_generate_options_upstream_refuses_stop_the_run_before_any_record(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", ["Hello"])
    out = tmp_path / "o"
    assert main(["generate", str(source), "--num-beams", "2", "--do-sample", "--top-p", "0.5", "--max-new-tokens",
                 "100000", "-o", str(out)]) == 2
    assert "max_new_tokens=100000 exceeds this model's position limit" in capsys.readouterr().err
    assert not out.exists()


def test_generate_refuses_an_unusable_model_before_any_record_like_score(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", ["Hello"])
    out = tmp_path / "o"
    no_tokenizer = GOLDEN / "generation" / "opt"
    for command in ("score", "generate"):
        assert main([command, str(source), "--model", str(no_tokenizer), "-o", str(out)]) == 2
        assert f"{no_tokenizer} has no usable tokenizer" in capsys.readouterr().err and not out.exists()
    assert main(["generate", str(source), "--format", "ids", "--model", str(GOLDEN / "nezha" / "k2-NezhaForMaskedLM"),
                 "-o", str(out)]) == 2
    assert "NezhaForMaskedLM cannot generate" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------- signals, workers, help

LONG_TEXT = " ".join(["cat dog bird fish"] * 800)  # ~3,200 tokens: with --stride 1, ~3,000 forwards


def long_line_windows() -> int:
    model, tokenizer = refimpl.from_pretrained(SHIPPED_MODEL), refimpl.load_tokenizer(SHIPPED_MODEL)
    return len(tokenizer(LONG_TEXT)["input_ids"]) - model.config.max_position_embeddings


def stopped_by_sigterm(argv, started, tmp_path):
    """Run `refimpl score IN --stride 1 ...` on a short line and the long one; once `started(out)` says the run
    is inside the long line, SIGTERM it. -> (records written, stderr); asserts status 130 within 10 s."""
    source = tmp_path / "in.txt"
    source.write_text("Hello world\n" + LONG_TEXT + "\n")
    out = tmp_path / "o"
    job = subprocess.Popen([sys.executable, "-m", "refimpl", "score", str(source), "--stride", "1", "-o", str(out),
                            *argv], env=environment(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started(out):
        assert job.poll() is None and time.monotonic() < deadline, "the run never reached the long line"
        time.sleep(0.05)
    time.sleep(1.0)
    job.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = job.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert job.returncode == 130, err
    assert waited < 10, f"SIGTERM took {waited:.1f} s"  # the long line alone takes minutes on a busy machine
    assert err.strip().endswith("--resume"), err
    return (records(out) if out.exists() else []), err


def test_sigterm_inside_a_long_lines_windows_stops_within_seconds(tmp_path):
    """--stride 1 on a long text: one forward per token, thousands of them. SIGTERM stops the run there
    (status 130, the resume command), not after the line."""
    assert long_line_windows() > 2000
    written, _ = stopped_by_sigterm(["--batch-size", "1"], lambda out: out.exists() and out.read_bytes().endswith(b"\n"),
                                    tmp_path)
    assert [r["index"] for r in written] == [0]


def test_sigterm_stops_worker_processes_inside_a_long_line(tmp_path):
    """With --workers the parent waits for a worker busy with the long line: SIGTERM stops the workers too."""
    written, err = stopped_by_sigterm(["--workers", "2", "--batch-size", "1"], lambda out: out.exists(), tmp_path)
    assert written == [] and "Traceback" not in err


def test_sigterm_stops_a_dask_run_while_a_worker_is_inside_a_long_line(dask_scheduler, tmp_path):
    written, err = stopped_by_sigterm(["--scheduler", dask_scheduler, "--partition-lines", "1"],
                                      lambda out: (out.parent / "o.parts" / "00000000.jsonl").exists(), tmp_path)
    assert written == [] and "Traceback" not in err
    assert [json.loads(line)["index"] for line in (tmp_path / "o.parts" / "00000000.jsonl").read_text().splitlines()] \
        == [0]


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    # two threads: one may still be busy with the long line of a run stopped on the client side
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                  host="127.0.0.1", scheduler_port=0) as cluster:
        yield cluster


@pytest.fixture
def dask_scheduler(dask_cluster):
    return dask_cluster.scheduler_address


def test_a_local_model_path_is_made_absolute_for_workers(tmp_path, monkeypatch):
    from refimpl.cli import generate_job, score_job

    monkeypatch.chdir(SHIPPED_MODEL.parent)
    for make, command in ((score_job, "score"), (generate_job, "generate")):
        args = build_parser().parse_args([command, "--model", "opt-tiny"])
        assert make(args).model == str(SHIPPED_MODEL)
        args = build_parser().parse_args([command, "--model", "facebook/opt-125m"])  # a repo id: as given
        assert make(args).model == "facebook/opt-125m"


def test_a_failure_on_a_dask_worker_names_the_worker(dask_cluster):
    import distributed

    from refimpl.batch import ScoreJob, WorkerError
    from refimpl.batch.cluster import score_partition

    with distributed.Client(dask_cluster) as client:
        future = client.submit(score_partition, ScoreJob(model="/nonexistent/model"), 1, [(0, b"a b")], 8)
        address = next(iter(client.scheduler_info()["workers"]))
        with pytest.raises(WorkerError, match=rf"on Dask worker {re.escape(address)}: .*nonexistent/model"):
            future.result()


def test_every_help_shows_its_defaults_and_diff_its_exit_status(capsys):
    def help_of(command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    generate = help_of("generate")
    assert "tokens to add to each prompt (default: 20)" in generate and "(default: 0)" in generate
    assert "(default: the model's generation config)" in generate and "exit status" in generate
    assert "(default: 16)" in help_of("inspect")
    diff = help_of("diff")
    assert "(default: None)" not in diff and "(default: from config.json)" in diff
    for status in ("0 agree", "1 diverge", "2 usage or input error", "3 incomplete"):
        assert status in diff, status
