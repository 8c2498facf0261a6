"""score_on_dask's bookkeeping without a cluster: a stand-in client runs each submitted partition in this
process (score_partition, as a worker would), so the partitions, their files, --resume's skipping, the
in-flight limit, the summary and the assembled output are checked in a second (tests/test_batch_dask.py
runs the real cluster)."""
import json
import sys
import types

import pytest

from golden import GOLDEN
from refimpl.batch import cluster
from refimpl.batch.jobs import ScoreJob
from refimpl.batch.run import run_score

TINY = GOLDEN / "opt" / "preln-OPTForCausalLM"
ROWS = [[5, 6, 7], [8, 9], [99], [10, 11, 12, 13], [14, 15], [16, 17, 18]]  # [99]: outside the vocabulary


class Future:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


class AsCompleted:
    """distributed.as_completed's interface as score_on_dask uses it; records the most futures held."""
    most = 0

    def __init__(self):
        self.futures = []

    def add(self, future):
        self.futures.append(future)
        AsCompleted.most = max(AsCompleted.most, len(self.futures))

    def count(self):
        return len(self.futures)

    def __next__(self):
        return self.futures.pop(0)


class Client:
    def __init__(self, workers=2):
        self.workers, self.submitted, self.cancelled = workers, [], []

    def scheduler_info(self):
        return {"workers": {f"tcp://w:{i}": {} for i in range(self.workers)}}

    def submit(self, fn, *args, pure=True):
        assert pure is False  # each partition is its own task, even when two are equal
        self.submitted.append(args)
        return Future(fn, args)

    def cancel(self, futures):
        self.cancelled += futures


def not_a_worker():
    raise ValueError("No worker found")


@pytest.fixture
def fake_distributed(monkeypatch):
    module = types.SimpleNamespace(as_completed=AsCompleted, get_worker=not_a_worker)
    monkeypatch.setattr(cluster, "need_distributed", lambda: module)
    AsCompleted.most = 0
    return module


def write_rows(path, rows):
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    return path


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_partitions_records_and_summary(tmp_path, fake_distributed):
    source = write_rows(tmp_path / "in.txt", ROWS)
    job = ScoreJob(model=str(TINY), format="ids", batch_tokens=64)
    client = Client(workers=2)
    out = tmp_path / "out.jsonl"
    summary = cluster.score_on_dask(job, str(source), str(out), client, partition_lines=2, threads=3)
    assert [[index for index, _ in args[2]] for args in client.submitted] == [[0, 1], [2, 3], [4, 5]]
    assert all(args[1] == 3 and args[3] == 512 for args in client.submitted)  # threads, window
    assert AsCompleted.most <= 2 * client.workers
    assert (summary.records, summary.errors, summary.scored_now, summary.workers, summary.threads) == (6, 1, 6, 2, 3)
    assert summary.tokens == sum(len(r) for r in ROWS if r != [99])
    assert not (tmp_path / "out.jsonl.parts").exists() and not (tmp_path / "out.jsonl.tmp").exists()
    local = tmp_path / "local.jsonl"
    run_score(job, str(source), str(local), workers=1, progress=False)
    assert out.read_text() == local.read_text()


def test_in_flight_limit_is_twice_the_workers(tmp_path, fake_distributed):
    source = write_rows(tmp_path / "in.txt", ROWS)
    job = ScoreJob(model=str(TINY), format="ids")
    cluster.score_on_dask(job, str(source), str(tmp_path / "o"), Client(workers=1), partition_lines=1)
    assert AsCompleted.most == 2
    AsCompleted.most = 0
    cluster.score_on_dask(job, str(source), str(tmp_path / "o"), Client(workers=0), partition_lines=1)
    assert AsCompleted.most == 2  # no worker known yet: counted as one


def test_default_partition_is_eight_windows(tmp_path, fake_distributed, monkeypatch):
    source = write_rows(tmp_path / "in.txt", ROWS * 3)
    job = ScoreJob(model=str(TINY), format="ids")
    monkeypatch.setattr(cluster, "window_lines", lambda job: 2)
    client = Client()
    cluster.score_on_dask(job, str(source), str(tmp_path / "o"), client)
    assert [len(args[2]) for args in client.submitted] == [16, 2]
    assert cluster.PARTITION_WINDOWS == 8


def test_resume_submits_only_partitions_without_a_file(tmp_path, fake_distributed):
    source = write_rows(tmp_path / "in.txt", ROWS)
    job = ScoreJob(model=str(TINY), format="ids")
    out = tmp_path / "out.jsonl"
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    kept = '{"index": 2, "error": "kept"}\n{"index": 3, "log_likelihood": -1.0}\n'
    (parts / "00000001.jsonl").write_text(kept)
    client = Client()
    summary = cluster.score_on_dask(job, str(source), str(out), client, resume=True, partition_lines=2)
    assert [[index for index, _ in args[2]] for args in client.submitted] == [[0, 1], [4, 5]]
    assert (summary.records, summary.errors, summary.scored_now) == (6, 1, 4)
    rows = lines_of(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 5] and rows[2]["error"] == "kept"
    # without --resume an old partition directory is removed first
    parts.mkdir()
    (parts / "00000001.jsonl").write_text(kept)
    client = Client()
    cluster.score_on_dask(job, str(source), str(out), client, partition_lines=2)
    assert len(client.submitted) == 3 and "kept" not in out.read_text()


def test_refusals(tmp_path, fake_distributed):
    job = ScoreJob(model=str(TINY), format="ids")
    with pytest.raises(ValueError, match="^--scheduler writes partition files next to the output: pass -o FILE$"):
        cluster.score_on_dask(job, "-", "-", Client())
    with pytest.raises(ValueError, match="^--partition-lines must be at least 1, got -3$"):
        cluster.score_on_dask(job, "-", str(tmp_path / "o"), Client(), partition_lines=-3)


def test_a_worker_failure_names_the_worker(tmp_path, fake_distributed):
    job = ScoreJob(model=str(tmp_path / "absent"), format="ids")
    with pytest.raises(cluster.WorkerError, match=r"^on Dask worker \(none: called outside a worker\): "
                                                  r"FileNotFoundError: .*absent"):
        cluster.score_partition(job, 1, [(0, b"5 6")], 512)
    fake_distributed.get_worker = lambda: types.SimpleNamespace(address="tcp://10.1.2.3:4567")
    assert cluster.worker_address() == "tcp://10.1.2.3:4567"


def test_missing_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ValueError, match=r"^scoring on a Dask cluster needs dask\.distributed: pip install "
                                         r"'refimpl\[dask\]'$"):
        cluster.need_distributed()


def test_part_file_names():
    from pathlib import Path

    assert cluster.part_file(Path("o.parts"), 12) == Path("o.parts/00000012.jsonl")


def test_output_in_a_new_directory(tmp_path, fake_distributed):
    """The partition directory (and so the output's) is created with its parents."""
    source = write_rows(tmp_path / "in.txt", ROWS[:2])
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    summary = cluster.score_on_dask(ScoreJob(model=str(TINY), format="ids"), str(source), str(out), Client())
    assert summary.records == 2 and [r["index"] for r in lines_of(out)] == [0, 1]
