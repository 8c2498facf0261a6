"""The PyTorch checkpoint reader (refimpl/formats/torch_pickle.py) at every check's edge, on files built
byte by byte from the format specifications: pickle opcodes (Lib/pickletools.py), torch.save's zip layout
(<archive>/data.pkl, <archive>/byteorder, <archive>/data/<key>, each storage stored after its zip local
header) and the older layout (five pickles, then each storage as an int64 element count and its bytes).

Expected tensors follow from the bytes written (a storage of known values viewed with a known offset,
size and stride); tests/test_mutation_formats_live.py checks the same hand-built files against torch.load.
Each limit is probed on both sides: the largest accepted value and the smallest refused one.
"""
from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from refimpl.checkpoint import CheckpointError
from refimpl.formats import torch_pickle
from refimpl.formats.torch_pickle import (MAX_CONTAINERS, MAX_DEPTH, MAX_INFLATION, MAX_PICKLE_BYTES,
                                          read_torch_file)

# ---------------------------------------------------------------- pickles, opcode by opcode

PROTO2, STOP, MARK, TUPLE, TUPLE1, POP, NONE, FALSE = b"\x80\x02", b".", b"(", b"t", b"\x85", b"0", b"N", b"\x89"
ORDERED_DICT = b"ccollections\nOrderedDict\n)R"  # GLOBAL collections.OrderedDict, EMPTY_TUPLE, REDUCE


def glob(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:  # BINUNICODE: 4-byte little-endian length, then UTF-8
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def integer(n: int) -> bytes:  # BININT1 for 0..255, else BININT (signed 4 bytes)
    return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)


def tup(*items: bytes) -> bytes:  # MARK items TUPLE
    return MARK + b"".join(items) + TUPLE


def ints(values) -> bytes:
    return tup(*(integer(v) for v in values))


def pid(key="0", storage="FloatStorage", numel=4, legacy=False, module="torch", fields=None) -> bytes:
    """A storage's persistent id ("storage", torch.<storage>, key, "cpu", numel[, None]), then BINPERSID."""
    if fields is None:
        fields = [text("storage"), glob(module, storage), text(key), text("cpu"), integer(numel)]
        fields += [NONE] if legacy else []
    return tup(*fields) + b"Q"


def tensor(storage: bytes, offset=0, size=(4,), stride=(1,), version="v2", dtype="float32") -> bytes:
    """torch._utils._rebuild_tensor[_v2|_v3](storage, offset, size, stride, ...) as torch pickles it."""
    head = (storage, offset if isinstance(offset, bytes) else integer(offset),
            size if isinstance(size, bytes) else ints(size), stride if isinstance(stride, bytes) else ints(stride))
    if version == "v1":
        return glob("torch._utils", "_rebuild_tensor") + tup(*head) + b"R"
    if version == "v3":
        return glob("torch._utils", "_rebuild_tensor_v3") + tup(*head, FALSE, ORDERED_DICT, glob("torch", dtype)) + b"R"
    return glob("torch._utils", "_rebuild_tensor_v2") + tup(*head, FALSE, ORDERED_DICT) + b"R"


def parameter(tensor_bytes: bytes) -> bytes:  # torch._utils._rebuild_parameter(data, requires_grad, hooks)
    return glob("torch._utils", "_rebuild_parameter") + tup(tensor_bytes, b"\x88", ORDERED_DICT) + b"R"


def state(*entries) -> bytes:  # an OrderedDict {name: value} filled by SETITEMS, then STOP
    return PROTO2 + ORDERED_DICT + MARK + b"".join(text(k) + v for k, v in entries) + b"u" + STOP


def floats(n: int, start: float = 0.0, order: str = "<") -> bytes:
    return (np.arange(n, dtype=np.float32) + np.float32(start)).astype(order + "f4").tobytes()


def zip_file(pickled: bytes, storages=(), byteorder=b"little", prefix="archive", compress=zipfile.ZIP_STORED,
             extra_members=()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pickled)
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages:
            z.writestr(f"{prefix}/data/{key}", data, compress_type=compress)
        z.writestr(f"{prefix}/version", "3\n")
        for name, data in extra_members:
            z.writestr(name, data)
    return buffer.getvalue()


def legacy_file(pickled_state: bytes, keys, storages, magic=0x1950A86A20F9469CFC6C, protocol=1001,
                sys_info="default", big=False) -> bytes:
    """The pre-zip torch.save layout: magic, protocol, sys info, the state, the storage keys, the storages."""
    import pickle

    if sys_info == "default":
        sys_info = {"protocol_version": 1001, "little_endian": not big, "type_sizes": {"int": 4, "long": 8}}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (magic, protocol, sys_info))
    body = b"".join(struct.pack(">q" if big else "<q", count) + data for count, data in storages)
    return head + pickled_state + pickle.dumps(list(keys), protocol=2) + body


