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

from .jobs import ScoreJob
from .lines import open_input, read_lines
from .output import encode_record, parse_record, write_all
from .run import StopFlag, Summary, progress_bar, window_lines

PARTITION_WINDOWS = 8  # default partition: this many read-ahead windows (refimpl.batch.run.window_lines)


def need_distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError("scoring on a Dask cluster needs dask.distributed: pip install 'refimpl[dask]'") from None
    return distributed


def score_partition(job: ScoreJob, threads: int, lines, window: int):  # runs on a worker -> a Batch
    from .. import runtime
    from .worker import score_lines

    runtime.set_threads(threads)  # thread-local: this worker thread's BLAS
    return score_lines(job, lines, window)


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
    summary, bar = Summary(workers=workers, threads=threads), progress_bar(progress, input_path)
    in_flight_limit = 2 * workers
    futures = distributed.as_completed()
    start = time.perf_counter()
    with open_input(input_path) as source, StopFlag() as flag:
        lines = read_lines(source)
        for number in itertools.count():
            chunk = list(itertools.islice(lines, partition_lines))
            if not chunk or flag.stopped:
                break
            if part_file(parts, number).exists():
                continue
            future = client.submit(score_partition, job, threads, chunk, window, pure=False)
            future.partition = number
            futures.add(future)
            while futures.count() >= in_flight_limit and not flag.stopped:
                save_partition(parts, next(futures), summary, bar)
        for future in futures:
            if flag.stopped:
                future.cancel()
            else:
                save_partition(parts, future, summary, bar)
    summary.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if flag.stopped:
        summary.interrupted = True
        return summary
    assemble(parts, output_path, summary)
    return summary


def part_file(parts: Path, number: int) -> Path:
    return parts / f"{number:08d}.jsonl"


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
