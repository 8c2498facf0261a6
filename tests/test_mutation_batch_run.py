"""The batch job's pieces one by one, with expected values worked out by hand from the input: how `score`
and `generate` pass their options on, the summary line's figures, the exit statuses and their messages,
the reading of lines at the length limit, token-budget batches at their bounds, the records' fields,
--resume's reading of an old output, the progress bar's rules, splitting a short input among workers."""
import argparse
import json
import math
import re

import numpy as np
import pytest

from golden import GOLDEN
from refimpl import cli
from refimpl.batch import jobs, lines as lines_module, output, run as run_module
from refimpl.batch.jobs import Batch, ScoreJob, budget_batches, check_ids, padding, parse_line, parse_pair
from refimpl.batch.lines import InputError, LineError, count_lines, decode_line, open_input, read_lines
from refimpl.batch.run import Summary, equal_parts, run_and_report, run_score, share_out, windows

TINY = GOLDEN / "opt" / "preln-OPTForCausalLM"  # vocabulary of 37, 24 positions


def run(capfd, argv):
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exit:
        status = exit.code
    out, err = capfd.readouterr()
    return status, out, err


# ------------------------------------------------------------------------------ what the command passes on

@pytest.fixture
def fake_runs(monkeypatch):
    """run_score and score_on_dask replaced by recorders returning a chosen Summary."""
    import refimpl.batch

    calls = []
    result = {"summary": Summary()}

    def fake(kind):
        def runner(job, input_path, output_path, *rest, **kwargs):
            calls.append((kind, job, input_path, output_path, rest, kwargs))
            if isinstance(result["summary"], BaseException):
                raise result["summary"]
            return result["summary"]
        return runner

    class Client:
        closed = False

        def close(self):
            Client.closed = True

    monkeypatch.setattr(refimpl.batch, "run_score", fake("local"))
    monkeypatch.setattr(refimpl.batch, "score_on_dask", fake("dask"))
    monkeypatch.setattr(cli, "connect", lambda address: (calls.append(("connect", address)), Client())[1])
    return calls, result, Client