def central_record(data: bytes, name: str) -> int:
    """Offset of the central-directory record of member `name` (signature PK\\x01\\x02)."""
    at = data.rindex(b"PK\x05\x06")
    at = struct.unpack("<I", data[at + 16:at + 20])[0]  # the end record's central directory offset
    while data[at:at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[at + 28:at + 34])
        if data[at + 46:at + 46 + name_len] == name.encode():
            return at
        at += 46 + name_len + extra_len + comment_len
    raise KeyError(name)


def local_record(data: bytes, name: str) -> int:
    return struct.unpack("<I", data[central_record(data, name) + 42:][:4])[0]


def patch(data: bytes, at: int, fmt: str, value) -> bytes:
    raw = bytearray(data)
    struct.pack_into(fmt, raw, at, value)
    return bytes(raw)


def read(tmp_path, data: bytes, name="pytorch_model.bin"):
    file = tmp_path / name
    file.write_bytes(data)
    return read_torch_file(file)


def refused(tmp_path, data: bytes, match: str):
    with pytest.raises(CheckpointError, match=match):
        read(tmp_path, data)


def one_float_tensor(offset=0, size=(4,), stride=(1,), numel=4) -> bytes:
    return state(("w", tensor(pid("0", numel=numel), offset, size, stride)))


# ---------------------------------------------------------------- what torch writes is read as torch reads it


def test_views_of_one_storage_with_offsets_strides_and_broadcast(tmp_path):
    data = floats(6)  # storage [0 1 2 3 4 5]
    pickled = state(("a", tensor(pid("0", numel=6), 0, (2, 3), (3, 1))),
                    ("t", tensor(pid("0", numel=6), 0, (3, 2), (1, 3))),  # a transpose
                    ("s", tensor(pid("0", numel=6), 1, (2,), (2,))),  # offset 1, stride 2: [1 3]
                    ("b", tensor(pid("0", numel=6), 5, (3,), (0,))),  # stride 0: [5 5 5]
                    ("e", tensor(pid("0", numel=6), 6, (0, 3), (3, 1))))  # no element, offset at the end
    out = read(tmp_path, zip_file(pickled, [("0", data)]))
    storage = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(out["a"], storage.reshape(2, 3))
    np.testing.assert_array_equal(out["t"], storage.reshape(2, 3).T)
    np.testing.assert_array_equal(out["s"], [1, 3])
    np.testing.assert_array_equal(out["b"], [5, 5, 5])
    assert out["e"].shape == (0, 3) and out["e"].dtype == np.float32
    assert all(v.dtype == np.float32 for v in out.values())
    assert not any(out[k].flags.writeable for k in "atsb")  # views of the file's bytes


def test_every_rebuild_function_and_the_parameter_wrapper(tmp_path):
    pickled = state(("v1", tensor(pid("0", numel=4), 1, (3,), (1,), version="v1")),
                    ("v2", tensor(pid("0", numel=4), 0, (2,), (2,))),
                    ("p", parameter(tensor(pid("0", numel=4), 2, (2,), (1,)))),
                    ("v3", tensor(pid("1", "UntypedStorage", 6, module="torch.storage"), 0, (3,), (1,),
                                  version="v3", dtype="uint16")))
    out = read(tmp_path, zip_file(pickled, [("0", floats(4)), ("1", np.array([7, 8, 9], "<u2").tobytes())]))
    np.testing.assert_array_equal(out["v1"], [1, 2, 3])
    np.testing.assert_array_equal(out["v2"], [0, 2])
    np.testing.assert_array_equal(out["p"], [2, 3])
    assert out["v3"].dtype == np.uint16
    np.testing.assert_array_equal(out["v3"], [7, 8, 9])


@pytest.mark.parametrize("dtype,torch_name", [("float64", "double"), ("float32", "float"), ("float16", "half"),
                                              ("int64", "long"), ("int32", "int"), ("int16", "short"),
                                              ("int8", "int8"), ("uint8", "uint8"), ("bool", "bool"),
                                              ("uint32", "uint32"), ("uint64", "uint64")])
def test_rebuild_v3_reads_each_torch_dtype_from_untyped_bytes(tmp_path, dtype, torch_name):
    values = np.array([1, 0, 1, 1], dtype=dtype)
    storage = pid("0", "UntypedStorage", values.nbytes, module="torch.storage")
    out = read(tmp_path, zip_file(state(("x", tensor(storage, 0, (2, 2), (2, 1), "v3", torch_name))),
                                  [("0", values.tobytes())]))
    assert out["x"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out["x"], values.reshape(2, 2))


