"""`refimpl score`'s batches by token budget and its choice of processes and threads.

- budget_batches: every batch within the budget (rows x widest row) unless a single line, the cap on
  lines kept, the items in order, each batch as full as the budget allows (checked against the definition).
- the records: input order, each line's numbers equal to scoring that line alone (refimpl.scoring on one
  unpadded text: no batching at all), float32 and float64, in this process and in worker processes; and
  after a kill, --resume completes the file.
- the padding figure: equal to the padding positions the model was actually given (the zeros of every
  attention mask, counted by wrapping the scoring function), and the percentage on stderr.
- plan_workers: the affinity mask decides (mocked), what the user gives is kept, bad values refused.
"""
import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl
import refimpl.scoring
from refimpl import runtime
from refimpl.batch import ScoreJob, run_score
from refimpl.batch.jobs import budget_batches
from refimpl.cli import main
from test_batch import TINY, command, environment, records, wait_for_records, write_input

TOLERANCE = {"float32": 2e-5, "float64": 1e-12}  # relative: a text in a batch vs alone


def mixed_id_lines(n, seed=0, longest=24):  # token ids of the tiny model (24 positions), 2..longest per line
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(n) < 0.2, rng.integers(15, longest + 1, n), rng.integers(2, 8, n))
    return [" ".join(map(str, rng.integers(3, 37, k))) for k in lengths]


# ---------------------------------------------------------------- the grouping

@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=80), budget=st.integers(1, 300),
       cap=st.one_of(st.none(), st.integers(1, 10)))
def test_budget_batches_fill_to_the_budget_in_order(lengths, budget, cap):
    items = [(i, [7] * n) for i, n in enumerate(sorted(lengths))]
    batches = list(budget_batches(items, budget, cap))
    assert [item for batch in batches for item in batch] == items, "items lost, repeated or reordered"
    for b, batch in enumerate(batches):
        widest = max(len(ids) for _, ids in batch)
        assert len(batch) == 1 or len(batch) * widest <= budget, (b, len(batch), widest, budget)
        assert cap is None or len(batch) <= cap
        if b + 1 < len(batches):  # the next line would have broken the budget or the cap
            grown = batch + [batches[b + 1][0]]
            assert len(grown) * max(len(ids) for _, ids in grown) > budget or (cap is not None and len(grown) > cap)


