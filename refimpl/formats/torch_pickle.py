"""pytorch_model.bin with NumPy alone: a restricted unpickler that rebuilds tensors and runs nothing else.

`torch.save(state_dict, f)` (what `save_pretrained(safe_serialization=False)` calls) writes a zip:

    <archive>/data.pkl        a pickle of the OrderedDict; each tensor is a call
                              torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
                              whose `storage` is a persistent id ("storage", torch.FloatStorage, "<key>", "cpu", numel)
    <archive>/data/<key>      the raw bytes of each storage, stored uncompressed (so we can memory-map them)
    <archive>/byteorder       "little" or "big"; also version, .format_version, .storage_alignment, ...

Older files (`_use_new_zipfile_serialization=False`) are five pickles in a row (magic number, protocol
1001, sys info, the state dict, the list of storage keys) followed by each storage as an int64 element
count and its bytes.

A pickle is a small program: GLOBAL looks up any importable callable and REDUCE calls it, so loading
an untrusted pickle with `pickle.load` can run anything (os.system, eval, ...). Our unpickler
1. resolves only the names torch's tensor pickles use (`find_class` below) and refuses every other
   one *before* anything is called: the error is raised while the opcode naming it is read;
2. refuses the opcodes that call or mutate objects other than through REDUCE (BUILD, INST, OBJ,
   NEWOBJ, NEWOBJ_EX, EXT*), and checks at REDUCE that the callable is one of ours;
3. never touches storage bytes while unpickling: the rebuild functions return small records, and the
   arrays are made afterwards, every offset, size and stride checked against the storage length;
4. checks every length a pickle claims (BINBYTES8, BINUNICODE8, LONG4, ...) against the bytes left
   before reading it, refuses the opcodes that allocate first (BYTEARRAY8) or that torch never writes
   (out-of-band buffers), bounds the nesting depth of containers (a tuple nested 10^6 deep makes
   CPython's hash() recurse in C until the stack overflows) and the number of containers and marks
   (1-byte opcodes that each allocate an object: a memory bomb).
Storages: torch writes them uncompressed; a compressed one is read only when it claims at most
MAX_INFLATION times its compressed size (a 5 MB entry claiming 5 GB is refused unread), an encrypted
one is refused. A bfloat16 storage is decoded once, and every tensor viewing it shares that copy.
It subclasses the pure-Python `pickle._Unpickler` rather than the C one: the C unpickler sizes its
memo table from indices in the file (one flipped byte in a LONG_BINPUT asks for gigabytes), the
Python one keeps the memo in a dict.
"""
from __future__ import annotations

import collections
import io
import mmap
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from . import MAX_DIMS, CheckpointError, bfloat16_to_float32, regular_file, tensor_size

BFLOAT16 = "bfloat16"  # NumPy has no bfloat16: read as uint16, decode to float32
STORAGE_TYPES = {  # torch.<Name>Storage -> element dtype (little-endian codes; '<' flipped for big-endian files)
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": BFLOAT16,
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
}
TORCH_DTYPES = {  # torch.<dtype> names, as _rebuild_tensor_v3 receives them (uint16/32/64 only exist that way)
    "float64": "<f8", "double": "<f8", "float32": "<f4", "float": "<f4", "float16": "<f2", "half": "<f2",
    "bfloat16": BFLOAT16, "int64": "<i8", "long": "<i8", "int32": "<i4", "int": "<i4", "int16": "<i2",
    "short": "<i2", "int8": "i1", "uint8": "u1", "bool": "?", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
}
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py, legacy format
PROTOCOL_VERSION = 1001
MAX_PICKLE_BYTES = 1 << 26  # data.pkl holds ~100 bytes per tensor: a few MB even for 70B-parameter models
MAX_DEPTH = 64  # containers inside containers: a state dict needs 4 (dict -> args tuple -> size tuple)
MAX_CONTAINERS = 1 << 21  # tuples, lists, dicts, sets and marks in one pickle: 6 per tensor in torch.save files
MAX_INFLATION = 16  # a compressed storage may claim at most 16x its compressed size (float weights: ~1.1x)