def test_bfloat16_storage_is_decoded_and_read_only(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x4049, 0x0000], "<u2")  # bfloat16 1.0, -2.0, 3.140625, 0.0
    pickled = state(("a", tensor(pid("0", "BFloat16Storage", 4), 0, (4,), (1,))),
                    ("b", tensor(pid("0", "BFloat16Storage", 4), 1, (2,), (1,))))
    out = read(tmp_path, zip_file(pickled, [("0", bits.tobytes())]))
    np.testing.assert_array_equal(out["a"], np.array([1.0, -2.0, 3.140625, 0.0], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([-2.0, 3.140625], np.float32))
    # both views share one decoded copy: writing through one would change the other, so neither is writable
    assert not out["a"].flags.writeable and not out["b"].flags.writeable


def test_big_endian_zip(tmp_path):
    out = read(tmp_path, zip_file(one_float_tensor(), [("0", floats(4, 1.5, ">"))], byteorder=b"big"))
    np.testing.assert_array_equal(out["w"], [1.5, 2.5, 3.5, 4.5])


def test_zip_without_byteorder_record_is_little_endian(tmp_path):  # torch < 1.10 wrote no byteorder
    out = read(tmp_path, zip_file(one_float_tensor(), [("0", floats(4, 1.5))], byteorder=None))
    np.testing.assert_array_equal(out["w"], [1.5, 2.5, 3.5, 4.5])


def test_archive_name_is_whatever_torch_chose(tmp_path):  # torch names the folder after the file
    out = read(tmp_path, zip_file(one_float_tensor(), [("0", floats(4))], prefix="my_model"))
    np.testing.assert_array_equal(out["w"], [0, 1, 2, 3])


def test_uncompressed_storages_are_memory_mapped(tmp_path):
    out = read(tmp_path, zip_file(one_float_tensor(), [("0", floats(4))]))
    base = out["w"]
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap), "a stored (uncompressed) storage must be mapped, not read"


def test_storage_data_after_a_padded_local_header(tmp_path):
    """torch pads the local header's extra field for alignment; the data starts after name and extra."""
    pickled = one_float_tensor()
    plain = zip_file(pickled, [("0", floats(4, 10))])
    info_at = local_record(plain, "archive/data/0")
    name_len = struct.unpack("<H", plain[info_at + 26:info_at + 28])[0]
    pad = 36  # insert 36 bytes of extra field after the name, and shift every later offset
    cut = info_at + 30 + name_len
    raw = bytearray(plain[:cut] + b"\x00" * pad + plain[cut:])
    struct.pack_into("<H", raw, info_at + 28, pad)
    end = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<I", raw, end + 16, struct.unpack_from("<I", raw, end + 16)[0] + pad)
    at = struct.unpack_from("<I", raw, end + 16)[0]
    while raw[at:at + 4] == b"PK\x01\x02":  # central records of members after this one move by `pad`
        offset = struct.unpack_from("<I", raw, at + 42)[0]
        if offset > info_at:
            struct.pack_into("<I", raw, at + 42, offset + pad)
        n, e, c = struct.unpack_from("<HHH", raw, at + 28)
        at += 46 + n + e + c
    out = read(tmp_path, bytes(raw))
    np.testing.assert_array_equal(out["w"], [10, 11, 12, 13])


def test_storage_ending_exactly_at_the_end_of_the_file(tmp_path):
    """A local header whose extra field puts the data at the file's last bytes: read, not 'past the end'."""
    data = zip_file(one_float_tensor(), [("0", floats(4))])
    at = local_record(data, "archive/data/0")
    name_len = struct.unpack("<H", data[at + 26:at + 28])[0]
    extra = len(data) - 16 - (at + 30 + name_len)  # the 16 data bytes become the file's last 16
    out = read(tmp_path, patch(data, at + 28, "<H", extra))
    np.testing.assert_array_equal(out["w"], np.frombuffer(data[-16:], "<f4"))


def test_empty_string_names_and_a_state_dict_built_with_mark_dict(tmp_path):
    pickled = PROTO2 + MARK + text("") + tensor(pid("0"), 0, (4,), (1,)) + b"d" + STOP  # MARK ... DICT
    out = read(tmp_path, zip_file(pickled, [("0", floats(4))]))
    assert list(out) == [""]
    np.testing.assert_array_equal(out[""], [0, 1, 2, 3])
    assert read(tmp_path, zip_file(PROTO2 + b"(d.", [])) == {}  # an empty dict built from an empty MARK


def test_32_dimensions_are_read(tmp_path):
    size, stride = (1,) * 31 + (2,), (1,) * 32
    out = read(tmp_path, zip_file(state(("w", tensor(pid("0", numel=2), 0, size, stride))), [("0", floats(2))]))
    assert out["w"].shape == size