def test_score_passes_every_option_to_its_job(capfd, fake_runs, tmp_path):
    calls, _, _ = fake_runs
    status, _, err = run(capfd, ["score", tmp_path / "in.txt", "-o", tmp_path / "out.jsonl", "--model", "org/name",
                                 "--architecture", "OPTForCausalLM", "--dtype", "float64", "--format", "ids",
                                 "--batch-tokens", 96, "--batch-size", 3, "--stride", 5, "--cache-dir", "/c",
                                 "--workers", 2, "--threads", 3, "--progress", "--resume"])
    assert status == 0, err
    (kind, job, input_path, output_path, rest, kwargs), = calls
    assert kind == "local" and not rest
    assert job == ScoreJob(model="org/name", architecture="OPTForCausalLM", dtype="float64", format="ids",
                           batch_tokens=96, batch_size=3, stride=5, cache_dir="/c")
    assert (input_path, output_path) == (str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"))
    assert kwargs == {"resume": True, "workers": 2, "threads": 3, "progress": True}


def test_score_defaults_reach_the_runner(capfd, fake_runs, tmp_path):
    calls, _, _ = fake_runs
    assert run(capfd, ["score", tmp_path / "in.txt"])[0] == 0
    (_, job, _, output_path, _, kwargs), = calls
    assert job == ScoreJob(model=str(cli.SHIPPED_MODEL))
    assert output_path == "-"
    assert kwargs == {"resume": False, "workers": None, "threads": None, "progress": None}


def test_generate_passes_only_the_options_given(capfd, fake_runs, tmp_path):
    calls, _, _ = fake_runs
    status, _, err = run(capfd, ["generate", tmp_path / "in.txt", "--top-k", 0, "--num-beams", 2, "--seed", 7,
                                 "--temperature", 0.5, "--batch-size", 4, "--format", "jsonl", "--dtype", "float64",
                                 "--architecture", "OPTForCausalLM", "--cache-dir", "/c", "--model", "org/name"])
    assert status == 0, err
    (_, job, _, _, _, _), = calls
    assert job.options == (("max_new_tokens", 20), ("num_beams", 2), ("temperature", 0.5), ("top_k", 0))
    assert (job.model, job.architecture, job.dtype, job.format, job.batch_size, job.cache_dir, job.seed) == (
        "org/name", "OPTForCausalLM", "float64", "jsonl", 4, "/c", 7)


def test_every_generation_option_reaches_generate(capfd, fake_runs, tmp_path):
    calls, _, _ = fake_runs
    given = {"max_new_tokens": 3, "min_new_tokens": 1, "num_beams": 2, "do_sample": True, "temperature": 0.7,
             "top_k": 5, "top_p": 0.9, "repetition_penalty": 1.2, "no_repeat_ngram_size": 2, "length_penalty": -1.0}
    argv = []
    for name, value in given.items():
        argv += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    status, _, err = run(capfd, ["generate", tmp_path / "in.txt", *argv])
    assert status == 0, err
    assert dict(calls[0][1].options) == given
    args = build_args(["diff-generate", "--model", "m", "--inputs", "i", "--tokens", "t", *argv])
    assert cli.generation_options(args) == given
    assert cli.generation_options(build_args(["diff-generate", "--model", "m", "--inputs", "i", "--tokens", "t"])) == {}


def build_args(argv):
    return cli.build_parser().parse_args(argv)


def test_dask_run_gets_its_options_and_the_client_is_closed(capfd, fake_runs, tmp_path):
    calls, _, client = fake_runs
    status, _, err = run(capfd, ["score", tmp_path / "in.txt", "-o", tmp_path / "o", "--scheduler", "tcp://h:1",
                                 "--partition-lines", 64, "--progress"])
    assert status == 0, err
    assert calls[0] == ("connect", "tcp://h:1")
    kind, _, _, _, rest, kwargs = calls[1]
    assert kind == "dask" and rest[0].__class__.__name__ == "Client"
    assert kwargs == {"resume": False, "partition_lines": 64, "threads": 1, "progress": True}
    assert client.closed
    calls.clear()
    run(capfd, ["score", tmp_path / "in.txt", "-o", tmp_path / "o", "--scheduler", "tcp://h:1", "--threads", 3])
    assert calls[1][5]["threads"] == 3 and calls[1][5]["partition_lines"] is None


def test_no_client_without_a_scheduler(capfd, fake_runs, tmp_path):
    calls, _, client = fake_runs
    assert run(capfd, ["score", tmp_path / "in.txt"])[0] == 0
    assert [c[0] for c in calls] == ["local"] and not client.closed


@pytest.mark.parametrize("error", [InputError("cannot read input x: gone"), FileNotFoundError("no such model m"),
                                   OSError("disk full"), ValueError("the model m cannot be scored"),
                                   NotImplementedError("not implemented: x")])
def test_fatal_and_usage_errors(capfd, fake_runs, tmp_path, error):
    _, result, _ = fake_runs
    result["summary"] = error
    status, out, err = run(capfd, ["score", tmp_path / "in.txt"])
    fatal = isinstance(error, (InputError, OSError))
    assert status == (1 if fatal else 2)
    assert err == f"refimpl: error: {error}\n" and out == ""


def test_worker_and_checkpoint_errors_are_fatal(capfd, fake_runs, tmp_path):
    from refimpl.batch.cluster import WorkerError
    from refimpl.formats import CheckpointError

    _, result, _ = fake_runs
    for error in (WorkerError("worker tcp://w:1 failed: boom"), CheckpointError("model.safetensors: truncated")):
        result["summary"] = error
        status, _, err = run(capfd, ["generate", tmp_path / "in.txt"])
        assert status == 1 and err == f"refimpl: error: {error}\n"


def test_cache_dir_advice_uses_the_option_name(capfd, fake_runs, tmp_path):
    _, result, _ = fake_runs
    result["summary"] = FileNotFoundError("org/name is not in the cache; pass cache_dir= to look elsewhere")
    status, _, err = run(capfd, ["score", tmp_path / "in.txt"])
    assert status == 1 and "pass --cache-dir DIR to look elsewhere" in err and "cache_dir=" not in err


def test_interrupt_while_loading(capfd, fake_runs, tmp_path):
    _, result, _ = fake_runs
    result["summary"] = KeyboardInterrupt()
    status, _, err = run(capfd, ["score", tmp_path / "in.txt", "-o", tmp_path / "o.jsonl"])
    assert status == 130
    assert err == f"refimpl: interrupted; resume with:\n  refimpl score {tmp_path / 'in.txt'} -o {tmp_path / 'o.jsonl'} " \
                  f"--resume\n"
    status, _, err = run(capfd, ["score", tmp_path / "in.txt"])
    assert status == 130 and err == "refimpl: interrupted\n"


@pytest.mark.parametrize("command, done", [("score", "scored"), ("generate", "continued")])
def test_error_records_exit_three_naming_the_counts(capfd, fake_runs, tmp_path, command, done):
    _, result, _ = fake_runs
    result["summary"] = Summary(records=7, errors=2, scored_now=5, tokens=40, seconds=2.0)
    status, _, err = run(capfd, [command, tmp_path / "in.txt", "-o", tmp_path / "o"])
    assert status == 3
    assert f"refimpl: 2 of 7 lines could not be {done} (see their \"error\" records)" in err


def test_interrupted_summary(capfd, fake_runs, tmp_path):
    _, result, _ = fake_runs
    result["summary"] = Summary(records=4, errors=1, interrupted=True)
    status, _, err = run(capfd, ["score", tmp_path / "in.txt", "-o", tmp_path / "o"])
    assert status == 130
    assert f"refimpl: interrupted; 4 records are complete. Resume with:\n  refimpl score {tmp_path / 'in.txt'} -o " \
           f"{tmp_path / 'o'} --resume" in err
    status, _, err = run(capfd, ["score", tmp_path / "in.txt"])
    assert status == 130 and "rerun with -o FILE to be able to resume" in err


def test_records_beyond_the_input_are_warned_about(capfd):
    status = run_and_report(lambda: Summary(records=5, beyond_input=2), "refimpl score x -o y --resume")
    err = capfd.readouterr().err
    assert status == 0
    assert "the output holds 2 records past the input's last line" in err
    run_and_report(lambda: Summary(records=5), None)
    assert "past the input" not in capfd.readouterr().err


# ------------------------------------------------------------------------------ the summary line

def test_rate_line_figures():
    summary = Summary(scored_now=10, tokens=90, padding=10, seconds=2.0, workers=2, threads=3)
    line = summary.rate_line()
    assert line.startswith("refimpl: 10 lines, 90 tokens in 2.0 s: 5.0 lines/s, 45 tokens/s; padding 10.0% of "
                           "positions; 2 process(es) x 3 thread(s); peak RSS ")
    assert re.search(r"peak RSS \d+ MiB$", line)
    assert "padding 0.0%" in Summary().rate_line()  # nothing computed: no division by zero
    assert "0.0 lines/s" in Summary(seconds=0.0).rate_line()


def test_summary_adds_batches():
    summary = Summary()
    summary.add(Batch([{"index": 0}, {"index": 1}], 7, 3))
    summary.add(Batch([{"index": 2}], 4, 0))
    assert (summary.scored_now, summary.tokens, summary.padding) == (3, 11, 3)


def write_ids(path, rows):
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    return path


def test_score_summary_counts_tokens_padding_and_plan(tmp_path, capfd):
    """Lines of 3, 5, 5, 9 tokens, budget 16: sorted and cut into [3, 5, 5] (3 x 5 = 15 positions, 2 of them
    padding) and [9]; 22 tokens, padding 2 / 24 = 8.3%."""
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, 37, n).tolist() for n in (9, 5, 3, 5)]
    source = write_ids(tmp_path / "in.txt", rows)
    status, _, err = run(capfd, ["score", source, "-o", tmp_path / "o", "--model", TINY, "--format", "ids",
                                 "--batch-tokens", 16, "--workers", 1, "--threads", 1])
    assert status == 0, err
    assert re.search(r"^refimpl: 4 lines, 22 tokens in [\d.]+ s: [\d.]+ lines/s, \d+ tokens/s; padding 8\.3% of "
                     r"positions; 1 process\(es\) x 1 thread\(s\); peak RSS \d+ MiB$", err, re.M), err
    got = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert [list(r) for r in got] == [["index", "log_likelihood", "num_tokens", "perplexity"]] * 4
    assert [r["index"] for r in got] == [0, 1, 2, 3]
    assert [r["num_tokens"] for r in got] == [8, 4, 2, 4]
    for r in got:
        assert r["perplexity"] == pytest.approx(math.exp(-r["log_likelihood"] / r["num_tokens"]), rel=1e-12)


