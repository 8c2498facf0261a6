"""Process-level settings that make NumPy inference faster. They change nothing but speed, and nothing
applies them but an explicit call: `import refimpl` leaves the process alone. The `refimpl` command and
the benchmarks call `configure_process()`; library users may call it too, first thing:

    import refimpl.runtime
    refimpl.runtime.configure_process()   # before anything imports NumPy
    import refimpl

`tune_malloc()`: NumPy allocates every temporary afresh. With glibc, arrays above the mmap
threshold (128 KiB to 32 MiB, adaptive) come from fresh `mmap` pages, so each forward pass page-faults
through hundreds of megabytes of new memory. Raising the mmap and trim thresholds lets freed blocks be
reused instead (PyTorch's caching allocator does the equivalent). The `refimpl` command calls
`tune_malloc()`; library users may call it themselves.

`shorten_blas_spin()`, only while NumPy is not imported yet: after each call OpenBLAS keeps its idle worker threads spinning for 2^28 cycles (about
0.1 s) before they sleep. refimpl's Numba kernels run on every core right after a matrix product, and
a spinning worker takes a core from them: NEZHA's relative attention ran 30 ms per layer instead of
16 ms at 1x512 (bench/bench_nezha.py). OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when NumPy loads
it, so the setting must come first; a value the user set is kept. If you import NumPy before
refimpl, set `OPENBLAS_THREAD_TIMEOUT=20` in the environment yourself for the same effect.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_done = False


def tune_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 31) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; returns False where that is not possible."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _done


BLAS_THREAD_TIMEOUT = "20"  # OpenBLAS: idle workers sleep after 2^20 cycles (about 0.4 ms) instead of 2^28


def shorten_blas_spin() -> bool:
    """Set OPENBLAS_THREAD_TIMEOUT (unless set) while NumPy, hence OpenBLAS, is not loaded yet.

    Returns whether a timeout of the user's or ours is in effect for the OpenBLAS NumPy loads.
    """
    if "numpy" in sys.modules:
        return "OPENBLAS_THREAD_TIMEOUT" in os.environ
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)
    return True


def configure_process() -> dict:
    """Both settings above, for a process that runs refimpl (the `refimpl` command, the benchmarks).

    Returns what took effect: {"malloc_tuned": bool, "blas_spin_shortened": bool}."""
    return {"malloc_tuned": tune_malloc(), "blas_spin_shortened": shorten_blas_spin()}


# ---------------------------------------------------------------- the thread policy of batch jobs

# BLAS threads per scoring process unless --threads says otherwise. Measured (bench/bench_batch.py,
# bench/results/batch.json): with a competing CPU load, OpenBLAS's default (one thread per core)
# collapses, each product waiting for a descheduled thread; one thread per process does not, and on a
# quiet machine loses little at the batch shapes scoring runs. Throughput across cores comes from
# processes (--workers), which scale without that collapse: by default one per core the process may run
# on (bench/bench_score_e2e.py measures the arrangements, bench/results/score_e2e.json).
DEFAULT_BLAS_THREADS = 1


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask: taskset, cgroup cpusets), else the cpu count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def plan_workers(workers=None, threads=None, cpus=None) -> tuple:
    """(processes, BLAS threads per process) for a batch job (`refimpl score`, `refimpl generate` on files).

    What the user gave is kept. Otherwise every usable core (`cpus`, default usable_cpus()) runs a process
    of DEFAULT_BLAS_THREADS threads: workers = cpus // threads, at least 1. So `--threads 2` alone on
    4 cores gives 2 processes of 2 threads, and `--workers 3` alone keeps 1 thread each."""
    for name, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    threads = threads if threads is not None else DEFAULT_BLAS_THREADS
    if workers is None:
        workers = max(1, (cpus or usable_cpus()) // threads)
    return workers, threads


def set_threads(n: int) -> bool:
    """Run NumPy's BLAS on `n` threads (the whole process's count, in NumPy's pthreads OpenBLAS), cap
    refimpl's kernels at `n` threads (refimpl.accel.set_max_threads), and start child processes with `n`
    BLAS threads too: one knob, so OpenBLAS and the kernels never ask for more cores than given.

    Uses OpenBLAS's setter (refimpl.accel.blas_thread_setter); returns False where NumPy's
    BLAS offers none (then only processes started afterwards follow OPENBLAS_NUM_THREADS)."""
    os.environ["OPENBLAS_NUM_THREADS"] = str(n)  # read by the OpenBLAS of processes started from now on
    from .accel import blas_thread_setter, set_max_threads

    set_max_threads(n)
    setter = blas_thread_setter("numpy")
    if setter is None:
        return False
    setter(n)
    return True