def test_zero_element_storage_with_a_zero_element_tensor(tmp_path):
    pickled = state(("w", tensor(pid("0", "ByteStorage", 0), 0, (0,), (1,))))
    out = read(tmp_path, zip_file(pickled, [("0", b"")]))
    assert out["w"].shape == (0,) and out["w"].dtype == np.uint8


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_view_of_an_empty_storage_is_refused(tmp_path, container):
    if container == "zip":
        data = zip_file(state(("w", tensor(pid("0", "ByteStorage", 0), 0, (1,), (1,)))), [("0", b"")])
    else:
        data = legacy_file(state(("w", tensor(pid("0", "ByteStorage", 0, legacy=True), 0, (1,), (1,)))),
                           ["0"], [(0, b"")])
    refused(tmp_path, data, r"tensor 'w' \[1\] .* does not fit its storage of 0 elements")


# ---------------------------------------------------------------- the legacy (pre-zip) layout


def legacy_two_storages(counts=(4, 2), keys=("0", "1"), big=False, size=(4,), sys_info="default"):
    order = ">" if big else "<"
    pickled = state(("a", tensor(pid("0", numel=4, legacy=True), 0, size, (1,))),
                    ("b", tensor(pid("1", numel=2, legacy=True), 0, (2,), (1,))))
    return legacy_file(pickled, keys, [(counts[0], floats(4, 0, order)), (counts[1], floats(2, 10, order))],
                       big=big, sys_info=sys_info)


@pytest.mark.parametrize("big", [False, True])
def test_legacy_file_with_two_storages(tmp_path, big):
    out = read(tmp_path, legacy_two_storages(big=big))
    np.testing.assert_array_equal(out["a"], [0, 1, 2, 3])
    np.testing.assert_array_equal(out["b"], [10, 11])


@pytest.mark.parametrize("sys_info", [None, {"protocol_version": 1001}])
def test_legacy_sys_info_without_byte_order_means_little_endian(tmp_path, sys_info):
    out = read(tmp_path, legacy_two_storages(sys_info=sys_info))
    np.testing.assert_array_equal(out["b"], [10, 11])


def test_legacy_view_past_its_storage_is_refused_even_if_the_next_storage_follows(tmp_path):
    refused(tmp_path, legacy_two_storages(size=(5,)), r"tensor 'a' \[5\] .* does not fit its storage of 4 elements")


@pytest.mark.parametrize("field,value,match", [
    ("magic", 0x1950A86A20F9469CFC6D, "bad magic number"),
    ("protocol", 1002, "unsupported legacy PyTorch protocol version"),
])
def test_legacy_header_checks(tmp_path, field, value, match):
    pickled = state(("w", tensor(pid("0", numel=4, legacy=True))))
    refused(tmp_path, legacy_file(pickled, ["0"], [(4, floats(4))], **{field: value}), match)


@pytest.mark.parametrize("case", ["wrong count", "truncated", "keys as a tuple", "key not a string",
                                  "extra key", "missing key"])
def test_legacy_storage_table_checks(tmp_path, case):
    import pickle

    if case == "wrong count":
        data = legacy_two_storages(counts=(4, 3))
    elif case == "truncated":
        data = legacy_two_storages()[:-1]
    else:
        keys = {"keys as a tuple": ("0", "1"), "key not a string": ["0", 1], "extra key": ["0", "1", "2"],
                "missing key": ["0"]}[case]
        good = legacy_two_storages()
        old, new = pickle.dumps(["0", "1"], protocol=2), pickle.dumps(keys, protocol=2)
        data = good.replace(old, new)
    match = ("storage '1' is truncated or has the wrong length" if case in ("wrong count", "truncated")
             else "the storage key list does not match the storages the tensors use")
    refused(tmp_path, data, match)


# ---------------------------------------------------------------- zip layout checks


def test_one_data_pkl_is_required(tmp_path):
    two = zip_file(one_float_tensor(), [("0", floats(4))], extra_members=[("other/data.pkl", one_float_tensor())])
    refused(tmp_path, two, r"expected one <archive>/data.pkl in the zip, found \['archive/data.pkl', "
                           r"'other/data.pkl'\]")
    refused(tmp_path, zip_file(one_float_tensor(), [], prefix="a/b"), r"found \[\]")


def test_missing_storage_member(tmp_path):
    refused(tmp_path, zip_file(one_float_tensor(), []), r"storage '0' is missing from the archive \(archive/data/0\)")


def test_storage_member_of_the_wrong_size(tmp_path):
    refused(tmp_path, zip_file(one_float_tensor(), [("0", floats(5))]),
            "archive/data/0 holds 20 bytes, its tensors need 16")


@pytest.mark.parametrize("size", [16, 17])
def test_byteorder_record_size_bound(tmp_path, size):
    data = zip_file(one_float_tensor(), [("0", floats(4))], byteorder=b"l" * size)
    if size == 16:  # the bound is inclusive: anything that is not "big" reads as little-endian
        np.testing.assert_array_equal(read(tmp_path, data)["w"], [0, 1, 2, 3])
    else:
        refused(tmp_path, data, "archive/byteorder is larger than 16 bytes")