def test_default_plan_of_a_short_input_is_one_process(tmp_path, capfd, monkeypatch):
    from refimpl import runtime

    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    source = write_ids(tmp_path / "in.txt", [[5, 6, 7], [8, 9]])
    status, _, err = run(capfd, ["score", source, "-o", tmp_path / "o", "--model", TINY, "--format", "ids"])
    assert status == 0, err
    assert "2 lines, 5 tokens" in err and "padding 16.7% of positions; 1 process(es) x 1 thread(s)" in err


def test_resume_counts_old_records_and_old_errors(tmp_path, capfd):
    source = write_ids(tmp_path / "in.txt", [[5, 6, 7], [8, 9], [10, 11, 12, 13]])
    out = tmp_path / "o"
    out.write_text('{"index": 1, "error": "line 2: x"}\n{"index": 0, "log_likelihood": -1.0}\n{"ind')
    status, _, err = run(capfd, ["score", source, "-o", out, "--model", TINY, "--format", "ids", "--resume"])
    assert status == 3, err
    assert "refimpl: 1 lines, 4 tokens" in err and "1 of 3 lines could not be scored" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [1, 0, 2] and rows[2]["num_tokens"] == 3


def test_resume_of_an_absent_output_scores_everything(tmp_path, capfd):
    source = write_ids(tmp_path / "in.txt", [[5, 6, 7], [8, 9]])
    status, _, err = run(capfd, ["score", source, "-o", tmp_path / "new", "--model", TINY, "--format", "ids",
                                 "--resume"])
    assert status == 0 and "2 lines, 5 tokens" in err
    assert len((tmp_path / "new").read_text().splitlines()) == 2


