"""Run a ScoreJob over a file in this process or in `--workers N` processes.

    read lines lazily (bytes) -> windows of `window` lines -> score (token-budget batches) -> OrderedWriter

Processes and threads: refimpl.runtime.plan_workers (by default a process of one BLAS thread per usable
core). Each window is cut into one part per process, of about equal work (`equal_parts`), so that the
processes finish it together; an input of one window with too little work to pay for starting them
(`share_out`) is scored in this process.
Memory is bounded by one window per process (plus the chunks in flight to workers), whatever the
input's length; the final stderr line reports the peak RSS. SIGINT / SIGTERM stop the run within one
forward pass, even inside a long line's sliding windows: every record written so far is complete and
`--resume` computes the others.

The writer can write a record only when every earlier one is written; within a window the batches
run shortest first, so records go out as each window completes.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

from .jobs import Batch, ScoreJob
from .lines import count_lines, open_input, read_lines
from .output import OrderedWriter, resume_file

WINDOW_LINES = 512  # read-ahead window: this many lines are length-sorted together, then cut into batches


def window_lines(job: ScoreJob, window: Optional[int] = None) -> int:
    return window or WINDOW_LINES


@dataclass
class Summary:
    """What a run did. Only `records` and `errors` describe the output; the rest is for stderr."""
    records: int = 0          # records in the output file (resumed ones included)
    errors: int = 0           # of which error records
    scored_now: int = 0       # lines scored by this run
    tokens: int = 0           # tokens scored by this run
    padding: int = 0          # positions its forward passes computed for padding
    seconds: float = 0.0
    workers: int = 1          # processes that scored, and the BLAS threads of each
    threads: int = 1
    interrupted: bool = False
    beyond_input: int = 0     # --resume: records in OUT whose index is past the input's last line

    def rate_line(self) -> str:
        per = max(self.seconds, 1e-9)
        waste = self.padding / max(self.tokens + self.padding, 1)
        return (f"refimpl: {self.scored_now} lines, {self.tokens} tokens in {self.seconds:.1f} s: "
                f"{self.scored_now / per:.1f} lines/s, {self.tokens / per:.0f} tokens/s; "
                f"padding {100 * waste:.1f}% of positions; {self.workers} process(es) x {self.threads} thread(s); "
                f"peak RSS {peak_rss_mib():.0f} MiB")

    def add(self, batch) -> None:  # a refimpl.batch.jobs.Batch (or the sum of a few)
        self.scored_now += len(batch.records)
        self.tokens += batch.tokens
        self.padding += batch.padding


def peak_rss_mib() -> float:
    """The peak resident memory of this process plus that of its largest finished child (a worker), MiB.
    Pages the processes share (the memory-mapped weights) count in each: an upper bound."""
    import resource

    kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
           + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kib / 1024


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while records were being computed (StopFlag.computing)."""


class StopFlag:
    """SIGINT and SIGTERM set the flag; inside `computing()` they also raise Interrupted there and then (a
    signal handler runs between two Python steps, so within one forward pass), never while a record is
    being written."""

    def __init__(self):
        self.stopped = self._computing = False

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def stop(self, *_):
        self.stopped = True
        if self._computing:
            self._computing = False
            raise Interrupted

    def check(self) -> None:
        if self.stopped:
            raise Interrupted

    @contextlib.contextmanager
    def computing(self):
        self.check()
        self._computing = True
        try:
            yield
        finally:
            self._computing = False

    def __exit__(self, *_):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def windows(lines, size: int, skip) -> Iterator[List[Tuple[int, bytes]]]:  # lines not in `skip`, `size` at a time
    todo = (item for item in lines if item[0] not in skip)
    while chunk := list(itertools.islice(todo, size)):
        yield chunk


LONG_INPUT_LINES = 8  # with no --batch-size (token-budget batches), a longer input shows the bar on a terminal


def progress_bar(enabled: Optional[bool], input_path: str = "-", long_input: int = 0):
    """tqdm on stderr: shown with --progress (enabled=True), never with False, and by default (None) on a
    terminal when the input is long: more than `long_input` lines, or stdin (its length is unknown).
    Its total is the input file's line count (one fast pass over the bytes), unknown for stdin."""
    if not (enabled or (enabled is None and sys.stderr.isatty())):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        if enabled:
            raise ValueError("--progress needs tqdm: pip install tqdm") from None
        return None
    total = count_lines(input_path)
    if not enabled and 0 <= total <= long_input:
        return None
    return tqdm(total=total if total >= 0 else None, unit="line", file=sys.stderr, dynamic_ncols=True)