def test_data_pkl_size_bound(tmp_path):
    pickled = one_float_tensor()
    at_limit = zip_file(pickled + b"\x00" * (MAX_PICKLE_BYTES - len(pickled)), [("0", floats(4))])
    np.testing.assert_array_equal(read(tmp_path, at_limit)["w"], [0, 1, 2, 3])  # bytes after STOP are ignored
    over = zip_file(pickled + b"\x00" * (MAX_PICKLE_BYTES + 1 - len(pickled)), [("0", floats(4))])
    refused(tmp_path, over, f"archive/data.pkl is larger than {1 << 26} bytes")


def test_bad_local_header_signature_of_a_storage(tmp_path):
    data = zip_file(one_float_tensor(), [("0", floats(4))])
    refused(tmp_path, patch(data, local_record(data, "archive/data/0") + 3, "<B", 5),
            "bad zip local header for archive/data/0")


def test_local_header_pointing_past_the_end(tmp_path):
    data = zip_file(one_float_tensor(), [("0", floats(4))])
    at = local_record(data, "archive/data/0")
    name_len = struct.unpack("<H", data[at + 26:at + 28])[0]
    extra = len(data) - 15 - (at + 30 + name_len)  # the 16 data bytes would end one byte past the file
    refused(tmp_path, patch(data, at + 28, "<H", extra), r"archive/data/0 runs past the end of the file")


def test_stored_size_differing_from_the_file_size(tmp_path):
    data = zip_file(one_float_tensor(), [("0", floats(4))])
    refused(tmp_path, patch(data, central_record(data, "archive/data/0") + 20, "<I", 20),  # compressed size
            r"archive/data/0 runs past the end of the file")


def test_encrypted_flag_on_a_stored_storage(tmp_path):
    data = zip_file(one_float_tensor(), [("0", floats(4))])
    data = patch(data, central_record(data, "archive/data/0") + 8, "<H", 1)
    refused(tmp_path, data, "archive/data/0 is encrypted")


def deflated_bytes_of_size(total: int) -> bytes:  # `total` bytes whose deflated size is known in advance
    return bytes(total)


def test_compressed_storage_inflating_short_of_its_size(tmp_path):
    """Central directory claims 16 bytes; the deflate stream (with a CRC of what it holds) inflates to 8."""
    pickled = state(("w", tensor(pid("0", "ByteStorage", 16), 0, (16,), (1,))))
    data = zip_file(pickled, [("0", bytes(range(8)))], compress=zipfile.ZIP_DEFLATED)
    data = patch(data, central_record(data, "archive/data/0") + 24, "<I", 16)  # the uncompressed size
    refused(tmp_path, data, "archive/data/0 inflates to 8 bytes, its header says 16")


def compressed_member_sizes(n: int):
    data = zip_file(b"", [("0", bytes(n))], compress=zipfile.ZIP_DEFLATED)
    at = central_record(data, "archive/data/0")
    compressed, size = struct.unpack("<II", data[at + 20:at + 28])
    return compressed, size


def inflation_edge(extra: int) -> int:
    """The smallest n whose n zero bytes deflate to c bytes with n == MAX_INFLATION * c + 4096 + extra."""
    for n in range(4096, 20000):
        c, _ = compressed_member_sizes(n)
        if n == MAX_INFLATION * c + 4096 + extra:
            return n
    raise AssertionError("no size found")


@pytest.mark.parametrize("extra", [0, 1])
def test_compressed_storage_inflation_bound(tmp_path, extra):
    n = inflation_edge(extra)
    pickled = state(("w", tensor(pid("0", "ByteStorage", n), 0, (n,), (1,))))
    data = zip_file(pickled, [("0", bytes(n))], compress=zipfile.ZIP_DEFLATED)
    c = n - 4096 - extra
    if extra == 0:  # exactly MAX_INFLATION times the compressed size (plus 4096): read
        assert c % MAX_INFLATION == 0
        out = read(tmp_path, data)
        assert out["w"].shape == (n,) and not out["w"].any()
    else:
        refused(tmp_path, data, f"archive/data/0 claims {n} bytes from {c // MAX_INFLATION} compressed "
                                r"\(more than 16x")


@pytest.mark.parametrize("head", [b"hello", b"\x00\x80", b"P"])
def test_neither_zip_nor_pickle(tmp_path, head):
    refused(tmp_path, head + bytes(20), r"not a PyTorch checkpoint \(neither a zip archive nor a pickle\)")


# ---------------------------------------------------------------- the restricted unpickler's own checks