# ---------------------------------------------------------------- what the pickle may build


@dataclass(frozen=True)
class StorageType:  # stands in for torch.FloatStorage etc.
    name: str
    dtype: str


@dataclass(frozen=True)
class TorchDtype:  # stands in for torch.float32 etc.
    name: str
    dtype: str


@dataclass(frozen=True)
class StorageRef:  # a persistent id: which bytes, of which element type, how many elements
    key: str
    type: StorageType
    numel: int


@dataclass(frozen=True)
class TensorRef:  # what _rebuild_tensor_v2 received; made into an array after unpickling
    storage: object
    offset: object
    size: object
    stride: object
    dtype: Optional[TorchDtype] = None


def _rebuild_tensor(storage, storage_offset, size, stride):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    return TensorRef(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):  # nn.Parameter -> its data
    return data


CALLABLES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
ALLOWED_CALLABLES = set(map(id, CALLABLES.values()))


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles torch state dicts only; see the module docstring for what is refused and why."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data, file: Path, storages: Dict[str, StorageRef], legacy: bool = False):
        source = io.BytesIO(data) if isinstance(data, bytes) else data  # bytes, or a memory map (legacy)
        super().__init__(source)
        self.file, self.storages, self.legacy = file, storages, legacy
        self.source, self.source_length = source, len(data)
        self.depths: Dict[int, tuple] = {}  # id(container) -> (container, nesting depth): kept alive, ids stay unique
        self.containers = 0

    # ------------------------------------------------ sizes checked before reading

    def bytes_left(self) -> int:  # an upper bound on what the rest of the pickle can hold
        frame = self._unframer.current_frame
        in_frame = len(frame.getbuffer()) - frame.tell() if frame is not None else 0
        return self.source_length - self.source.tell() + in_frame

    def sized(self, fmt: str, opcode: str) -> bytes:  # a length prefix, checked, then that many bytes
        length, = struct.unpack(fmt, self.read(struct.calcsize(fmt)))
        if not 0 <= length <= self.bytes_left():
            raise CheckpointError(f"{self.file}: pickle opcode {opcode} claims {length} bytes, "
                                  f"only {self.bytes_left()} are left (corrupt or hostile file)")
        data = self.read(length)
        if len(data) != length:
            raise CheckpointError(f"{self.file}: pickle truncated inside {opcode}")
        return data

    def load_binbytes(self):
        self.append(self.sized("<I", "BINBYTES"))

    def load_binbytes8(self):
        self.append(self.sized("<Q", "BINBYTES8"))

    def load_binunicode(self):
        self.append(str(self.sized("<I", "BINUNICODE"), "utf-8", "surrogatepass"))

    def load_binunicode8(self):
        self.append(str(self.sized("<Q", "BINUNICODE8"), "utf-8", "surrogatepass"))

    def load_binstring(self):
        self.append(self._decode_string(self.sized("<i", "BINSTRING")))

    def load_long4(self):
        self.append(pickle.decode_long(self.sized("<i", "LONG4")))

    def refuse_buffer(self):
        raise CheckpointError(f"{self.file}: refusing a pickle opcode torch state dicts do not use "
                              "(BYTEARRAY8 / out-of-band buffers)")

    # ------------------------------------------------ nesting depth and container count

    def counted(load, children):  # wrap a container-building opcode: count it, bound its depth
        def run(self):
            self.containers += 1
            if self.containers > MAX_CONTAINERS:
                raise CheckpointError(f"{self.file}: pickle builds more than {MAX_CONTAINERS} containers")
            kids = children(self)
            load(self)
            if kids is None:  # MARK or an empty container: depth 1 at most, nothing to record
                return
            top = self.stack[-1]  # the container built or extended
            depth = max([self.depths.get(id(k), (None, 0))[1] for k in kids], default=0) + 1
            depth = max(depth, self.depths.get(id(top), (None, 1))[1])
            if depth > MAX_DEPTH:
                raise CheckpointError(f"{self.file}: pickle nests containers more than {MAX_DEPTH} deep "
                                      "(a state dict needs a handful; corrupt or hostile file)")
            self.depths[id(top)] = (top, depth)
        return run

    def find_class(self, module, name):  # GLOBAL / STACK_GLOBAL: the only way a pickle names a callable
        if (module, name) in CALLABLES:
            return CALLABLES[(module, name)]
        if (module == "torch" and name in STORAGE_TYPES) or (module, name) == ("torch.storage", "UntypedStorage"):
            return StorageType(name, STORAGE_TYPES[name])  # UntypedStorage: bytes, typed by _rebuild_tensor_v3
        if module == "torch" and name in TORCH_DTYPES:
            return TorchDtype(name, TORCH_DTYPES[name])
        raise CheckpointError(f"{self.file}: refusing to unpickle {module}.{name}: only tensor-rebuilding "
                              "functions are allowed (a checkpoint must not run code)")

    def persistent_load(self, pid):  # ("storage", StorageType, key, location, numel[, view_metadata])
        n = 6 if self.legacy else 5
        if not (isinstance(pid, tuple) and len(pid) == n and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str) and isinstance(pid[3], str)
                and _is_count(pid[4]) and (not self.legacy or pid[5] is None)):
            raise CheckpointError(f"{self.file}: unexpected persistent id {pid!r:.200} (expected a storage)")
        ref = StorageRef(pid[2], pid[1], pid[4])
        if self.storages.setdefault(ref.key, ref) != ref:
            raise CheckpointError(f"{self.file}: storage {ref.key!r} is described twice, differently")
        return ref

    def load_reduce(self):  # REDUCE: call stack[-2] with the tuple stack[-1]; only our own callables
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in ALLOWED_CALLABLES or not isinstance(args, tuple):
            raise CheckpointError(f"{self.file}: refusing to call {type(func).__name__} while unpickling")
        self.stack[-1] = func(*args)

    def refuse_opcode(self):
        raise CheckpointError(f"{self.file}: refusing a pickle opcode torch state dicts do not use "
                              "(BUILD/INST/OBJ/NEWOBJ/EXT)")

    dispatch[pickle.REDUCE[0]] = load_reduce
    for _op in (pickle.BUILD, pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX,
                pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = refuse_opcode
    for _op in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_op[0]] = refuse_buffer
    for _op, _load in ((pickle.BINBYTES, load_binbytes), (pickle.BINBYTES8, load_binbytes8),
                       (pickle.BINUNICODE, load_binunicode), (pickle.BINUNICODE8, load_binunicode8),
                       (pickle.BINSTRING, load_binstring), (pickle.LONG4, load_long4)):
        dispatch[_op[0]] = _load
    _marked = lambda self: list(self.stack)  # noqa: E731  the items since the last MARK
    for _op, _children in ((pickle.MARK, lambda self: None), (pickle.EMPTY_LIST, lambda self: None),
                           (pickle.EMPTY_DICT, lambda self: None), (pickle.EMPTY_SET, lambda self: None),
                           (pickle.TUPLE, _marked), (pickle.LIST, _marked), (pickle.DICT, _marked),
                           (pickle.FROZENSET, _marked), (pickle.APPENDS, _marked),
                           (pickle.SETITEMS, _marked), (pickle.ADDITEMS, _marked),
                           (pickle.TUPLE1, lambda self: self.stack[-1:]),
                           (pickle.TUPLE2, lambda self: self.stack[-2:]),
                           (pickle.TUPLE3, lambda self: self.stack[-3:]),
                           (pickle.APPEND, lambda self: self.stack[-1:]),
                           (pickle.SETITEM, lambda self: self.stack[-2:])):
        dispatch[_op[0]] = counted(dispatch[_op[0]], _children)
    del _op, _load, _marked, _children, counted


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# ---------------------------------------------------------------- files -> arrays