def test_run_score_summary_fields(tmp_path):
    source = write_ids(tmp_path / "in.txt", [[5, 6, 7], [50], [8, 9, 10, 11]])
    job = ScoreJob(model=str(TINY), format="ids", batch_tokens=8)
    summary = run_score(job, str(source), str(tmp_path / "o"), workers=1, threads=1, progress=False)
    # [50] is outside the vocabulary: an error record, no tokens; [3] and [4] tokens: 2 x 4 = 8 positions
    assert (summary.records, summary.errors, summary.scored_now, summary.tokens, summary.padding) == (3, 1, 3, 7, 1)
    assert (summary.workers, summary.threads, summary.interrupted, summary.beyond_input) == (1, 1, False, 0)
    assert summary.seconds > 0


# ------------------------------------------------------------------------------ lines

def test_lines_at_the_length_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(lines_module, "MAX_LINE_BYTES", 8)
    path = tmp_path / "in.txt"
    path.write_bytes(b"12345678\nnext\n123456789\nafter\n" + b"x" * 30 + b"\nlast")
    with open(path, "rb") as f:
        got = list(read_lines(f))
    assert [i for i, _ in got] == [0, 1, 2, 3, 4, 5]
    assert got[0][1] == b"12345678" and got[1][1] == b"next" and got[3][1] == b"after" and got[5][1] == b"last"
    assert decode_line(got[0][1]) == "12345678"
    for index in (2, 4):
        assert len(got[index][1]) == 9
        with pytest.raises(LineError, match="^line longer than 8 bytes$"):
            decode_line(got[index][1])


def test_crlf_and_count_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\r\nb\n\nc")
    with open(path, "rb") as f:
        assert list(read_lines(f)) == [(0, b"a"), (1, b"b"), (2, b""), (3, b"c")]
    assert count_lines(str(path)) == 4
    path.write_bytes(b"a\nb\n")
    assert count_lines(str(path)) == 2
    path.write_bytes(b"")
    assert count_lines(str(path)) == 0
    assert count_lines("-") == -1


def test_decode_line_messages():
    with pytest.raises(LineError, match=r"^not valid UTF-8: byte 0xff at byte 3 of the line \(invalid start byte\)$"):
        decode_line(b"ab\xffcd")
    for blank in (b"", b"  \t"):
        with pytest.raises(LineError, match="^empty line$"):
            decode_line(blank)
    assert decode_line("café".encode()) == "café"


def test_open_input_refusals(tmp_path):
    with pytest.raises(InputError, match=f"^input {tmp_path} is a directory, expected a file with one item per line$"):
        open_input(str(tmp_path))
    with pytest.raises(InputError, match=r"^cannot read input .*absent: No such file or directory$"):
        open_input(str(tmp_path / "absent"))


# ------------------------------------------------------------------------------ batches, lines, records

def items(*lengths):
    return [(i, list(range(n))) for i, n in enumerate(lengths)]


def sizes(batches):
    return [[len(ids) for _, ids in batch] for batch in batches]