def unpickled(tmp_path, pickled: bytes, storages=()):
    return read(tmp_path, zip_file(pickled, storages))


def test_state_must_be_a_dict_of_named_tensors(tmp_path):
    refused(tmp_path, zip_file(PROTO2 + b"]" + STOP), r"expected a state dict \(name -> tensor\), found list")
    refused(tmp_path, zip_file(state(("w", integer(3)))), r"entry 'w' is not a tensor \(int\)")
    key_not_text = PROTO2 + b"}" + integer(7) + tensor(pid("0")) + b"s" + STOP
    refused(tmp_path, zip_file(key_not_text, [("0", floats(4))]), r"entry 7 is not a tensor \(TensorRef\)")


@pytest.mark.parametrize("key", ["storage ref", "storage type", "dtype", "tensor"])
def test_records_used_as_dict_keys_are_named_not_a_crash(tmp_path, key):
    """The unpickler's records are hashable values: a pickle keying a dict by one gets the state-dict check."""
    obj = {"storage ref": pid("0"), "storage type": glob("torch", "FloatStorage"), "dtype": glob("torch", "float32"),
           "tensor": tensor(pid("0"))}[key]
    pickled = PROTO2 + b"}" + obj + integer(1) + b"s" + STOP
    refused(tmp_path, zip_file(pickled, [("0", floats(4))]), r"entry .* is not a tensor \(int\)")


@pytest.mark.parametrize("fields,what", [
    ([text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), integer(4), NONE], "six fields"),
    ([text("storag"), glob("torch", "FloatStorage"), text("0"), text("cpu"), integer(4)], "not 'storage'"),
    ([text("storage"), text("FloatStorage"), text("0"), text("cpu"), integer(4)], "type a string"),
    ([text("storage"), glob("torch", "FloatStorage"), integer(0), text("cpu"), integer(4)], "key an int"),
    ([text("storage"), glob("torch", "FloatStorage"), text("0"), integer(0), integer(4)], "location an int"),
    ([text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), b"J\xff\xff\xff\xff"], "numel -1"),
    ([text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), b"\x88"], "numel True"),
    ([text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), b"G@\x10\x00\x00\x00\x00\x00\x00"],
     "numel 4.0"),
])
def test_malformed_persistent_ids(tmp_path, fields, what):
    refused(tmp_path, zip_file(state(("w", tensor(pid(fields=fields)))), [("0", floats(4))]),
            r"unexpected persistent id .* \(expected a storage\)")


def test_persistent_id_as_a_list_is_refused(tmp_path):
    fields = [text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), integer(4)]
    as_list = MARK + b"".join(fields) + b"l" + b"Q"  # MARK ... LIST, BINPERSID
    refused(tmp_path, zip_file(state(("w", tensor(as_list))), [("0", floats(4))]), "unexpected persistent id")


def test_legacy_persistent_id_with_view_metadata_is_refused(tmp_path):
    fields = [text("storage"), glob("torch", "FloatStorage"), text("0"), text("cpu"), integer(4), ints((0, 4))]
    pickled = state(("w", tensor(pid(fields=fields))))
    refused(tmp_path, legacy_file(pickled, ["0"], [(4, floats(4))]), "unexpected persistent id")


def test_one_storage_described_twice_differently(tmp_path):
    pickled = state(("a", tensor(pid("0", numel=4))), ("b", tensor(pid("0", numel=5), 0, (2,), (1,))))
    refused(tmp_path, zip_file(pickled, [("0", floats(4))]), "storage '0' is described twice, differently")


@pytest.mark.parametrize("module,name", [("torch", "load"), ("torch", "FancyStorage"), ("numpy", "float32"),
                                         ("torch.storage", "FloatStorage"), ("torch.storage", "float32"),
                                         ("os", "UntypedStorage"), ("torch._utils", "OrderedDict")])
def test_only_torch_tensor_names_are_resolved(tmp_path, module, name):
    refused(tmp_path, zip_file(PROTO2 + glob(module, name) + STOP),
            f"refusing to unpickle {module}.{name}: only tensor-rebuilding functions are allowed")


@pytest.mark.parametrize("func,args", [(glob("torch", "FloatStorage"), b")"), (text("f"), b")"),
                                       (glob("collections", "OrderedDict"), b"]"),
                                       (glob("torch._utils", "_rebuild_tensor_v2"), NONE)])
def test_reduce_calls_only_our_callables_with_a_tuple(tmp_path, func, args):
    refused(tmp_path, zip_file(PROTO2 + func + args + b"R" + STOP), "refusing to call")


