"""`refimpl score` as a batch job (refimpl/batch): bad bytes, exit status, order, crash consistency, resume,
SIGINT, --workers, bounded memory, progress and the clear fatal errors.

Expected numbers come from refimpl.scoring.token_logprobs on each text alone (no batching, no padding:
an independent path through the model), checked against upstream in test_scoring.py and
test_scoring_live.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl
from golden import GOLDEN
from refimpl.batch.lines import decode_line, read_lines
from refimpl.batch.output import OrderedWriter, resume_file
from refimpl.cli import SHIPPED_MODEL, main
from refimpl.scoring import token_logprobs

ROOT = Path(__file__).resolve().parent.parent
TINY = GOLDEN / "opt" / "preln-OPTForCausalLM"  # vocabulary of 37, 24 positions: fast
BAD_LINE, EMPTY_LINE = 1234, 2000
FLOAT32_ROUNDING = 2e-5  # relative: the same text in a differently composed batch


def prose_lines(n, seed=0):  # -> list of str: runs of words from the README (real prose)
    words = (ROOT / "README.md").read_text().split()
    rng = np.random.default_rng(seed)
    starts, lengths = rng.integers(0, len(words) - 40, n), rng.integers(3, 30, n)
    return [" ".join(words[s:s + k]) for s, k in zip(starts, lengths)]


def id_lines(n, seed=0):  # -> list of str: token ids of the tiny model, 2..20 per line
    rng = np.random.default_rng(seed)
    return [" ".join(map(str, rng.integers(3, 37, rng.integers(2, 21)))) for _ in range(n)]


def write_input(path, texts, bad=None):  # texts (+ {index: raw bytes}) -> a file of bytes lines
    bad = bad or {}
    path.write_bytes(b"".join(bad.get(i, t.encode()) + b"\n" for i, t in enumerate(texts)))
    return path


def records(path):
    return [json.loads(line) for line in Path(path).read_bytes().splitlines()]


def command(*args):
    return [sys.executable, "-m", "refimpl", "score", *map(str, args)]


def environment():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def same_records(got, expected, what):
    """Field by field; floats within float32 rounding (batches may be composed differently)."""
    assert [r["index"] for r in got] == [r["index"] for r in expected], f"{what}: indices differ"
    for g, e in zip(got, expected):
        assert g.keys() == e.keys(), f"{what}: index {e['index']}: fields {sorted(g)} vs {sorted(e)}"
        for key, value in e.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=FLOAT32_ROUNDING), f"{what}: index {e['index']} {key}"
            else:
                assert g[key] == value, f"{what}: index {e['index']} {key}: {g[key]!r} vs {value!r}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3,000 lines of prose with a bad-UTF-8 line and an empty line, and its uninterrupted scoring."""
    directory = tmp_path_factory.mktemp("corpus")
    texts = prose_lines(3000)
    source = write_input(directory / "in.txt", texts, {BAD_LINE: b"caf\xe9 \xff\xfe binary", EMPTY_LINE: b""})
    out = directory / "out.jsonl"
    status = main(["score", str(source), "-o", str(out)])
    return source, out, texts, status


@pytest.fixture(scope="module")
def short_corpus(corpus, tmp_path_factory):
    """The corpus's first 1,300 lines (the bad line included) and their records from the full run: the same
    windows up to line 1,024, so equal within float32 rounding."""
    source, out, _, _ = corpus
    short = tmp_path_factory.mktemp("short") / "in.txt"
    short.write_bytes(b"".join(source.read_bytes().splitlines(keepends=True)[:1300]))
    return short, records(out)[:1300]


def test_bad_bytes_and_empty_line_among_3000(corpus, capsys):
    source, out, texts, status = corpus
    rows = records(out)
    assert status == 3
    assert [r["index"] for r in rows] == list(range(3000))
    errors = {r["index"]: r["error"] for r in rows if "error" in r}
    assert sorted(errors) == [BAD_LINE, EMPTY_LINE]
    assert "not valid UTF-8" in errors[BAD_LINE] and f"line {BAD_LINE + 1}" in errors[BAD_LINE]
    assert "empty line" in errors[EMPTY_LINE]
    assert sum("log_likelihood" in r for r in rows) == 2998
    model, tok = refimpl.from_pretrained(SHIPPED_MODEL), refimpl.load_tokenizer(SHIPPED_MODEL)
    for index in np.random.default_rng(1).choice(3000, 25, replace=False):
        if index in errors:
            continue
        ids = tok(texts[index])["input_ids"]
        expected = float(np.sum(token_logprobs(model, np.array([ids]))[0], dtype=np.float64))
        assert rows[index]["num_tokens"] == len(ids) - 1
        assert rows[index]["log_likelihood"] == pytest.approx(expected, rel=FLOAT32_ROUNDING), index
        assert rows[index]["perplexity"] == pytest.approx(np.exp(-expected / (len(ids) - 1)), rel=1e-4)


