"""Shared pieces of the hostile-input suite (tests/test_hostile*.py): running one case in its own
interpreter under a time and memory limit, and building hostile files by hand (no torch needed).

`run_limited(code)` runs `code` in a fresh interpreter with RLIMIT_AS = MEMORY_LIMIT and a TIME_LIMIT; the
code calls `report(fn)`, which prints one JSON line: ["ok", repr] or ["error", class name, base class
names, message]. The parent then sees a crash (negative return code: a signal such as SIGSEGV/SIGBUS),
a hang (timeout) or a memory bomb (MemoryError, or the kernel killing the child) as a failure.
"""
from __future__ import annotations

import io
import json
import pickle
import resource
import struct
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_FORMATS = ROOT / "golden" / "formats"
TIME_LIMIT = 60  # seconds per case: generous, a hang is what it catches
MEMORY_LIMIT = 2 << 30  # bytes of address space: numpy + a tiny model need ~0.5 GB

PRELUDE = f"""
import json, sys, traceback
sys.path.insert(0, {str(ROOT)!r})
def report(fn):
    try:
        out = fn()
        print(json.dumps(["ok", repr(out)[:500]]))
    except Exception as e:
        print(json.dumps(["error", type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e)[:2000]]))
"""


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(code: str, timeout: float = TIME_LIMIT) -> list:
    """Run PRELUDE + code in a child interpreter; -> the JSON it reported. Fails the test on a crash or hang."""
    try:
        proc = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hang: no result within {timeout} s\n{code}") from None
    assert proc.returncode == 0, (f"crash: exit code {proc.returncode} (negative: killed by signal)\n"
                                  f"{code}\nstderr: {proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert lines, f"no report from the child\n{code}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    return json.loads(lines[-1])


def assert_clean_error(result, match: str, base: str = "ValueError"):
    """The library's own error (a subclass of `base`) whose message contains every word of `match`."""
    assert result[0] == "error", f"accepted silently: {result}"
    name, bases, message = result[1], result[2], result[3]
    assert base in bases and name not in ("RecursionError", "MemoryError", "UnicodeDecodeError"), \
        f"raw exception {name}: {message}"
    for word in match.split("|"):
        assert word.lower() in message.lower(), f"message does not name {word!r}: {message}"


# ---------------------------------------------------------------- torch.save-like files, without torch


class _Storage:  # a storage as torch pickles it: a persistent id
    def __init__(self, key, type_name, numel):
        self.key, self.type_name, self.numel = key, type_name, numel


class _Tensor:  # pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def _fake_torch():
    """Modules named torch / torch._utils holding the names torch's pickles refer to (for pickling only)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "BFloat16Storage", "HalfStorage", "DoubleStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    return torch, utils


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(sys.modules["torch"], obj.type_name), obj.key, "cpu", obj.numel)
        return None


def state_pickle(tensors: dict) -> bytes:
    """{name: _Tensor} -> the data.pkl torch.save would write (protocol 2)."""
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    torch, utils = _fake_torch()
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(OrderedDict(tensors))
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def torch_zip(path: Path, data_pkl: bytes, storages: dict, compress: bool = False) -> Path:
    """A torch.save zip: archive/data.pkl, archive/data/<key>, archive/byteorder; all deflated if `compress`."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("archive/data.pkl"), data_pkl, compress_type=method)
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/version", b"3\n")
        for key, data in storages.items():
            z.writestr(zipfile.ZipInfo(f"archive/data/{key}"), data, compress_type=method)
    return path


def patch_zip_entry(path: Path, name: str, **fields) -> None:
    """Rewrite header fields (flag_bits, file_size) of entry `name` in both its local and central headers."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, flag_at, size_at, name_at in ((b"PK\x03\x04", 6, 22, 30), (b"PK\x01\x02", 8, 24, 46)):
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            length = struct.unpack_from("<H", raw, start + name_at - (4 if signature == b"PK\x03\x04" else 18))[0]
            if bytes(raw[start + name_at:start + name_at + length]) == encoded:
                if "flag_bits" in fields:
                    struct.pack_into("<H", raw, start + flag_at, fields["flag_bits"])
                if "file_size" in fields:
                    struct.pack_into("<I", raw, start + size_at, fields["file_size"])
            start += 4
    path.write_bytes(bytes(raw))


def nested_tuple_pickle(depth: int, as_set: bool = False) -> bytes:
    """A protocol-4 pickle of {deep tuple: 0} or {deep tuple} (a set): hashing it recurses `depth` deep."""
    deep = b")" + b"\x85" * depth  # EMPTY_TUPLE, then TUPLE1 `depth` times
    if as_set:
        return b"\x80\x04\x8f(" + deep + b"\x90."  # EMPTY_SET MARK <deep> ADDITEMS STOP
    return b"\x80\x04}" + deep + b"K\x00s."  # EMPTY_DICT <deep> BININT1 0 SETITEM STOP


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data