@pytest.mark.parametrize("opcode", [b"b", b"i", b"o", b"\x81", b"\x92", b"\x82", b"\x83", b"\x84"])
def test_opcodes_that_call_or_patch_objects_are_refused(tmp_path, opcode):  # BUILD INST OBJ NEWOBJ(_EX) EXT1/2/4
    pickled = PROTO2 + ORDERED_DICT + MARK + text("x") + opcode + bytes(8) + STOP
    refused(tmp_path, zip_file(pickled), r"refusing a pickle opcode torch state dicts do not use "
                                         r"\(BUILD/INST/OBJ/NEWOBJ/EXT\)")


@pytest.mark.parametrize("opcode", [b"\x96", b"\x97", b"\x98"])  # BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER
def test_buffer_opcodes_are_refused(tmp_path, opcode):
    refused(tmp_path, zip_file(PROTO2 + opcode + bytes(8) + STOP),
            r"refusing a pickle opcode torch state dicts do not use \(BYTEARRAY8 / out-of-band buffers\)")


@pytest.mark.parametrize("what,value", [
    ("storage", integer(3)), ("offset", b"J\xff\xff\xff\xff"), ("offset", b"\x88"),
    ("size", MARK + integer(4) + b"l"), ("stride", MARK + integer(1) + b"l"), ("size", ints((2, 2))),
    ("size", ints((-1,))), ("stride", ints((-1,))), ("size", ints((1,) * 33)),
])
def test_malformed_tensor_descriptions(tmp_path, what, value):
    parts = {"storage": pid("0"), "offset": 0, "size": (4,), "stride": (1,)}
    parts[what] = value
    if what == "size" and value == ints((1,) * 33):
        parts["stride"] = ints((1,) * 33)
    pickled = state(("w", tensor(parts["storage"], parts["offset"], parts["size"], parts["stride"])))
    refused(tmp_path, zip_file(pickled, [("0", floats(4))]), "tensor 'w' has a malformed description")


@pytest.mark.parametrize("offset,size,stride,fits", [
    (0, (4,), (1,), True), (1, (4,), (1,), False), (0, (2,), (3,), True), (0, (3,), (2,), False),
    (3, (1,), (1,), True), (4, (1,), (1,), False), (0, (2, 2), (2, 1), True), (0, (2, 2), (3, 1), False),
    # five elements out of four (a broadcast view, stride 0): torch.load accepts it, refimpl refuses a tensor with
    # more elements than its storage by design (a 32-dim stride-0 view could claim 10**192 elements)
    (0, (5,), (0,), False),
])
def test_views_at_the_edge_of_their_storage(tmp_path, offset, size, stride, fits):
    data = zip_file(one_float_tensor(offset, size, stride), [("0", floats(4))])
    if fits:
        storage = np.arange(4, dtype=np.float32)
        want = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * 4 for s in stride])
        np.testing.assert_array_equal(read(tmp_path, data)["w"], want)
    else:
        refused(tmp_path, data, r"tensor 'w' .* does not fit its storage of 4 elements")


# ---------------------------------------------------------------- lengths the pickle claims


@pytest.mark.parametrize("claim,ok", [(3, True), (4, False)])
def test_claimed_length_against_the_bytes_left(tmp_path, claim, ok):
    """BINUNICODE claiming `claim` bytes with 3 left ("ab."): 3 is read (then the pickle has no STOP), 4 refused."""
    data = zip_file(PROTO2 + b"X" + struct.pack("<I", claim) + b"ab.")
    if ok:
        refused(tmp_path, data, "not a readable PyTorch checkpoint")
    else:
        refused(tmp_path, data, r"pickle opcode BINUNICODE claims 4 bytes, only 3 are left")


@pytest.mark.parametrize("claim,ok", [(3, True), (4, False)])
def test_claimed_length_inside_a_frame(tmp_path, claim, ok):
    """Protocol 4 frames: the bytes left are those of the frame plus those after it."""
    body = b"X" + struct.pack("<I", claim) + b"ab."
    data = zip_file(b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body)
    if ok:
        refused(tmp_path, data, "not a readable PyTorch checkpoint")
    else:
        refused(tmp_path, data, r"claims 4 bytes, only 3 are left")


@pytest.mark.parametrize("opcode,fmt", [(b"B", "<I"), (b"\x8e", "<Q"), (b"\x8d", "<Q"), (b"T", "<i"),
                                        (b"\x8b", "<i")])
def test_every_sized_opcode_reads_an_exact_length(tmp_path, opcode, fmt):
    payload = b"\x01\x02" if opcode != b"\x8d" else b"ab"
    value = PROTO2 + opcode + struct.pack(fmt, 2) + payload  # a 2-byte value, then used as a dict value
    pickled = PROTO2 + b"}" + text("w") + value[2:] + b"s" + STOP
    refused(tmp_path, zip_file(pickled), r"entry 'w' is not a tensor \((bytes|str|int)\)")


# ---------------------------------------------------------------- nesting depth and container count