def read_torch_file(file) -> Dict[str, np.ndarray]:
    """{name: ndarray} of a file written by torch.save(state_dict); zip or legacy format."""
    file = regular_file(file, "PyTorch checkpoint")
    try:
        with open(file, "rb") as f:
            magic = f.read(4)
        if magic.startswith(b"PK\x03\x04"):
            return _read_zip(file)
        if magic[:1] == b"\x80":
            return _read_legacy(file)
        raise CheckpointError(f"{file}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint (structures nested too deeply)") from None
    except Exception as err:  # any parse failure of untrusted bytes is a bad file, never a crash
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint "
                              f"({type(err).__name__}: {err!s:.300})") from None


def _read_zip(file: Path) -> Dict[str, np.ndarray]:
    with zipfile.ZipFile(file) as z:
        pickles = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{file}: expected one <archive>/data.pkl in the zip, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        big = prefix + "byteorder" in z.namelist() and _read_member(z, prefix + "byteorder", 16) == b"big"
        storages: Dict[str, StorageRef] = {}
        state = RestrictedUnpickler(_read_member(z, pickles[0], MAX_PICKLE_BYTES), file, storages).load()
        arrays = {}
        for key, ref in storages.items():
            name = prefix + "data/" + key
            if name not in z.NameToInfo:
                raise CheckpointError(f"{file}: storage {key!r} is missing from the archive ({name})")
            arrays[key] = _member_bytes(file, z, z.getinfo(name), _storage_nbytes(file, ref))
    return _materialize(file, state, arrays, storages, big)