def test_error_count_on_stderr_and_records_hold_no_timings(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", id_lines(40), {3: b"", 7: b"\xc3\x28"})
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert "2 of 40 lines could not be scored" in err and "lines/s" in err and "tokens/s" in err
    assert {key for r in records(tmp_path / "o") for key in r} == {"index", "error", "log_likelihood", "num_tokens",
                                                                  "perplexity"}


def wait_for_records(path, process, at_least):
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the job wrote fewer than {at_least} records (exit {process.poll()})")


def test_sigkill_then_resume(short_corpus, tmp_path):
    """Kill -9 mid-run: only complete lines; --resume completes it with each index once."""
    source, reference = short_corpus
    out = tmp_path / "out.jsonl"
    job = subprocess.Popen(command(source, "-o", out), env=environment(), stderr=subprocess.DEVNULL)
    wait_for_records(out, job, 300)
    job.kill()
    job.wait()
    data = out.read_bytes()
    assert 0 < data.count(b"\n") < 1300, "the run should have been cut mid-way"
    complete = data[:data.rfind(b"\n") + 1]
    assert all(json.loads(line)["index"] == i for i, line in enumerate(complete.splitlines()))
    out.write_bytes(complete + b'{"index": 99999, "log_lik')  # a write cut short by the kill
    finished = subprocess.run(command(source, "-o", out, "--resume"), env=environment(), capture_output=True, text=True)
    assert finished.returncode == 3, finished.stderr
    assert "Traceback" not in finished.stderr
    same_records(records(out), reference, "resumed")


def test_sigint_stops_cleanly_and_prints_the_resume_command(short_corpus, tmp_path):
    source, reference = short_corpus
    out = tmp_path / "out.jsonl"
    job = subprocess.Popen(command(source, "-o", out), env=environment(), stderr=subprocess.PIPE, text=True)
    wait_for_records(out, job, 1)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert out.read_bytes().endswith(b"\n")
    resume = err.splitlines()[-1].strip()
    assert resume.startswith("refimpl score") and resume.endswith("--resume"), err
    args = resume.split()[2:]
    assert main(["score", *args]) == 3
    same_records(records(out), reference, "after SIGINT and resume")


def test_resume_of_a_complete_file_rescores_nothing(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", id_lines(30))
    out = tmp_path / "o"
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(out), "--resume"]) == 0
    assert out.read_bytes() == before and "refimpl: 0 lines" in capsys.readouterr().err


def test_resume_refuses_a_file_that_is_not_its_output(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", id_lines(3))
    out = tmp_path / "o"
    out.write_text("some notes\n")
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(out), "--resume"]) == 2
    assert "not a record of refimpl score" in capsys.readouterr().err and out.read_text() == "some notes\n"


def test_resume_warns_when_the_input_shrank(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", id_lines(10))
    out = tmp_path / "o"
    base = ["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(out)]
    assert main(base) == 0
    write_input(source, id_lines(6))
    capsys.readouterr()
    assert main(base + ["--resume"]) == 0
    assert "4 records past the input's last line" in capsys.readouterr().err


def test_without_resume_an_old_output_is_replaced(tmp_path):
    source = write_input(tmp_path / "in.txt", id_lines(3))
    out = tmp_path / "o"
    out.write_text('{"index": 0, "stale": true}\n' * 10)
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(out)]) == 0
    assert [r["index"] for r in records(out)] == [0, 1, 2] and all("stale" not in r for r in records(out))


def test_workers_give_the_same_records(tmp_path):
    source = write_input(tmp_path / "in.txt", prose_lines(300, seed=2), {5: b"\xff"})
    assert main(["score", str(source), "-o", str(tmp_path / "one")]) == 3
    assert main(["score", str(source), "-o", str(tmp_path / "two"), "--workers", "2", "--batch-size", "4"]) == 3
    same_records(records(tmp_path / "two"), records(tmp_path / "one"), "--workers 2")


def test_bucketing_keeps_input_order_and_numbers(tmp_path):
    """Window and batch size change only batch composition: the records agree within float32 rounding."""
    source = write_input(tmp_path / "in.txt", id_lines(200, seed=3))
    base = ["score", str(source), "--format", "ids", "--model", str(TINY)]
    assert main(base + ["-o", str(tmp_path / "a"), "--batch-size", "1"]) == 0
    assert main(base + ["-o", str(tmp_path / "b"), "--batch-size", "16"]) == 0
    same_records(records(tmp_path / "b"), records(tmp_path / "a"), "batch 16 vs 1")


