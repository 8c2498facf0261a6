"""The batch job on a real Dask cluster on loopback (a scheduler and 2 worker processes) against one process.

Skipped without the `dask` extra (`pip install 'refimpl[dask]'`; CI installs it)."""
import json

import pytest

distributed = pytest.importorskip("distributed")

from golden import GOLDEN  # noqa: E402
from refimpl.batch import ScoreJob, run_score, score_on_dask  # noqa: E402
from refimpl.batch import cluster as cluster_module  # noqa: E402
from refimpl.cli import main  # noqa: E402
from test_batch import environment, id_lines, prose_lines, records, same_records, write_input  # noqa: E402,F401

TINY = GOLDEN / "opt" / "preln-OPTForCausalLM"


class SimulatedCrash(Exception):
    pass


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_port=0) as cluster, distributed.Client(cluster) as c:
        yield c


def test_dask_records_equal_one_process(client, tmp_path):
    source = write_input(tmp_path / "in.txt", prose_lines(400, seed=5), {17: b"\xfe\xff", 300: b""})
    job = ScoreJob(model=str(GOLDEN.parent / "refimpl" / "data" / "opt-tiny"))
    local = run_score(job, str(source), str(tmp_path / "local"), progress=False)
    remote = score_on_dask(job, str(source), str(tmp_path / "dask"), client, partition_lines=128, progress=False)
    assert (remote.records, remote.errors) == (local.records, local.errors) == (400, 2)
    same_records(records(tmp_path / "dask"), records(tmp_path / "local"), "dask")
    assert not (tmp_path / "dask.parts").exists()


def test_cli_scheduler_and_resume_redoes_only_missing_partitions(client, tmp_path, monkeypatch, capsys):
    source = write_input(tmp_path / "in.txt", id_lines(1000, seed=6))
    base = ["score", str(source), "--format", "ids", "--model", str(TINY)]
    assert main(base + ["-o", str(tmp_path / "local")]) == 0
    out = str(tmp_path / "dask")
    saved = []
    original = cluster_module.save_partition

    def crash_after_two(parts, future, summary, bar):  # the client dies after writing two partitions
        if len(saved) == 2:
            raise SimulatedCrash
        saved.append(future.partition)
        original(parts, future, summary, bar)

    monkeypatch.setattr(cluster_module, "save_partition", crash_after_two)
    with pytest.raises(SimulatedCrash):
        main(base + ["-o", out, "--scheduler", client.scheduler.address, "--partition-lines", "100"])
    assert len(list((tmp_path / "dask.parts").glob("*.jsonl"))) == 2
    monkeypatch.setattr(cluster_module, "save_partition", original)
    capsys.readouterr()
    assert main(base + ["-o", out, "--scheduler", client.scheduler.address, "--partition-lines", "100", "--resume"]) == 0
    assert "refimpl: 800 lines" in capsys.readouterr().err  # 8 of 10 partitions scored again
    same_records(records(out), records(tmp_path / "local"), "dask resumed")


def test_dask_refuses_stdout(client, tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", id_lines(3))
    assert main(["score", str(source), "--format", "ids", "--model", str(TINY), "--scheduler",
                 client.scheduler.address]) == 2
    assert "pass -o FILE" in capsys.readouterr().err