def _read_member(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = z.getinfo(name)
    if info.flag_bits & 0x1:  # zipfile would ask for a password; torch never encrypts
        raise CheckpointError(f"{z.filename}: {name} is encrypted; PyTorch checkpoints are never encrypted")
    with z.open(name) as member:  # inflates at most limit + 1 bytes, whatever the entry claims
        data = member.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{z.filename}: {name} is larger than {limit} bytes")
    return data


def _member_bytes(file: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo, nbytes: int) -> np.ndarray:
    """A storage's bytes: memory-mapped when stored uncompressed (as torch writes them), else read."""
    if info.file_size != nbytes:
        raise CheckpointError(f"{file}: {info.filename} holds {info.file_size} bytes, its tensors need {nbytes}")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        if info.file_size > MAX_INFLATION * info.compress_size + 4096:
            raise CheckpointError(f"{file}: {info.filename} claims {info.file_size} bytes from {info.compress_size} "
                                  f"compressed (more than {MAX_INFLATION}x: a zip bomb?); torch stores tensors "
                                  "uncompressed")
        data = _read_member(z, info.filename, nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{file}: {info.filename} inflates to {len(data)} bytes, its header says {nbytes}")
        return np.frombuffer(data, np.uint8)
    with open(file, "rb") as f:  # the data follows the *local* header, whose extra field torch pads for alignment
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{file}: bad zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if info.compress_size != nbytes or start + nbytes > file.stat().st_size:
        raise CheckpointError(f"{file}: {info.filename} runs past the end of the file (truncated?)")
    return np.memmap(file, np.uint8, "r", offset=start, shape=(nbytes,)) if nbytes else np.zeros(0, np.uint8)


def _read_legacy(file: Path) -> Dict[str, np.ndarray]:
    storages: Dict[str, StorageRef] = {}
    # Read the pickles from a memory map: a corrupt length field then asks mmap.read for bytes that
    # are not there and gets fewer, where a file object would first allocate the claimed size.
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as f:
        def plain():  # a pickle with no globals and no storages
            return RestrictedUnpickler(f, file, {}).load()

        if plain() != MAGIC_NUMBER:
            raise CheckpointError(f"{file}: not a PyTorch checkpoint (bad magic number)")
        if plain() != PROTOCOL_VERSION:
            raise CheckpointError(f"{file}: unsupported legacy PyTorch protocol version")
        sys_info = plain()
        big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
        state = RestrictedUnpickler(f, file, storages, legacy=True).load()
        keys = plain()
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) or set(keys) != set(storages):
            raise CheckpointError(f"{file}: the storage key list does not match the storages the tensors use")
        offset, size, arrays = f.tell(), file.stat().st_size, {}
        for key in keys:  # each storage: int64 element count, then the bytes
            f.seek(offset)
            count = int.from_bytes(f.read(8), "little" if not big else "big")
            nbytes = _storage_nbytes(file, storages[key])
            if count != storages[key].numel or offset + 8 + nbytes > size:
                raise CheckpointError(f"{file}: storage {key!r} is truncated or has the wrong length")
            arrays[key] = (np.memmap(file, np.uint8, "r", offset=offset + 8, shape=(nbytes,)) if nbytes
                           else np.zeros(0, np.uint8))
            offset += 8 + nbytes
    return _materialize(file, state, arrays, storages, big)


def _storage_nbytes(file: Path, ref: StorageRef) -> int:
    return ref.numel * _itemsize(ref.type.dtype)


def _itemsize(code: str) -> int:
    return 2 if code == BFLOAT16 else np.dtype(code).itemsize


def _materialize(file, state, arrays, storages, big: bool) -> Dict[str, np.ndarray]:
    """{name: TensorRef} + storage bytes -> {name: ndarray}, every view checked against its storage."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a state dict (name -> tensor), found {type(state).__name__}")
    out, decoded = {}, {}  # decoded: (storage key, dtype) -> the storage as typed elements, made once
    for name, ref in state.items():
        if not (isinstance(name, str) and isinstance(ref, TensorRef)):
            raise CheckpointError(f"{file}: entry {name!r:.80} is not a tensor ({type(ref).__name__})")
        out[name] = _tensor(file, name, ref, arrays, big, decoded)
    return out


def _tensor(file, name, ref: TensorRef, arrays, big: bool, decoded: dict) -> np.ndarray:  # -> view [size]
    storage, offset, size, stride = ref.storage, ref.offset, ref.size, ref.stride
    if not (isinstance(storage, StorageRef) and _is_count(offset) and isinstance(size, tuple)
            and isinstance(stride, tuple) and len(size) == len(stride) <= MAX_DIMS
            and all(map(_is_count, size)) and all(map(_is_count, stride))):
        raise CheckpointError(f"{file}: tensor {name!r} has a malformed description")
    code = ref.dtype.dtype if isinstance(ref.dtype, TorchDtype) else storage.type.dtype
    item = _itemsize(code)
    data = arrays[storage.key]
    numel = data.size // item
    elements = tensor_size(size, numel)
    if elements and (offset + sum((n - 1) * s for n, s in zip(size, stride)) >= numel or elements > numel):
        raise CheckpointError(f"{file}: tensor {name!r} {list(size)} (offset {offset}, stride {list(stride)}) "
                              f"does not fit its storage of {numel} elements")
    typed = _typed_storage(data, storage.key, code, numel, big, decoded)  # [numel]
    if not elements:
        return np.zeros(size, typed.dtype)
    return np.lib.stride_tricks.as_strided(typed[offset:], shape=size, strides=[s * typed.itemsize for s in stride],
                                           writeable=False)  # [size], torch strides are in elements


def _typed_storage(data, key, code, numel, big, decoded) -> np.ndarray:  # bytes [n] -> elements [numel]
    """A storage's bytes as elements of `code`, made once per (storage, dtype): tensors viewing the same
    storage share it (a bfloat16 storage is decoded to float32 once, not once per view)."""
    if (key, code) not in decoded:
        numpy_code = "<u2" if code == BFLOAT16 else code
        typed = data[: numel * _itemsize(code)].view(numpy_code.replace("<", ">") if big else numpy_code)
        decoded[(key, code)] = bfloat16_to_float32(typed) if code == BFLOAT16 else typed
    return decoded[(key, code)]