PEAK_RSS = """
import resource, sys
from refimpl.batch import ScoreJob, run_score
run_score(ScoreJob(model=sys.argv[1], format="ids"), sys.argv[2], sys.argv[3], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    peaks = {}
    for n in (2000, 20000):
        source = write_input(tmp_path / f"in{n}.txt", id_lines(n, seed=n))
        run = subprocess.run([sys.executable, "-c", PEAK_RSS, str(TINY), str(source), str(tmp_path / f"o{n}")],
                             env=environment(), capture_output=True, text=True, check=True)
        peaks[n] = int(run.stdout.split()[-1])
        assert (tmp_path / f"o{n}").read_bytes().count(b"\n") == n
    assert peaks[20000] <= 1.10 * peaks[2000], f"peak RSS {peaks} (KiB): grows with the input"


def test_fatal_errors_are_one_line_with_status_1(tmp_path):
    source = write_input(tmp_path / "in.txt", ["a b"])
    cases = {"missing model": command(source, "--model", tmp_path / "nowhere"),
             "directory input": command(tmp_path),
             "missing input": command(tmp_path / "absent.txt"),
             "uncached repo id": command(source, "--model", "nobody/nothing", "--cache-dir", tmp_path)}
    for what, argv in cases.items():
        run = subprocess.run(argv, env=environment(), capture_output=True, text=True)
        assert run.returncode == 1, (what, run.stderr)
        assert "Traceback" not in run.stderr and run.stderr.startswith("refimpl: error:"), (what, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (what, run.stderr)


@pytest.mark.parametrize("argv, message", [  # (numeric options: tests/test_cli.py)
    (["--resume"], "--resume needs the output file"),
])
def test_usage_errors_have_status_2(tmp_path, capsys, argv, message):
    source = write_input(tmp_path / "in.txt", ["5 6"])
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), *argv]) == 2
    assert message in capsys.readouterr().err


def test_help_shows_defaults_exit_status_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "(default: 2048)" in out and "(default: float32)" in out and "exit status" in out and "130" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"refimpl {refimpl.__version__}"


def test_progress_without_tqdm_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    source = write_input(tmp_path / "in.txt", ["5 6"])
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "--progress", "-o",
                 str(tmp_path / "o")]) == 2
    assert "pip install tqdm" in capsys.readouterr().err


def test_progress_bar_is_tqdm(tmp_path, capsys):
    pytest.importorskip("tqdm")
    source = write_input(tmp_path / "in.txt", id_lines(20))
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "--progress", "-o",
                 str(tmp_path / "o")]) == 0
    assert "20/20" in capsys.readouterr().err


def stderr_on_a_terminal(args):  # -> (exit status, what `refimpl score ARGS` wrote to a pseudo-terminal stderr)
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100, as a terminal has
    proc = subprocess.Popen(command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            env=environment())
    os.close(slave)
    seen = b""
    while True:  # drain the terminal while the command runs (its buffer is small)
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command closed the terminal's last writer
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), seen.decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_terminal_shows_the_bar_by_default_on_long_inputs(tmp_path):
    """No --progress: a bar on a terminal when the input is longer than one batch, none on a short input."""
    long_input = write_input(tmp_path / "long.txt", id_lines(20))
    status, err = stderr_on_a_terminal([long_input, "--format", "ids", "--model", TINY, "-o", tmp_path / "a"])
    assert status == 0 and "20/20" in err and "line/s" in err, err
    short_input = write_input(tmp_path / "short.txt", id_lines(8))
    status, err = stderr_on_a_terminal([short_input, "--format", "ids", "--model", TINY, "-o", tmp_path / "b"])
    assert status == 0 and "8/8" not in err and "line/s" not in err, err


def test_a_repo_id_in_the_cache_loads_model_and_tokenizer(tmp_path, capsys):
    """`--model org/name --cache-dir C` finds the huggingface_hub layout, tokenizer included."""
    snapshot = tmp_path / "cache" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in SHIPPED_MODEL.iterdir():
        (snapshot / f.name).symlink_to(f)
    (tmp_path / "cache" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "cache" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    tok = refimpl.load_tokenizer("org/tiny", cache_dir=tmp_path / "cache")
    text = "Scoring a corpus of lines."
    assert tok(text)["input_ids"] == refimpl.load_tokenizer(SHIPPED_MODEL)(text)["input_ids"]
    source = write_input(tmp_path / "in.txt", [text])
    assert main(["score", str(source), "--model", "org/tiny", "--cache-dir", str(tmp_path / "cache"),
                 "-o", str(tmp_path / "a")]) == 0
    assert main(["score", str(source), "-o", str(tmp_path / "b")]) == 0
    assert records(tmp_path / "a") == records(tmp_path / "b")


def test_text_format_without_a_tokenizer_is_refused_up_front(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", ["hello"])
    assert main(["score", str(source), "--model", str(TINY)]) == 2
    assert "no usable tokenizer" in capsys.readouterr().err


def test_over_long_line_is_an_error_record(tmp_path, monkeypatch):
    import refimpl.batch.lines as lines

    monkeypatch.setattr(lines, "MAX_LINE_BYTES", 64)
    source = write_input(tmp_path / "in.txt", ["5 6", " ".join(["7"] * 100), "8 9"])
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(tmp_path / "o")]) == 3
    rows = records(tmp_path / "o")
    assert [r["index"] for r in rows] == [0, 1, 2] and "longer than 64 bytes" in rows[1]["error"]
    assert "log_likelihood" in rows[2]


# ---------------------------------------------------------------- properties of the pieces

@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=12).filter(lambda b: b"\n" not in b), max_size=20), st.booleans())
def test_reader_gives_each_line_once_decoded_alone(raw_lines, final_newline):
    import io

    data = b"\n".join(raw_lines) + (b"\n" if final_newline and raw_lines else b"")
    got = list(read_lines(io.BytesIO(data)))
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert [i for i, _ in got] == list(range(len(expected)))
    assert [raw for _, raw in got] == [e.removesuffix(b"\r") for e in expected]
    for _, raw in got:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            with pytest.raises(ValueError, match="not valid UTF-8"):
                decode_line(raw)
            continue
        if text.strip():
            assert decode_line(raw) == text
        else:
            with pytest.raises(ValueError, match="empty line"):
                decode_line(raw)


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(12))), st.sets(st.integers(0, 11)), st.integers(1, 5))
def test_writer_emits_input_order_whatever_the_completion_order(tmp_path_factory, order, skip, group):
    out = tmp_path_factory.mktemp("w") / "o"
    writer = OrderedWriter(str(out), append=False, skip=skip)
    todo = [i for i in order if i not in skip]
    for start in range(0, len(todo), group):
        writer.put([{"index": i} for i in todo[start:start + group]])
    writer.close()
    assert [r["index"] for r in records(out)] == sorted(set(range(12)) - skip)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5), st.integers(0, 60))
def test_resume_keeps_exactly_the_complete_lines(tmp_path_factory, n, cut):
    out = tmp_path_factory.mktemp("r") / "o"
    data = b"".join(json.dumps({"index": i, "log_likelihood": -1.5 * i}).encode() + b"\n" for i in range(n))
    last = b'{"index": 77, "error": "line 78: empty line"}\n'
    data += last[:cut]
    out.write_bytes(data)
    done, errors = resume_file(str(out))
    whole = cut >= len(last)
    assert done == set(range(n)) | ({77} if whole else set()) and errors == int(whole)
    assert out.read_bytes() == data[:data.rfind(b"\n") + 1]


JSONISH = st.one_of(
    st.binary(max_size=30),
    st.text(max_size=30).map(str.encode),
    st.lists(st.integers(-3, 60), max_size=30).map(lambda ids: " ".join(map(str, ids)).encode()),
    st.recursive(st.none() | st.booleans() | st.integers(-3, 60) | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                     st.sampled_from(["input_ids", "text", "source_ids", "target_ids"]), inner, max_size=3),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
)


@pytest.mark.parametrize("fmt", ["ids", "jsonl"])
@settings(max_examples=40, deadline=None)
@given(lines=st.lists(JSONISH.filter(lambda b: b"\n" not in b), min_size=1, max_size=12))
def test_any_line_gives_one_record_never_an_exception(fmt, lines):
    """Whatever the bytes, every line gets exactly one record: scored (valid ids of the tiny model, 2 to 24
    of them) or an error naming the line."""
    from refimpl.batch import ScoreJob
    from refimpl.batch.worker import scorer

    job = ScoreJob(model=str(TINY), format=fmt, batch_size=3)
    got = [r for batch in scorer(job).score_window(list(enumerate(lines))) for r in batch.records]
    assert sorted(r["index"] for r in got) == list(range(len(lines)))
    for r in got:
        if "error" in r:
            assert r["error"].startswith(f"line {r['index'] + 1}: "), r
        else:
            assert 1 <= r["num_tokens"] and np.isfinite(r["log_likelihood"]) and r["log_likelihood"] <= 0, r
