"""The scoring side of a worker process (`--workers`, Dask): one Scorer per process, loaded on first use.

This module imports nothing heavy at the top, so a fresh process can set its BLAS threads before NumPy
(and OpenBLAS) load.
"""
from __future__ import annotations

import signal
import threading

_LOCK = threading.Lock()  # a Dask worker runs tasks on several threads: load once
_SCORERS = {}  # ScoreJob -> Scorer: each process loads a model once (weights memory-mapped: shared pages)


def start_worker(threads: int) -> None:
    """Pool initializer: the BLAS thread policy; SIGINT is the parent's to handle (it stops the run)."""
    from .. import runtime

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime.tune_malloc()
    runtime.set_threads(threads)


def scorer(job):
    with _LOCK:
        if job not in _SCORERS:
            _SCORERS[job] = job.load()
        return _SCORERS[job]


def score_lines(job, lines, window: int):  # [(index, bytes)] -> Batch: records in input order
    """Score raw lines in this process, `window` lines at a time (as a local run cuts them: same batches)."""
    from .jobs import Batch

    records, tokens, padding = [], 0, 0
    for start in range(0, len(lines), window):
        for batch in scorer(job).score_window(lines[start:start + window]):
            records += batch.records
            tokens += batch.tokens
            padding += batch.padding
    records.sort(key=lambda record: record["index"])
    return Batch(records, tokens, padding)
