"""The same scoring job on a Dask distributed cluster (the optional extra `refimpl[dask]`).

    refimpl score IN -o OUT --scheduler tcp://HOST:PORT      or      score_on_dask(job, IN, OUT, client)

The client reads IN lazily and cuts it into partitions of `partition_lines` lines (default: 8 read-ahead
windows, so the batches are those of a local run and so are the bits); each partition's raw
lines go to a worker, which scores them with the Scorer it loaded once (from `job.model`, a path every
worker can read) and returns the records. The client writes each partition's records atomically
(OUT.parts/00000012.jsonl via a temporary file and os.replace), then concatenates the partitions into
OUT in input order and removes OUT.parts. After an interruption, `--resume` resubmits only the
partitions without a file. Workers run the same code as a local run: identical records (float32
rounding aside when batches are composed differently).
"""
from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from .jobs import ScoreJob  # (or a GenerateJob: the same interface)
from .lines import open_input, read_lines
from .output import encode_record, parse_record, write_all
from .run import LONG_INPUT_LINES, Interrupted, StopFlag, Summary, progress_bar, window_lines

PARTITION_WINDOWS = 8  # default partition: this many read-ahead windows (refimpl.batch.run.window_lines)


def need_distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError("scoring on a Dask cluster needs dask.distributed: pip install 'refimpl[dask]'") from None
    return distributed


class WorkerError(Exception):
    """A partition failed on a Dask worker (its model path unreadable there, ...): the message names the worker."""


def score_partition(job: ScoreJob, threads: int, lines, window: int):  # runs on a worker -> a Batch
    from .. import runtime
    from .worker import score_lines

    try:
        runtime.set_threads(threads)  # thread-local: this worker thread's BLAS
        return score_lines(job, lines, window)
    except Exception as err:  # re-raised on the client as it is, it would read as the client's own failure
        raise WorkerError(f"on Dask worker {worker_address()}: {type(err).__name__}: {err}") from None


def worker_address() -> str:
    try:
        return need_distributed().get_worker().address
    except ValueError:  # not inside a worker (called directly)
        return "(none: called outside a worker)"


def score_on_dask(job: ScoreJob, input_path: str, output_path: str, client, resume: bool = False,
                  partition_lines: Optional[int] = None, threads: int = 1,
                  progress: Optional[bool] = None) -> Summary:
    """Score `input_path` on the workers of `client` (a distributed.Client) into `output_path`."""
    distributed = need_distributed()
    if output_path == "-":
        raise ValueError("--scheduler writes partition files next to the output: pass -o FILE")
    window = window_lines(job)
    partition_lines = partition_lines or PARTITION_WINDOWS * window
    if partition_lines < 1:
        raise ValueError(f"--partition-lines must be at least 1, got {partition_lines}")
    job.load()  # a model or tokenizer problem fails here, once, with a clear message
    parts = Path(str(output_path) + ".parts")
    if not resume:
        shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    summary = Summary(workers=workers, threads=threads)
    bar = progress_bar(progress, input_path, long_input=job.batch_size or LONG_INPUT_LINES)
    in_flight_limit = 2 * workers
    futures, submitted = distributed.as_completed(), []
    start = time.perf_counter()
    try:
        with open_input(input_path) as source, StopFlag() as flag:
            lines = read_lines(source)
            for number in itertools.count():
                chunk = list(itertools.islice(lines, partition_lines))
                flag.check()
                if not chunk:
                    break
                if part_file(parts, number).exists():
                    continue
                future = client.submit(score_partition, job, threads, chunk, window, pure=False)
                future.partition = number
                futures.add(future)
                submitted.append(future)
                while futures.count() >= in_flight_limit:
                    save_next(parts, futures, summary, bar, flag)
            while futures.count():
                save_next(parts, futures, summary, bar, flag)
    except Interrupted:  # the partition files written stay; --resume submits the others
        client.cancel(submitted)
        summary.interrupted = True
    summary.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if summary.interrupted:
        return summary
    assemble(parts, output_path, summary)
    return summary


def part_file(parts: Path, number: int) -> Path:
    return parts / f"{number:08d}.jsonl"


def save_next(parts: Path, futures, summary: Summary, bar, flag: StopFlag) -> None:
    """Wait for the next finished partition (a signal ends the wait) and save it."""
    with flag.computing():
        future = next(futures)
    save_partition(parts, future, summary, bar)


def save_partition(parts: Path, future, summary: Summary, bar) -> None:
    batch = future.result()
    temporary = parts / f".{future.partition:08d}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, b"".join(encode_record(record) for record in batch.records))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, part_file(parts, future.partition))
    summary.add(batch)
    if bar is not None:
        bar.update(len(batch.records))


def assemble(parts: Path, output_path: str, summary: Summary) -> None:
    """OUT = the partition files in order (atomically), counting records and errors; then no OUT.parts."""
    temporary = f"{output_path}.tmp"
    with open(temporary, "wb") as out:
        for file in sorted(parts.glob("*.jsonl")):
            with open(file, "rb") as f:
                for line in f:
                    summary.records += 1
                    summary.errors += parse_record(line)[1]
                    out.write(line)
    os.replace(temporary, output_path)
    shutil.rmtree(parts)
