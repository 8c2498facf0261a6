"""torch's float32 exp, sin and cos on x86 CPUs (its `at::vml` functions), bit for bit: the functions of
upstream's sinusoid tables.

Upstream computes XGLM's and NEZHA's sinusoid tables in float32 even for a float64 model (their float32
"islands": XGLMSinusoidalPositionalEmbedding.get_embedding, NezhaRelativePositionsEncoding.__init__).
To reproduce such a run to 1e-10 rather than ~1e-7, every table entry must be torch's float32 value, and
torch's float32 exp/sin/cos are not correctly rounded (up to 0.6 ulp from the exact value: about 5% of
sin/cos and 1% of exp values are one ulp from the correctly rounded float32).

Which functions torch runs: `torch.exp/sin/cos` on a float32 CPU tensor go through ATen's unary kernels
(aten/src/ATen/native/cpu/UnaryOpsKernel.cpp) to `at::vml::vexp/vsin/vcos` (aten/src/ATen/cpu/vml.h).
In torch builds with MKL -- the x86-64 wheels from PyPI, torch 2.13.0 included -- vml.h replaces ATen's
own vectorised versions (SLEEF's Sleef_expf8_u10 ... under AVX2, the 16-lane ones under AVX-512) by
MKL's Vector Math Library in high-accuracy mode, over the whole contiguous tensor at once:

    vmsExp / vmsSin / vmsCos(n, in, out, VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE)

so the values are the same under every ATEN_CPU_CAPABILITY ("default", "avx2", "avx512") and for every
tensor length, with no tail computed apart. Measured with torch 2.13.0 on an AMD EPYC: identical bits under
all three capabilities, for every length from 1 to 69 and 10**5 values; a profile shows MKL's
`mkl_vml_kernel_sSin_EXHAynn` at work; SLEEF's u10 functions, called from the same library, disagree with
torch.sin/cos in ~2% and with torch.exp in ~9% of values. (SLEEF is what torch runs where ATen's
vectorised code computes exp inside a fused kernel, e.g. softmax: refimpl/torch_softmax.py.)

MKL is closed source and documents its accuracy, not its algorithms, so these functions cannot be
rewritten in NumPy: refimpl calls the same MKL functions, from the MKL runtime on PyPI
(`pip install mkl==2024.2.0`, the MKL torch 2.13.0's wheels are built with; the extra `refimpl[islands]`),
through ctypes, with MKL's threading set to sequential. MKL picks its own code path from the CPU, not from
ATEN_CPU_CAPABILITY (on AMD CPUs every path tried, MKL_ENABLE_INSTRUCTIONS=SSE4_2 ... AVX512, gave the
same bits), so the values are torch's on the machine refimpl runs on. torch builds without MKL (macOS,
ARM) compute these with SLEEF and are not reproduced here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

import numpy as np

MKL_VERSION = "2024.2.0"  # the MKL that torch 2.13.0's x86 wheels link statically (torch.__config__.show())
_VML_HA, _VML_FTZDAZ_OFF, _VML_ERRMODE_IGNORE = 0x2, 0x140000, 0x100  # mkl_vml_defines.h
_MODE = ctypes.c_int64(_VML_HA | _VML_FTZDAZ_OFF | _VML_ERRMODE_IGNORE)  # at::vml's mode, as in vml.h
_MKL_THREADING_SEQUENTIAL = 1  # mkl_service.h
_FUNCTIONS = {"exp": "vmsExp", "sin": "vmsSin", "cos": "vmsCos"}
_mkl = None


class MKLNotFound(RuntimeError):
    """MKL's runtime library (libmkl_rt) is not installed where refimpl looks for it."""


def _candidates():  # where pip's `mkl` package puts libmkl_rt, then the loader's own search path
    names = ["mkl_rt.2.dll", "mkl_rt.dll"] if os.name == "nt" else ["libmkl_rt.so.2", "libmkl_rt.so"]
    prefixes = dict.fromkeys([sys.prefix, sys.base_prefix, getattr(sys, "exec_prefix", sys.prefix)])
    for prefix in prefixes:
        for folder in ("lib", "Library/bin", "bin"):
            for name in names:
                if (Path(prefix) / folder / name).exists():
                    yield str(Path(prefix) / folder / name)
    yield from names
    found = ctypes.util.find_library("mkl_rt")
    if found:
        yield found


def mkl():  # -> the loaded libmkl_rt (loaded once, threading sequential)
    global _mkl
    if _mkl is None:
        errors = []
        for candidate in _candidates():
            try:
                library = ctypes.CDLL(candidate)
            except OSError as error:
                errors.append(f"{candidate}: {error}")
                continue
            library.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_SEQUENTIAL))
            for name in _FUNCTIONS.values():
                getattr(library, name).restype = None
            _mkl = library
            break
        else:
            raise MKLNotFound(
                "torch's float32 exp/sin/cos (needed for islands='upstream' in XGLM and NEZHA) are MKL's; "
                f"install MKL's runtime with `pip install mkl=={MKL_VERSION}` (or refimpl[islands]). Not found: "
                + "; ".join(errors[:3]))
    return _mkl


def available() -> bool:
    """Whether MKL's runtime can be loaded, i.e. whether exp/sin/cos below work on this machine."""
    try:
        mkl()
    except MKLNotFound:
        return False
    return True


def _vml(function: str, x) -> np.ndarray:  # float32 [...] -> float32 [...], MKL VML in torch's mode
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    name, library = _FUNCTIONS[function], mkl()
    limit = np.iinfo(np.int32).max  # MKL_INT is int32 (LP64), so at::vml hands MKL chunks of at most this
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, limit):
        chunk = slice(start, min(start + limit, flat_in.size))
        getattr(library, name)(ctypes.c_int(chunk.stop - chunk.start),
                               flat_in[chunk].ctypes.data_as(ctypes.c_void_p),
                               flat_out[chunk].ctypes.data_as(ctypes.c_void_p), _MODE)
    return out


def exp(x) -> np.ndarray:  # float32 [...] -> float32 [...]
    """torch.exp on a float32 CPU tensor, bit for bit."""
    return _vml("exp", x)


def sin(x) -> np.ndarray:  # float32 [...] -> float32 [...]
    """torch.sin on a float32 CPU tensor, bit for bit."""
    return _vml("sin", x)


def cos(x) -> np.ndarray:  # float32 [...] -> float32 [...]
    """torch.cos on a float32 CPU tensor, bit for bit."""
    return _vml("cos", x)