def chain(depth: int, innermost=b"K\x01" + TUPLE1) -> bytes:  # a tuple nested `depth` deep
    return innermost + TUPLE1 * (depth - 1)


@pytest.mark.parametrize("innermost", [b"K\x01" + TUPLE1, MARK + TUPLE, MARK + integer(1) + b"l"],
                         ids=["tuple1", "empty-mark-tuple", "mark-list"])
def test_nesting_depth_bound(tmp_path, innermost):
    accepted = zip_file(PROTO2 + chain(MAX_DEPTH, innermost) + STOP)
    refused(tmp_path, accepted, r"expected a state dict \(name -> tensor\), found tuple")
    too_deep = zip_file(PROTO2 + chain(MAX_DEPTH + 1, innermost) + STOP)
    refused(tmp_path, too_deep, f"pickle nests containers more than {MAX_DEPTH} deep")
    assert MAX_DEPTH == 64


@pytest.mark.parametrize("op", ["TUPLE1", "TUPLE2", "TUPLE3", "APPEND", "SETITEM"])
def test_depth_counts_only_the_opcodes_own_operands(tmp_path, op):
    """A 64-deep container sits on the stack (or is extended) while a shallow one is built: still 64."""
    deep = chain(MAX_DEPTH)
    pickled = {
        "TUPLE1": deep + integer(1) + TUPLE1 + POP,
        "TUPLE2": deep + integer(1) + integer(2) + b"\x86" + POP,
        "TUPLE3": deep + integer(1) + integer(2) + integer(3) + b"\x87" + POP,
        "APPEND": b"]" + chain(MAX_DEPTH - 1) + b"a" + integer(1) + b"a",
        "SETITEM": b"}" + integer(0) + chain(MAX_DEPTH - 1) + b"s" + integer(1) + integer(2) + b"s",
    }[op]
    refused(tmp_path, zip_file(PROTO2 + pickled + STOP), r"expected a state dict \(name -> tensor\), found|"
                                                         r"entry 0 is not a tensor \(tuple\)")
    deeper = {"APPEND": b"]" + chain(MAX_DEPTH) + b"a", "SETITEM": b"}" + integer(0) + chain(MAX_DEPTH) + b"s"}
    if op in deeper:  # extending a container with a 64-deep child makes it 65 deep
        refused(tmp_path, zip_file(PROTO2 + deeper[op] + STOP), "nests containers more than 64 deep")


def test_extending_a_deep_list_keeps_its_depth(tmp_path):
    """APPEND of a shallow item to a 64-deep list, then wrapping it once more: 65, refused."""
    pickled = b"]" + chain(MAX_DEPTH - 1) + b"a" + integer(1) + b"a" + TUPLE1
    refused(tmp_path, zip_file(PROTO2 + pickled + STOP), "nests containers more than 64 deep")


@pytest.mark.parametrize("count", [MAX_CONTAINERS, MAX_CONTAINERS + 1])
def test_container_count_bound(tmp_path, count):
    pickled = PROTO2 + b"]0" * (count - 1) + b"]" + STOP  # EMPTY_LIST, POP: one container each
    if count == MAX_CONTAINERS:
        refused(tmp_path, zip_file(pickled), r"expected a state dict \(name -> tensor\), found list")
    else:
        refused(tmp_path, zip_file(pickled), f"pickle builds more than {1 << 21} containers")


def test_limits_are_the_documented_ones():
    # the module docstring and README "Safety" state these; the tests above probe each on both sides
    assert (MAX_PICKLE_BYTES, MAX_DEPTH, MAX_CONTAINERS, MAX_INFLATION) == (1 << 26, 64, 1 << 21, 16)
    assert torch_pickle.MAGIC_NUMBER == 0x1950A86A20F9469CFC6C and torch_pickle.PROTOCOL_VERSION == 1001


def test_running_out_of_stack_while_reading_is_a_clean_error(tmp_path):
    """A persistent id nested 60 deep is refused with its repr in the message; with the interpreter's stack
    nearly used up (a caller deep in recursion), that repr recurses past the limit: still a CheckpointError."""
    import inspect
    import sys

    file = tmp_path / "pytorch_model.bin"
    file.write_bytes(zip_file(PROTO2 + chain(60) + b"Q" + STOP))
    with pytest.raises(CheckpointError, match="unexpected persistent id"):
        read_torch_file(file)  # with the stack to spare: the message names the id
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 45)
    try:
        # Python >= 3.12 bounds C recursion (repr) apart from sys.getrecursionlimit(): the id's message may come instead
        match = r"not a readable PyTorch checkpoint \(structures nested too deeply\)"
        with pytest.raises(CheckpointError, match=match if sys.version_info < (3, 12) else match + "|persistent id"):
            read_torch_file(file)
    finally:
        sys.setrecursionlimit(limit)