def test_budget_batches_at_their_bounds():
    assert sizes(budget_batches(items(2, 3, 3, 4), 12)) == [[2, 3, 3], [4]]  # 3 x 3 = 9, 4 x 4 = 16 > 12
    assert sizes(budget_batches(items(3, 3, 3, 3), 12)) == [[3, 3, 3, 3]]  # exactly the budget
    assert sizes(budget_batches(items(3, 3, 3, 3), 11)) == [[3, 3, 3], [3]]
    assert sizes(budget_batches(items(5, 20, 2), 10)) == [[5], [20], [2]]  # wider than the budget: alone
    assert sizes(budget_batches(items(1, 1, 1, 1, 1), 100, max_lines=2)) == [[1, 1], [1, 1], [1]]
    assert sizes(budget_batches(items(1, 1), 100, max_lines=2)) == [[1, 1]]
    assert sizes(budget_batches(items(2, 2, 4), 8)) == [[2, 2], [4]]  # the new row's width counts: 3 x 4 > 8
    assert list(budget_batches([], 5)) == []
    pairs = [(0, ([1, 2], [1])), (1, ([1], [1, 2, 3]))]
    assert [[i for i, _ in b] for b in budget_batches(pairs, 6)] == [[0, 1]]  # widest side: 3, 2 rows
    assert [[i for i, _ in b] for b in budget_batches(pairs, 5)] == [[0], [1]]
    with pytest.raises(ValueError, match="^--batch-tokens must be at least 1, got 0$"):
        list(budget_batches(items(1), 0))


def test_padding_counts():
    assert padding(items(2, 5, 3)) == 3 + 0 + 2
    assert padding(items(4)) == 0
    assert padding(items(2, 5, 30), limit=24) == 3  # the long text runs alone, unpadded
    assert padding(items(30), limit=24) == 0
    pairs = [(0, ([1, 2, 3], [1])), (1, ([1], [1, 2]))]
    assert padding(pairs) == 2 + 1
    assert jobs.item_length(([1, 2, 3], [1])) == 4 and jobs.item_width(([1, 2, 3], [1])) == 3


def test_check_ids_bounds():
    config = argparse.Namespace(vocab_size=37, max_position_embeddings=24)
    check_ids([0, 36], config)
    check_ids(list(range(24)), config)
    with pytest.raises(LineError, match=r"^text: 1 token\(s\): scoring needs at least 2 \(the first one is only "
                                        r"context\)$"):
        check_ids([5], config)
    with pytest.raises(LineError, match=r"^prompt: 0 token\(s\): scoring needs at least 1$"):
        check_ids([], config, min_tokens=1, what="prompt")
    for bad in (37, -1):
        with pytest.raises(LineError, match=f"^text: token id {bad} is outside the vocabulary of 37$"):
            check_ids([3, bad, 99], config)
    with pytest.raises(LineError, match="^text: 25 tokens exceed the model's limit of 24 positions$"):
        check_ids([1] * 25, config)
    check_ids([1] * 25, config, fits=False)
    with pytest.raises(LineError, match="^source: 9 tokens exceed the model's limit of 8 positions$"):
        check_ids([1] * 9, config, limit=8, what="source")
    check_ids([1] * 8, config, limit=8)


def test_parse_line_formats():
    assert parse_line("3 4,5\t6", "ids", None) == [3, 4, 5, 6]
    with pytest.raises(LineError, match="^expected whitespace-separated integer token ids$"):
        parse_line("3 x", "ids", None)
    assert parse_line('{"input_ids": [1, 2]}', "jsonl", None) == [1, 2]
    with pytest.raises(LineError, match="^input_ids must be a list of integers$"):
        parse_line('{"input_ids": [1, true]}', "jsonl", None)
    with pytest.raises(LineError, match=r'^expected an object with "text" \(a string\) or "input_ids"'):
        parse_line('{"text": 3}', "jsonl", None)
    with pytest.raises(LineError, match="^this model directory has no tokenizer files; pass token ids$"):
        parse_line('{"text": "hi"}', "jsonl", None)
    with pytest.raises(LineError, match="^this model directory has no tokenizer files; pass token ids$"):
        parse_line("hi", "text", None)
    tokenizer = lambda text: {"input_ids": [len(text), 7]}  # noqa: E731
    assert parse_line('{"text": "abc"}', "jsonl", tokenizer) == [3, 7]
    assert parse_line("abcd", "text", tokenizer) == [4, 7]
    with pytest.raises(LineError, match="^not valid JSON: Expecting value at column 1$"):
        parse_line("nope", "jsonl", None)
    with pytest.raises(LineError, match="^expected a JSON object, got list$"):
        parse_line("[1, 2]", "jsonl", None)
    with pytest.raises(LineError, match="^not valid JSON: nested too deeply$"):
        parse_line("[" * 100000 + "]" * 100000, "jsonl", None)


