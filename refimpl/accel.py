"""The plumbing of refimpl's optional Numba kernels: is Numba there, which backend runs, on which threads.

A leaf module: it imports nothing from refimpl, and every accelerated code path depends on it (never
the reverse). Each hot loop lives in the module of its NumPy twin (`ops`, `banded_attention`,
`relative_attention`) as up to three functions with one signature:

    <name>_reference   the definition, written to be read (where it differs from the NumPy one)
    <name>_numpy       vectorised NumPy
    <name>_numba       a Numba kernel (float32 accelerator)

and the plain `<name>` asks `choose_backend` which one runs.

The one dispatch policy (`choose_backend`), in order of precedence:
1. the call's own `backend=` argument, where a function has one (the LED forwards, `banded_attention`);
2. `set_backend(name)` (also usable as a context manager), for the whole process;
3. the environment variable REFIMPL_BACKEND ("reference", "numpy" or "numba");
4. otherwise "numba" for float32 when Numba is usable, else "numpy".
float64 never runs a Numba kernel: a "numba" choice runs the NumPy code there, so float64 results are
the same bits whichever backend is chosen. Asking for "numba" where Numba is not usable is an error
that says why (see `backend_info()`).

Numba kernels run on Python threads from one persistent pool (`on_threads`), each thread with
single-threaded BLAS: OpenBLAS called from two threads at once, each multi-threaded, runs ~10x slower
(measured: 5 vs 65 GFLOP/s on 2 cores). Numba's `parallel=True` is not used: its OpenMP threads keep
spinning after a parallel region and take cores from OpenBLAS (the feed-forward product after a
`prange` GELU ran 15% slower).

Rules for every kernel: `cache=True` (compiled once per machine, stored in __pycache__),
`fastmath=False` (no reassociation: a fixed, documented sum order), float32 stays float32 (scalars made
from arrays of the right dtype, never from Python float literals), loops over 1-D slices from index 0
(no wraparound checks), and `error_model="numpy"` where a loop divides (Python's model adds a zero test
that stops LLVM from vectorising the loop: a 5x slower GELU).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import importlib
import importlib.util
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy

BACKENDS = ("reference", "numpy", "numba")
ENVIRONMENT_VARIABLE = "REFIMPL_BACKEND"

try:  # numba, and scipy's BLAS, which numba's np.dot inside a kernel calls
    import numba
    import scipy.linalg.cython_blas  # noqa: F401
    HAVE_NUMBA, NUMBA_MISSING = True, None
except ImportError as err:  # exercised in CI with numba hidden
    numba = None
    HAVE_NUMBA, NUMBA_MISSING = False, f"{err.name or err} is not installed (pip install 'refimpl[numba]')"
# numba installed without scipy: the kernels cannot run, and the user expects them to; say so once
_WARN_FALLBACK = not HAVE_NUMBA and importlib.util.find_spec("numba") is not None


def jit(**options):
    """numba.njit with refimpl's rules (cache, no fastmath, GIL released); None without Numba."""
    if not HAVE_NUMBA:
        return lambda function: None
    return numba.njit(cache=True, fastmath=False, nogil=True, **options)


# ---------------------------------------------------------------- the dispatch policy

_forced = None  # set_backend's choice


class set_backend:
    """Force a backend for the whole process ("reference", "numpy", "numba"; None: back to automatic).

    refimpl.set_backend("numpy")            # from now on
    with refimpl.set_backend("reference"):  # only inside the block
        model(input_ids=ids)
    """

    def __init__(self, name):
        global _forced
        self.previous, _forced = _forced, _checked(name, "set_backend")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _forced
        _forced = self.previous
        return False


def _checked(name, where):
    if name is not None and name not in BACKENDS:
        raise ValueError(f"{where}: backend must be one of {BACKENDS} or None, got {name!r}")
    if name == "numba" and not HAVE_NUMBA:
        raise ValueError(f"{where}: backend 'numba' requested, but Numba cannot run: {NUMBA_MISSING}")
    return name


def choose_backend(dtype, requested=None) -> str:
    """The backend a hot loop runs for arrays of `dtype`: "reference", "numpy" or "numba" (see above)."""
    name = (_checked(requested, "backend") or _forced
            or _checked(os.environ.get(ENVIRONMENT_VARIABLE) or None, ENVIRONMENT_VARIABLE))
    if name is None:
        name = "numba" if HAVE_NUMBA else "numpy"
        if _WARN_FALLBACK and _is_float32(dtype):
            _warn_fallback_once()
    if name == "numba" and not _is_float32(dtype):  # float64 is the oracle: NumPy code, the same bits
        return "numpy"
    return name


def _is_float32(dtype) -> bool:  # dtype: a numpy dtype, type or name (a dispatch runs per call: kept cheap)
    return numpy.dtype(dtype) == numpy.float32  # (str(dtype) runs Python code in numpy 2: ~10 us)


def _warn_fallback_once():
    global _WARN_FALLBACK
    _WARN_FALLBACK = False
    warnings.warn(f"numba is installed but its kernels cannot run: {NUMBA_MISSING}. float32 runs the slower "
                  "NumPy paths (refimpl.backend_info() tells what runs)", RuntimeWarning, stacklevel=3)


