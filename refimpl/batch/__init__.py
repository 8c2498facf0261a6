"""`refimpl score` as a production job: streaming, in order, crash-consistent, resumable, bounded memory.

    lines.py    input read lazily as bytes; each line decoded on its own (bad UTF-8, empty, too long:
                an error record for that line, the run goes on)
    jobs.py     ScoreJob (what to compute, picklable) and Scorer (model + tokenizer): a window of raw
                lines -> records, in length-bucketed batches; the per-family record builders
    generating.py  GenerateJob and Continuer: the same interface for `refimpl generate` (continuations)
    output.py   OrderedWriter (input order, one complete flushed line per record) and --resume
    run.py      the run in this process or in --workers processes; SIGINT/SIGTERM stop cleanly
    worker.py   the worker-process side (one model per process, memory-mapped weights)
    cluster.py  the same job on a Dask distributed cluster (extra `refimpl[dask]`)

Python API:

    from refimpl.batch import ScoreJob, run_score, score_on_dask
    summary = run_score(ScoreJob(model="path/to/checkpoint"), "in.txt", "out.jsonl", workers=2)
    summary = score_on_dask(ScoreJob(model="/shared/ckpt"), "in.txt", "out.jsonl", distributed.Client(...))
    summary = run_score(GenerateJob(model="path/to/checkpoint", options=(("max_new_tokens", 8),)), "in.txt", "out.jsonl")
"""
from .cluster import WorkerError, score_on_dask
from .generating import Continuer, GenerateJob
from .jobs import ScoreJob, Scorer
from .lines import InputError, LineError
from .run import Summary, run_and_report, run_score

__all__ = ["ScoreJob", "Scorer", "GenerateJob", "Continuer", "WorkerError", "InputError", "LineError", "Summary",
           "run_score", "run_and_report", "score_on_dask"]