def test_budget_below_one_is_refused(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", mixed_id_lines(3))
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, before the model loads
        main(["score", str(source), "--format", "ids", "--model", str(TINY), "--batch-tokens", "0"])
    assert exit_info.value.code == 2
    assert "--batch-tokens: expected an integer >= 1, got '0'" in capsys.readouterr().err


# ---------------------------------------------------------------- the records and the padding figure

def alone(model, line):  # -> (log-likelihood, scored tokens) of one text, no batch, no padding
    ids = np.array([[int(t) for t in line.split()]])
    logprobs = refimpl.scoring.token_logprobs(model, ids)[0]
    return float(np.sum(logprobs, dtype=np.float64)), len(logprobs)


def check_alone(rows, lines, dtype, what, errors=()):  # errors: the indices of lines that are errors
    model = refimpl.from_pretrained(TINY, dtype=dtype)
    assert [r["index"] for r in rows] == list(range(len(lines))), f"{what}: records out of input order"
    for r, line in zip(rows, lines):
        if r["index"] in errors:
            assert "error" in r, f"{what}: index {r['index']} should be an error record: {r}"
            continue
        expected, n = alone(model, line)
        assert r["num_tokens"] == n, f"{what}: index {r['index']} num_tokens {r['num_tokens']} vs {n}"
        rel = abs(r["log_likelihood"] - expected) / abs(expected)
        assert rel <= TOLERANCE[dtype], f"{what}: index {r['index']} log_likelihood {r['log_likelihood']} vs " \
                                        f"{expected} alone (relative {rel:.1e})"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_records_in_input_order_equal_each_line_alone_and_padding_counted(tmp_path, monkeypatch, dtype):
    lines = mixed_id_lines(300, seed=1)
    source = write_input(tmp_path / "in.txt", lines)
    masks = []
    original = refimpl.scoring.token_logprobs

    def counting(model, ids, mask):  # the padding the model is given: the zeros of each mask
        masks.append(np.asarray(mask))
        return original(model, ids, mask)

    monkeypatch.setattr(refimpl.scoring, "token_logprobs", counting)
    job = ScoreJob(model=str(TINY), format="ids", dtype=dtype, batch_tokens=96)
    summary = run_score(job, str(source), str(tmp_path / "out"), workers=1, window=100, progress=False)
    monkeypatch.undo()
    check_alone(records(tmp_path / "out"), lines, dtype, f"{dtype}, budget 96")
    assert summary.padding == sum(int((m == 0).sum()) for m in masks)
    assert summary.padding > 0, "lines of mixed lengths: some padding is expected"
    assert all(m.size <= 96 or m.shape[0] == 1 for m in masks), [m.shape for m in masks]
    assert summary.tokens == sum(len(line.split()) for line in lines)
    shown = re.search(r"padding ([\d.]+)% of positions", summary.rate_line())
    assert float(shown[1]) == pytest.approx(100 * summary.padding / (summary.tokens + summary.padding), abs=0.05)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_worker_processes_give_each_line_its_own_numbers(tmp_path, capsys, dtype):
    """Several windows, two worker processes, a small budget, an error line: the command end to end."""
    lines = mixed_id_lines(1100, seed=2)
    source = write_input(tmp_path / "in.txt", lines, {17: b"1 2 x"})
    argv = ["score", str(source), "--format", "ids", "--model", str(TINY), "-o", str(tmp_path / "out"),
            "--dtype", dtype, "--batch-tokens", "64", "--workers", "2"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "2 process(es) x 1 thread(s)" in err and "peak RSS" in err and "padding" in err, err
    check_alone(records(tmp_path / "out"), lines, dtype, f"{dtype}, 2 workers", errors={17})


def test_sigkill_then_resume_with_a_budget(tmp_path):
    lines = mixed_id_lines(6000, seed=3)  # 12 read-ahead windows: the kill lands mid-way on a fast machine too
    source = write_input(tmp_path / "in.txt", lines)
    out = tmp_path / "out.jsonl"
    options = ["--format", "ids", "--model", TINY, "--batch-tokens", "48", "--workers", "1"]
    job = subprocess.Popen(command(source, "-o", out, *options), env=environment(), stderr=subprocess.DEVNULL)
    wait_for_records(out, job, 100)
    job.kill()
    job.wait()
    data = out.read_bytes()
    assert 0 < data.count(b"\n") < len(lines), "the run should have been cut mid-way"
    out.write_bytes(data[:data.rfind(b"\n") + 1] + b'{"index": 7')  # a write cut short
    finished = subprocess.run(command(source, "-o", out, "--resume", *options), env=environment(),
                              capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    check_alone(records(out), lines, "float32", "killed and resumed")


# ---------------------------------------------------------------- processes and threads

@pytest.mark.parametrize("cpus, workers, threads, expected", [
    ({0, 1, 2, 3}, None, None, (4, 1)),
    ({5}, None, None, (1, 1)),
    ({0, 1, 2, 3}, None, 2, (2, 2)),
    ({0, 1, 2}, None, 2, (1, 2)),
    ({0, 1, 2, 3}, 3, None, (3, 1)),
    ({0, 1}, 4, 2, (4, 2)),  # what the user asks for is kept, even beyond the cores
])
def test_plan_workers_follows_the_affinity_mask(monkeypatch, cpus, workers, threads, expected):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(cpus), raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 64)  # not the affinity: must not be used
    assert runtime.plan_workers(workers, threads) == expected


def test_plan_workers_without_affinity_uses_the_cpu_count(monkeypatch):
    monkeypatch.delattr(runtime.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 3)
    assert runtime.plan_workers() == (3, 1)


@pytest.mark.parametrize("workers, threads", [(0, None), (None, 0), (-1, 2), (1.5, None), (True, None)])
def test_plan_workers_refuses_bad_values(workers, threads):
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        runtime.plan_workers(workers, threads)


@pytest.mark.parametrize("cpus, lines, processes", [({0, 1}, 1100, 2), ({3}, 1100, 1), ({0, 1}, 40, 1)])
def test_the_default_uses_every_usable_core_unless_the_input_is_one_window(tmp_path, monkeypatch, cpus, lines,
                                                                           processes):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(cpus), raising=False)
    source = write_input(tmp_path / "in.txt", mixed_id_lines(lines, seed=4))
    summary = run_score(ScoreJob(model=str(TINY), format="ids"), str(source), str(tmp_path / "out"), progress=False)
    assert (summary.workers, summary.threads) == (processes, 1)
    assert summary.records == lines and len(records(tmp_path / "out")) == lines
    assert json.loads((tmp_path / "out").read_text().splitlines()[-1])["index"] == lines - 1


@pytest.mark.parametrize("lengths, parameters, expected", [
    ([3] * 300, 10 ** 8, [[150, 150]]),          # one window, enough work: parts of equal bytes
    ([3] * 301, 10 ** 8, [[151, 150]]),
    ([1] * 200 + [9] * 20, 10 ** 8, [[190, 30]]),  # 190 and 190 bytes: the short lines first
    ([3] * 300, 10 ** 3, [[300]]),               # too little work to start workers: one process, one part
    ([], 10 ** 8, []),
    ([3] * 1500, 10, [[256, 256], [256, 256], [238, 238]]),  # two windows or more: each cut, whatever the work
])
def test_each_window_is_cut_into_equal_parts_for_the_workers(lengths, parameters, expected):
    from refimpl.batch.run import WINDOW_LINES, equal_parts, share_out, windows

    items = [(i, b"x" * n) for i, n in enumerate(lengths)]
    workers, chunks = share_out(windows(iter(items), WINDOW_LINES, set()), 2, parameters)
    assert workers == (2 if any(len(parts) > 1 for parts in expected) else 1)
    cut = [equal_parts(chunk, workers) for chunk in chunks]
    assert [[len(part) for part in parts] for parts in cut] == expected
    assert sorted(item for parts in cut for part in parts for item in part) == items, "a line lost or repeated"
    for parts in cut:  # the shorter lines first
        if len(parts) == 2:
            assert max(len(raw) for _, raw in parts[0]) <= min(len(raw) for _, raw in parts[1])