def test_parse_pair():
    tokenizer = lambda text: {"input_ids": [len(text)]}  # noqa: E731
    assert parse_pair('{"source": "abc", "target_ids": [4, 5]}', tokenizer) == ([3], [4, 5])
    assert parse_pair('{"source_ids": [1], "target": "xy"}', tokenizer) == ([1], [2])
    with pytest.raises(LineError, match=r'^expected "target" \(a string\) or "target_ids" \(a list of integers\)$'):
        parse_pair('{"source": "abc"}', tokenizer)
    with pytest.raises(LineError, match=r'^expected "source" \(a string\) or "source_ids"'):
        parse_pair('{"target": "abc"}', tokenizer)
    with pytest.raises(LineError, match="^target_ids must be a list of integers$"):
        parse_pair('{"source": "a", "target_ids": ["x"]}', tokenizer)


def test_likelihood_record_fields():
    record = jobs.likelihood_record(4, np.array([-1.0, -2.0, -0.5], np.float32), extra=1)
    assert list(record) == ["index", "log_likelihood", "num_tokens", "perplexity", "extra"]
    assert record["log_likelihood"] == -3.5 and record["num_tokens"] == 3
    assert record["perplexity"] == pytest.approx(math.exp(3.5 / 3), rel=1e-15)


def test_padded_sides():
    batch, mask = jobs.padded([[1, 2, 3], [4]], 0)
    assert batch.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    batch, mask = jobs.padded([[1, 2, 3], [4]], 9, left=True)
    assert batch.tolist() == [[1, 2, 3], [9, 9, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.dtype == np.int64


def test_parse_window_error_records():
    def parse(text):
        if text == "bad":
            raise LineError("why")
        return text

    got, errors = jobs.parse_window([(0, b"ok"), (1, b"bad"), (2, b""), (3, b"fine")], parse)
    assert got == [(0, "ok"), (3, "fine")]
    assert errors == [{"index": 1, "error": "line 2: why"}, {"index": 2, "error": "line 3: empty line"}]


def test_check_stride(load_model):
    model = load_model(str(TINY), None, "float32")
    jobs.check_stride(None, model, "masked")
    jobs.check_stride(1, model, "causal")
    jobs.check_stride(23, model, "causal")
    for bad in (24, 0, -1):
        with pytest.raises(ValueError, match=rf"^stride \(--stride\) must be an integer in 1\.\.23 \(the position table "
                                             rf"of 24 minus one\), got {bad}$"):
            jobs.check_stride(bad, model, "causal")
    with pytest.raises(ValueError, match=r"^stride \(--stride\) applies to causal language models only; "
                                         r"OPTForCausalLM is not one$"):
        jobs.check_stride(2, model, "classify")


def test_score_kind_names_the_choices(load_model):
    model = load_model(str(GOLDEN / "opt" / "preln-OPTForQuestionAnswering"), None, "float32")
    with pytest.raises(ValueError, match=r"^score needs a causal LM, a seq2seq LM, a masked LM or a sequence "
                                         r"classifier; OPTForQuestionAnswering is none \(pick one with --architecture: "
                                         r"OPTForCausalLM, OPTForSequenceClassification\)$"):
        jobs.score_kind(model)
    assert jobs.score_kind(load_model(str(TINY), None, "float32")) == "causal"
    assert jobs.score_kind(load_model(str(GOLDEN / "opt" / "preln-OPTForSequenceClassification"), None,
                                      "float32")) == "classify"
    assert jobs.score_kind(load_model(str(GOLDEN / "nezha" / "k2-NezhaForMaskedLM"), None, "float32")) == "masked"
    assert jobs.score_kind(load_model(str(GOLDEN / "led" / "window-6-LEDForConditionalGeneration"), None,
                                      "float32")) == "seq2seq"


# ------------------------------------------------------------------------------ --resume's reading of the output

def test_resume_file_rules(tmp_path):
    path = tmp_path / "o"
    assert output.resume_file(str(path)) == (set(), 0)
    path.write_bytes(b'{"index": 2}\n{"index": 0, "error": "x"}\n{"index": 5, "error": "y"}\n{"index": 7')
    assert output.resume_file(str(path)) == ({0, 2, 5}, 2)
    assert path.read_bytes().endswith(b'"y"}\n')  # the cut line dropped
    for bad in (b'{"index": -1}\n', b'{"index": true}\n', b'{"index": 1.0}\n', b'[1]\n', b'\xff\n', b'{"i": 1}\n'):
        path.write_bytes(b'{"index": 0}\n' + bad)
        with pytest.raises(ValueError, match=rf"^--resume: line 2 of {re.escape(str(path))} is not a record of refimpl "
                                             r"score \(expected a JSON object with an integer \"index\"\)"):
            output.resume_file(str(path))
        assert path.read_bytes() == b'{"index": 0}\n' + bad  # left alone
    path.write_bytes(b'{"index": 3}\n{"index": 3}\n')
    with pytest.raises(ValueError, match=rf"^--resume: {re.escape(str(path))} holds index 3 twice \(line 2\)"):
        output.resume_file(str(path))


def test_ordered_writer(tmp_path):
    path = tmp_path / "o"
    writer = output.OrderedWriter(str(path), append=False, skip={0, 2})
    writer.put([{"index": 3}, {"index": 4, "error": "e"}])
    assert path.read_bytes() == b""  # 1 is still missing
    writer.put([{"index": 1, "x": "é"}])
    writer.close()
    assert path.read_text(encoding="utf-8") == '{"index": 1, "x": "é"}\n{"index": 3}\n{"index": 4, "error": "e"}\n'
    assert (writer.written, writer.errors) == (3, 1)
    writer = output.OrderedWriter(str(path), append=True)
    writer.put([{"index": 0}])
    writer.close()
    assert path.read_text(encoding="utf-8").endswith('"e"}\n{"index": 0}\n')


# ------------------------------------------------------------------------------ run.py's helpers

def test_windows_skip_done_lines():
    lines = [(i, b"x") for i in range(7)]
    assert [[i for i, _ in w] for w in windows(iter(lines), 3, {1, 4})] == [[0, 2, 3], [5, 6]]
    assert list(windows(iter([]), 3, set())) == []


def test_window_lines():
    assert run_module.window_lines(ScoreJob(model="m")) == run_module.WINDOW_LINES == 512
    assert run_module.window_lines(ScoreJob(model="m"), 7) == 7


def test_share_out_rules():
    one_window = [[(i, b"x" * (i + 1)) for i in range(4)]]
    workers, parts = share_out(iter(one_window), 2, parameters=10)  # 4 x 10 < 2 x WORKER_WORK: one process
    assert workers == 1 and [[i for i, _ in p] for p in parts] == [[0, 1, 2, 3]]
    big = int(run_module.WORKER_WORK)
    exact = [[(i, b"x") for i in range(2)]]  # 2 lines x WORKER_WORK / 1 = 2 processes' worth: not less
    workers, parts = share_out(iter(exact), 2, parameters=big)
    assert workers == 2 and list(parts) == exact
    workers, parts = share_out(iter(exact), 2, parameters=big - 1)  # just under: one process
    assert workers == 1 and list(parts) == exact
    two = [[(0, b"a")], [(1, b"b")], [(2, b"c")]]
    workers, chunks = share_out(iter(two), 3, parameters=1)  # two windows or more: whatever the work
    assert workers == 3 and list(chunks) == two
    workers, parts = share_out(iter([]), 2, parameters=big)
    assert workers == 1 and list(parts) == []


def test_equal_parts_rules():
    window = [(i, b"x" * n) for i, n in enumerate([3, 1, 4, 2])]  # sorted by bytes, not by index
    assert [[i for i, _ in p] for p in equal_parts(window, 2)] == [[1, 3, 0], [2]]  # 1+2+3 | 4: past half of 10
    exact = [(0, b"x"), (1, b"x" * 4), (2, b"x" * 5)]  # 5 bytes done when the last begins: half of 10
    assert [[i for i, _ in p] for p in equal_parts(exact, 2)] == [[0, 1], [2]]
    three = [(i, b"x" * 2) for i in range(7)]  # 14 bytes in 3 parts: new parts from 14/3 and 28/3 bytes on
    assert [[i for i, _ in p] for p in equal_parts(three, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(p) for p in equal_parts(three, 9)] == [1] * 7  # no part without a line
    assert [[i for i, _ in p] for p in equal_parts(three, 1)] == [list(range(7))]
    assert equal_parts([], 2) == [[]]


def test_progress_bar_rules(tmp_path, monkeypatch, capfd):
    pytest.importorskip("tqdm")
    path = tmp_path / "in.txt"
    path.write_text("a\nb\nc\n")
    monkeypatch.setattr(run_module.sys.stderr, "isatty", lambda: False, raising=False)
    assert run_module.progress_bar(None, str(path)) is None
    assert run_module.progress_bar(False, str(path)) is None
    bar = run_module.progress_bar(True, str(path), long_input=10)
    assert bar is not None and bar.total == 3
    bar.close()
    out, err = capfd.readouterr()
    assert out == "" and "3/3" not in err and "0/3" in err and "line/s" in err  # on stderr, never among the records
    monkeypatch.setattr(run_module.sys.stderr, "isatty", lambda: True, raising=False)
    assert run_module.progress_bar(False, str(path)) is None
    assert run_module.progress_bar(None, str(path), long_input=3) is None  # not longer than the threshold
    bar = run_module.progress_bar(None, str(path), long_input=2)
    assert bar is not None and bar.total == 3
    bar.close()
    bar = run_module.progress_bar(None, "-", long_input=2)  # stdin: length unknown
    assert bar is not None and bar.total is None
    bar.close()


def test_counted():
    counted = run_module.Counted(iter([(0, b"a"), (1, b"b"), (2, b"c")]))
    assert counted.count == 0
    assert [i for i, _ in counted] == [0, 1, 2] and counted.count == 3


def test_stop_flag():
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with run_module.StopFlag() as flag:
        assert signal.getsignal(signal.SIGINT) == flag.stop and signal.getsignal(signal.SIGTERM) == flag.stop
        flag.check()
        flag.stop()  # outside computing(): only the flag
        assert flag.stopped
        with pytest.raises(run_module.Interrupted):
            flag.check()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored
    with run_module.StopFlag() as flag:
        with pytest.raises(run_module.Interrupted):
            with flag.computing():
                flag.stop()
        assert flag.stopped and not flag._computing


# ------------------------------------------------------------------------------ interruption and stdout

class SignalledJob:
    """A job whose scorer gives one batch per window and sends this process SIGINT after the first one."""
    batch_size = None

    def load(self):
        import os
        import signal
        from types import SimpleNamespace

        def score_window(lines):
            for index, raw in lines:
                if index == 1:
                    os.kill(os.getpid(), signal.SIGINT)
                yield Batch([{"index": index, "n": len(raw)}], len(raw), 0)

        return SimpleNamespace(score_window=score_window, model=SimpleNamespace(params={}))


def test_sigint_stops_the_run_with_complete_records(tmp_path, capfd):
    source = tmp_path / "in.txt"
    source.write_text("a\nbb\nccc\n")
    out = tmp_path / "o"
    out.write_text('{"index": 7}\n')  # past the input: not reported for an interrupted run
    summary = run_score(SignalledJob(), str(source), str(out), resume=True, workers=1, threads=1, progress=False)
    assert summary.interrupted and summary.beyond_input == 0
    assert (summary.records, summary.scored_now) == (2, 1)
    assert out.read_text() == '{"index": 7}\n{"index": 0, "n": 1}\n'
    assert run_and_report(lambda: summary, "refimpl score in -o o --resume") == 130
    assert "refimpl: interrupted; 2 records are complete. Resume with:\n  refimpl score in -o o --resume" in \
        capfd.readouterr().err


def test_records_to_stdout(capfd):
    writer = output.OrderedWriter("-", append=False)
    writer.put([{"index": 1}, {"index": 0, "text": "é"}])
    writer.close()
    print("still open")
    assert capfd.readouterr().out == '{"index": 0, "text": "é"}\n{"index": 1}\nstill open\n'


def test_stdin_is_read_as_bytes(monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"x\xff\ny\n")))
    source = open_input("-")
    assert list(read_lines(source)) == [(0, b"x\xff"), (1, b"y")]


def test_peak_rss_counts_this_process_and_its_largest_child():
    """A child that touched 300 MiB: the figure is at least this process's own peak (VmHWM) plus 300 MiB, and
    no more than the machine's memory."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "b = bytearray(300 << 20)"], check=True)
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    own = int(status["VmHWM"].split()[0]) / 1024
    total = int(open("/proc/meminfo").readline().split()[1]) / 1024
    rss = run_module.peak_rss_mib()
    assert own + 300 <= rss <= total, (own, rss, total)
    shown = float(re.search(r"peak RSS (\d+) MiB$", Summary().rate_line())[1])
    assert abs(shown - run_module.peak_rss_mib()) <= 1