def run_score(job: ScoreJob, input_path: str, output_path: str, resume: bool = False,
              workers: Optional[int] = None, threads: Optional[int] = None, window: Optional[int] = None,
              progress: Optional[bool] = None) -> Summary:
    """Score every line of `input_path` into `output_path` (JSONL, input order). Raises InputError for an
    unreadable input, ValueError / FileNotFoundError for an unusable model or arguments.
    workers, threads: None chooses (refimpl.runtime.plan_workers)."""
    from .. import runtime

    chosen = workers is None
    workers, threads = runtime.plan_workers(workers, threads)
    runtime.set_threads(threads)
    source = open_input(input_path)
    scorer = job.load()  # fails fast here, not in a worker; --workers processes load their own
    done, resumed_errors = resume_file(output_path) if resume else (set(), 0)
    bar = progress_bar(progress, input_path, long_input=job.batch_size or LONG_INPUT_LINES)
    window = window_lines(job, window)
    writer = OrderedWriter(output_path, append=resume, skip=done)
    summary = Summary(records=len(done), errors=resumed_errors)
    if bar is not None:
        bar.update(len(done))
    start = time.perf_counter()
    try:
        with source, StopFlag() as flag:
            lines = Counted(read_lines(source))
            chunks = windows(lines, window, done)
            if chosen and workers > 1:
                workers, chunks = share_out(chunks, workers, model_size(scorer))
            summary.workers, summary.threads = workers, threads
            results = (score_locally(scorer, chunks) if workers == 1 else score_in_processes(
                job, (part for chunk in chunks for part in equal_parts(chunk, workers)), workers, threads, window))
            while True:
                with flag.computing():
                    batch = next(results, None)
                if batch is None:
                    break
                writer.put(batch.records)
                summary.add(batch)
                if bar is not None:
                    bar.update(len(batch.records))
    except Interrupted:  # records still waiting for an earlier one are computed again by --resume
        summary.interrupted = True
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - start
    summary.records += writer.written
    summary.errors += writer.errors
    if not summary.interrupted:
        summary.beyond_input = sum(index >= lines.count for index in done)  # the input never reached them
    return summary


WORKER_WORK = 1e9  # lines x parameters: about 2 s of one core (lines of ~50 tokens), what starting a worker costs


def share_out(chunks, workers: int, parameters: int):
    """The windows of a run whose number of processes was chosen for it -> (workers, windows): one process
    when the input is a single window holding too little work to pay for starting the others (fewer than
    WORKER_WORK / parameters lines a process); otherwise the windows as they come."""
    ahead = list(itertools.islice(chunks, 2))
    if len(ahead) < 2 and sum(map(len, ahead)) * parameters < workers * WORKER_WORK:
        return 1, iter(ahead)
    return workers, itertools.chain(ahead, chunks)


def equal_parts(lines, parts: int) -> list:
    """Lines [(index, bytes)] -> at most `parts` non-empty lists of about equal bytes (about equal work), the
    shortest lines in the first, the longest in the last, so that each part batches as tightly as the
    whole would. Each window is cut so among the processes: they finish it together."""
    lines = sorted(lines, key=lambda item: len(item[1]))  # by bytes: about by tokens
    total, done, shares = sum(len(raw) for _, raw in lines) or 1, 0, [[]]
    for item in lines:
        if done >= total * len(shares) / parts and len(shares) < parts:
            shares.append([])
        shares[-1].append(item)
        done += len(item[1])
    return shares


def model_size(scorer) -> int:  # parameters of the loaded model
    return sum(value.size for value in scorer.model.params.values())


class Counted:
    """An iterator of (index, line) that remembers how many lines it has given."""

    def __init__(self, lines):
        self.lines, self.count = lines, 0

    def __iter__(self):
        for item in self.lines:
            self.count = item[0] + 1
            yield item


def score_locally(scorer, chunks) -> Iterator[Batch]:  # one per forward pass
    for chunk in chunks:
        yield from scorer.score_window(chunk)


def score_in_processes(job, chunks, workers: int, threads: int, window: int) -> Iterator[Batch]:
    """Windows scored by `workers` fresh processes (spawned: no forked BLAS state), 2 per worker in flight;
    results (a Batch per window) come back in submission order, so the writer's reorder buffer stays one
    window deep."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .worker import score_lines, start_worker

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=start_worker, initargs=(threads,))
    in_flight = collections.deque()
    try:
        for chunk in itertools.chain(chunks, [None]):
            if chunk is not None:
                in_flight.append(pool.submit(score_lines, job, chunk, window))
            while in_flight and (len(in_flight) >= 2 * workers or chunk is None):
                yield in_flight.popleft().result()
    except Interrupted:  # do not wait for the workers' current lines: stop them
        for process in list(pool._processes.values()):  # (the executor has no public terminate before 3.14)
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_and_report(run: Callable[[], Summary], resume_command: Optional[str], done: str = "scored") -> int:
    """Run, print the summary on stderr, and return the exit status: 0 all scored, 3 some error records,
    130 interrupted (with the command that resumes)."""
    summary = run()
    print(summary.rate_line(), file=sys.stderr)
    if summary.beyond_input:
        print(f"refimpl: warning: the output holds {summary.beyond_input} records past the input's last line: "
              "was the input changed since the interrupted run? Rerun without --resume", file=sys.stderr)
    if summary.interrupted:
        print(f"refimpl: interrupted; {summary.records} records are complete. Resume with:\n  "
              + (resume_command or "(output went to stdout: rerun with -o FILE to be able to resume)"),
              file=sys.stderr)
        return 130
    if summary.errors:
        print(f"refimpl: {summary.errors} of {summary.records} lines could not be {done} "
              "(see their \"error\" records)", file=sys.stderr)
        return 3
    return 0
