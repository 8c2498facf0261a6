"""Process-level settings that make NumPy inference faster; opt-in, never applied on import.

NumPy allocates every temporary afresh. With glibc, arrays above the mmap threshold (128 KiB to
32 MiB, adaptive) come from fresh `mmap` pages, so each forward pass page-faults through hundreds of
megabytes of new memory. Raising the mmap and trim thresholds lets freed blocks be reused instead
(PyTorch's caching allocator does the equivalent). The `refimpl` command calls `tune_malloc()`;
library users may call it themselves. It changes nothing but speed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
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