def dispatch(implementations, dtype, requested=None):
    """The implementation `choose_backend` picks from {"reference": f, "numpy": g, "numba": h}.

    A hot loop without a separate reference function uses its NumPy one as the definition.
    """
    name = choose_backend(dtype, requested)
    if name == "reference" and "reference" not in implementations:
        name = "numpy"
    return implementations[name]


def backend_info() -> dict:
    """Which backend runs float32 and float64 work now, and why Numba does not, if it does not."""
    return {"numba_usable": HAVE_NUMBA, "why_not": NUMBA_MISSING, "forced": _forced,
            ENVIRONMENT_VARIABLE: os.environ.get(ENVIRONMENT_VARIABLE),
            "float32": choose_backend("float32"), "float64": choose_backend("float64")}


# ---------------------------------------------------------------- threads

SMALL_WORK = 1 << 18  # below this many inner-loop elements one thread does the work: a pool costs more
# Elementwise passes that only stream memory (add, relu) gain less from a second core than waking the
# pool's sleeping thread costs on these VMs (0.2-0.4 ms, measured after a GEMM): 2 threads only above this.
# An in-place bias add over [1024, 768]: 0.10 ms on one thread, 0.44 ms on two.
STREAMING_WORK = 1 << 21


_max_threads = None  # set_max_threads' cap (None: every cpu)
CPUS = os.cpu_count() or 1  # read once: os.cpu_count() costs ~15 us, and a decoding step asks ~150 times


def set_max_threads(n) -> None:
    """Cap the threads of refimpl's kernels at `n` for the whole process (None: every cpu again).
    refimpl.runtime.set_threads sets this and the BLAS threads together (the batch job's --threads)."""
    global _max_threads
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"the thread cap must be a whole number >= 1 or None, got {n!r}")
    _max_threads = n


def threads_for(work: int, small: int = SMALL_WORK) -> int:
    """How many threads a kernel of `work` inner-loop elements uses: 1 below `small` (STREAMING_WORK for
    passes that only stream memory), else every cpu (at most set_max_threads' cap)."""
    return 1 if work < small else min(CPUS, _max_threads or CPUS)


def _openblas_local_threads(package_file, libs_dir):
    """`openblas_set_num_threads_local` of the OpenBLAS bundled in `<site-packages>/<libs_dir>`, or None.

    Thread-local in OpenBLAS's OpenMP builds only (OpenBLAS >= 0.3.27). In the pthreads builds NumPy and SciPy
    ship it sets the one process-wide count, and returns the count before (measured: a thread setting 1 after
    another's 3 gets 3): so only one thread should set and restore it at a time (see on_threads).
    """
    libdir = os.path.join(os.path.dirname(os.path.dirname(package_file)), libs_dir)
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        return setter
    return None


# which OpenBLAS a kernel calls: NumPy code calls numpy's copy; np.dot inside a Numba kernel calls scipy's
BLAS_LIBRARIES = {"numpy": "numpy.libs", "scipy": "scipy.libs"}


@functools.lru_cache(maxsize=None)
def blas_thread_setter(library: str):
    """The thread-local thread-count setter of numpy's or scipy's OpenBLAS, looked up on first use (or None)."""
    package = importlib.import_module(library)
    return _openblas_local_threads(package.__file__, BLAS_LIBRARIES[library])


@contextlib.contextmanager
def single_threaded_blas(library: str):
    """Inside the block the calling thread's calls into `library`'s BLAS are single-threaded (with NumPy's
    and SciPy's pthreads OpenBLAS: every thread's); the count before is restored at the end.

    Only the library the work calls is touched: NumPy's products between the kernels keep their threads."""
    set_threads = blas_thread_setter(library)
    previous = None if set_threads is None else set_threads(1)
    try:
        yield
    finally:
        if previous is not None:
            set_threads(previous)


_POOL = None  # one pool of worker threads for the process, created on first use


def on_threads(kernel, args, n_threads: int, blas=None) -> None:
    """kernel(*args, first, n_threads) for first = 0 .. n_threads - 1, on `n_threads` threads at once.

    Each part takes work items first, first + n_threads, ...; part 0 runs on the calling thread, the
    others on one persistent pool (starting threads afresh cost ~0.4 ms a call). blas: the OpenBLAS the
    kernel calls ("numpy", or "scipy" for np.dot inside Numba; None: none), made single-threaded for
    every part; where that cannot be set (a BLAS other than OpenBLAS) the work runs as one part.
    """
    global _POOL
    if kernel is None:
        raise ValueError(f"this kernel needs Numba, which cannot run: {NUMBA_MISSING}")
    if blas is not None and blas_thread_setter(blas) is None:
        n_threads = 1
    n_threads = max(1, int(n_threads))

    def part(first):  # on a pool thread, which runs nothing but kernel parts: its BLAS stays single-threaded
        if blas is not None:
            blas_thread_setter(blas)(1)
        kernel(*args, first, n_threads)

    # NumPy's and SciPy's OpenBLAS (pthreads builds) keep one thread count for the whole process, whatever
    # `openblas_set_num_threads_local` promises: each part restoring "its" count would leave the last one's,
    # often 1, to every later product. So the calling thread sets it once and restores it once, at the end.
    with single_threaded_blas(blas) if blas is not None else contextlib.nullcontext():
        if n_threads == 1:
            kernel(*args, 0, 1)
            return
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="refimpl")
        others = [_POOL.submit(part, first) for first in range(1, n_threads)]
        try:
            kernel(*args, 0, n_threads)
        finally:
            for future in others:
                future.result()
