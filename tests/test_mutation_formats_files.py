"""safetensors files, the Hugging Face cache layout and the shared file helpers at every check's edge.

safetensors files are built from the format's specification ([u64 little-endian N][N bytes of JSON header]
[data], offsets relative to the data) or written by the safetensors library itself; the cache layout is
huggingface_hub's (models--org--name/refs/<revision>, snapshots/<commit>/).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from refimpl.checkpoint import CheckpointError, read_weight_file
from refimpl.formats import MAX_JSON_BYTES, load_json, read_bounded, regular_file
from refimpl.formats.hub_cache import (MAX_REF_BYTES, CheckpointNotFound, hub_cache_dir, is_repo_id,
                                       resolve_checkpoint)
from refimpl.formats.safetensors_file import MAX_HEADER, read_header, read_safetensors


def safetensors(tmp_path, header, data=b"", name="model.safetensors", raw=None) -> Path:
    body = raw if raw is not None else json.dumps(header).encode()
    file = tmp_path / name
    file.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return file


def entry(dtype="F32", shape=(2,), begin=0, end=8):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def refused(file, match, reader=read_safetensors):
    with pytest.raises(CheckpointError, match=match):
        reader(file)


# ---------------------------------------------------------------- safetensors: what the library writes


def test_files_written_by_the_safetensors_library(tmp_path):
    tensors = {"b": np.arange(6, dtype=np.float64).reshape(2, 3), "a": np.array([1, -2], np.int8),
               "z": np.zeros((0, 4), np.float32), "h": np.ones(3, np.float16)}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    out = read_safetensors(tmp_path / "model.safetensors")
    assert set(out) == set(tensors)
    for key, want in tensors.items():
        assert out[key].dtype == want.dtype and np.array_equal(out[key], want), key
        assert not out[key].flags.writeable, f"{key}: views of the file must be read-only"
    header, metadata, start, length = read_header(tmp_path / "model.safetensors")
    assert metadata == {"format": "pt"} and set(header) == set(tensors)
    n = struct.unpack("<Q", (tmp_path / "model.safetensors").read_bytes()[:8])[0]
    assert start == 8 + n and length == (tmp_path / "model.safetensors").stat().st_size - 8 - n


def test_empty_file_and_tensors_listed_out_of_offset_order(tmp_path):
    save_file({}, str(tmp_path / "empty.safetensors"))
    assert read_safetensors(tmp_path / "empty.safetensors") == {}
    data = np.array([1, 2], "<f4").tobytes() + np.array([3, 4], "<f4").tobytes()
    file = safetensors(tmp_path, {"a": entry(begin=8, end=16), "b": entry(begin=0, end=8)}, data)
    out = read_safetensors(file)
    np.testing.assert_array_equal(out["a"], [3, 4])
    np.testing.assert_array_equal(out["b"], [1, 2])


@pytest.mark.parametrize("metadata", [None, {"format": "pt", "note": ""}])
def test_metadata_null_or_strings(tmp_path, metadata):
    header = {"__metadata__": metadata, "a": entry()}
    assert read_header(safetensors(tmp_path, header, bytes(8)))[1] == metadata


@pytest.mark.parametrize("metadata", [["format"], {"format": 1}, "pt"])
def test_metadata_must_map_strings_to_strings(tmp_path, metadata):
    refused(safetensors(tmp_path, {"__metadata__": metadata, "a": entry()}, bytes(8)),
            "safetensors __metadata__ must map strings to strings")


def test_zero_element_tensors_and_32_dimensions(tmp_path):
    header = {"z": entry(shape=(3, 0), begin=0, end=0), "d": entry("U8", (1,) * 31 + (2,), 0, 2)}
    out = read_safetensors(safetensors(tmp_path, header, b"\x05\x06"))
    assert out["z"].shape == (3, 0) and out["d"].shape == (1,) * 31 + (2,)
    np.testing.assert_array_equal(out["d"].ravel(), [5, 6])


def test_the_largest_shape_numpy_can_hold_with_no_element(tmp_path):
    out = read_safetensors(safetensors(tmp_path, {"z": entry("U8", (0, 2 ** 63 - 1), 0, 0)}))
    assert out["z"].shape == (0, 2 ** 63 - 1)


@pytest.mark.parametrize("shape", [(0, 2 ** 63), (0, 2 ** 62, 2), (0, 2 ** 40, 2 ** 40)])
def test_zero_element_shapes_beyond_numpy(tmp_path, shape):
    refused(safetensors(tmp_path, {"z": entry("U8", shape, 0, 0)}), "beyond what NumPy can hold")


# ---------------------------------------------------------------- safetensors: every header check


@pytest.mark.parametrize("bad,match", [
    ([1, 2], "header entry needs dtype, shape and data_offsets"),
    ({"dtype": "F32", "shape": [2]}, "header entry needs dtype, shape and data_offsets"),
    (entry(dtype=["F32"]), r"has dtype \['F32'\]; supported"),
    (entry(dtype="f32"), "has dtype 'f32'; supported"),
    ({**entry(), "shape": 2}, r"has a bad shape 2 \(expected a list of at most 32 integers >= 0\)"),
    ({**entry(), "shape": "ab"}, "has a bad shape 'ab'"),
    (entry(shape=(1,) * 33), "has a bad shape"),
    (entry(shape=(2.0,)), "has a bad shape"),
    (entry(shape=(True, 2)), "has a bad shape"),
    ({**entry(), "data_offsets": "08"}, "has bad data_offsets"),
    ({**entry(), "data_offsets": [0, 8, 8]}, "has bad data_offsets"),
    ({**entry(), "data_offsets": [0.0, 8]}, "has bad data_offsets"),
    ({**entry(), "data_offsets": [False, 8]}, "has bad data_offsets"),
    ({**entry(), "data_offsets": [8, 0]}, r"has bad data_offsets \[8, 0\] \(expected \[begin, end\] with begin "
                                          r"<= end <= 8, the data size\)"),
    ({**entry(), "data_offsets": [0, 9]}, "has bad data_offsets"),
    (entry(shape=(3,)), r"tensor 'a': F32 \[3\] needs 12 bytes, but data_offsets \[0, 8\] span 8"),
    (entry(shape=(1000, 1000)), r"F32 \[1000, 1000\] needs more than the 8 bytes of data, but data_offsets "
                                r"\[0, 8\] span 8"),
])
def test_bad_entries(tmp_path, bad, match):
    refused(safetensors(tmp_path, {"a": bad}, bytes(8)), match)


def test_span_of_a_later_tensor(tmp_path):
    header = {"a": entry(begin=0, end=8), "b": entry(shape=(1,), begin=8, end=16)}
    refused(safetensors(tmp_path, header, bytes(16)), r"tensor 'b': F32 \[1\] needs 4 bytes, but data_offsets "
                                                      r"\[8, 16\] span 8")


def test_gaps_and_padding(tmp_path):
    refused(safetensors(tmp_path, {"a": entry(begin=4, end=12)}, bytes(12)),
            "tensor 'a' starts at byte 4 of the data, expected 0")
    refused(safetensors(tmp_path, {"a": entry()}, bytes(12)),
            "the header describes 8 bytes of tensor data, the file holds 12")


def test_header_length_checks(tmp_path):
    refused(_raw_file(tmp_path, struct.pack("<Q", 50) + b"{}"), r"bad safetensors header length 50 \(file has 10 bytes\)")
    refused(_raw_file(tmp_path, b"\x02\x00\x00\x00\x00\x00\x00"), r"truncated safetensors file \(7 bytes")
    assert read_safetensors(_raw_file(tmp_path, struct.pack("<Q", 2) + b"{}")) == {}  # header up to the last byte


def _raw_file(tmp_path, data: bytes) -> Path:
    file = tmp_path / "raw.safetensors"
    file.write_bytes(data)
    return file


@pytest.mark.parametrize("extra", [0, 1])
def test_header_size_bound(tmp_path, extra):
    """A header of MAX_HEADER bytes is parsed (here: NUL bytes, not JSON); one more byte is refused unread."""
    file = tmp_path / "sparse.safetensors"
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER + extra))
        f.truncate(8 + MAX_HEADER + extra)  # sparse: no disk space used
    refused(file, "safetensors header is not valid JSON" if extra == 0 else
            f"bad safetensors header length {MAX_HEADER + 1}")
    assert MAX_HEADER == 100_000_000  # safetensors' own HeaderTooLarge limit


def test_mapping_failure_is_named(tmp_path, monkeypatch):
    file = safetensors(tmp_path, {"a": entry()}, bytes(8))

    def fail(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(np, "memmap", fail)
    refused(file, r"cannot read \(\[Errno 12\] Cannot allocate memory\)")


# ---------------------------------------------------------------- shared helpers: regular files, bounded reads, JSON


def test_regular_file_messages(tmp_path):
    with pytest.raises(CheckpointError, match=r"cannot read weight file \(No such file or directory\)"):
        read_weight_file(tmp_path / "missing.bin")
    with pytest.raises(CheckpointError, match="weight file is a directory; expected a regular file"):
        read_weight_file(tmp_path)
    (tmp_path / "x").write_text("1")
    assert regular_file(str(tmp_path / "x"), "x") == tmp_path / "x"


@pytest.mark.parametrize("size,ok", [(10, True), (11, False)])
def test_read_bounded_limit_is_inclusive(tmp_path, size, ok):
    file = tmp_path / "f"
    file.write_bytes(bytes(range(size)))
    if ok:
        assert read_bounded(file, 10, "thing") == bytes(range(10))
    else:
        with pytest.raises(CheckpointError, match="thing is larger than 10 bytes; refusing to read it"):
            read_bounded(file, 10, "thing")


def test_read_error_is_named(tmp_path, monkeypatch):
    import refimpl.formats as formats

    file = tmp_path / "f"
    file.write_bytes(b"{}")

    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(formats, "open", fail, raising=False)
    with pytest.raises(CheckpointError, match=r"cannot read thing \(Input/output error\)"):
        read_bounded(file, 10, "thing")


class Custom(ValueError):
    pass


@pytest.mark.parametrize("content,match", [
    (None, "cannot read cfg"), (b"\xff{}", "cfg is not valid UTF-8"), (b"[" * 100_000, "cfg is nested too deeply"),
    (b"{1}", "cfg is not valid JSON"), (b"x" * 21, "cfg is larger than 20 bytes"),
])
@pytest.mark.parametrize("error", [None, Custom])
def test_load_json_errors(tmp_path, content, match, error):
    file = tmp_path / "c.json"
    if content is not None:
        file.write_bytes(content)
    limit = 20 if content == b"x" * 21 else MAX_JSON_BYTES
    with pytest.raises(error or CheckpointError, match=match) as info:
        load_json(file, "cfg", limit=limit, error=error)
    assert type(info.value) is (error or CheckpointError)


def test_load_json_values_and_default_bound(tmp_path):
    (tmp_path / "a.json").write_text('{"a": [1, null]}')
    assert load_json(tmp_path / "a.json") == {"a": [1, None]}
    (tmp_path / "n.json").write_text("null")
    with pytest.raises(CheckpointError, match="JSON file"):
        load_json(tmp_path / "n.json", limit=3)  # 4 bytes: over a limit of 3
    sparse = tmp_path / "big.json"
    with open(sparse, "wb") as f:
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(CheckpointError, match=f"JSON file is larger than {MAX_JSON_BYTES} bytes"):
        load_json(sparse)
    assert MAX_JSON_BYTES == 100_000_000


# ---------------------------------------------------------------- the Hugging Face cache


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(root: Path, repo="org/name", ref="main", content=COMMIT, snapshot=COMMIT) -> Path:
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(content)
    if snapshot:
        (repo_dir / "snapshots" / snapshot).mkdir(parents=True, exist_ok=True)
    return repo_dir


def test_hub_cache_dir_from_an_explicit_environment():
    env = {"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}
    assert hub_cache_dir(environ=env) == Path("/h/hub")
    assert hub_cache_dir(environ={"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert hub_cache_dir(environ={}) == Path("~/.cache/huggingface/hub").expanduser()
    assert hub_cache_dir(environ={"TRANSFORMERS_CACHE": "", "HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == Path("/c")
    assert hub_cache_dir("~/mine", environ=env) == Path("~/mine").expanduser()


@pytest.mark.parametrize("name,ok", [("org/name", True), ("name", True), ("a.b-c_d/e.f", True), ("org--x/name", False),
                                     ("org/na--me", False), ("org/a..b", False), ("a/b/c", False), ("/abs", False)])
def test_repo_ids(name, ok):
    assert is_repo_id(name) is ok


def test_a_local_directory_wins_over_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    cache_repo(tmp_path / "cache")
    assert resolve_checkpoint("org/name", cache_dir=tmp_path / "cache") == Path("org/name")
    assert resolve_checkpoint(Path("other/name"), cache_dir=tmp_path / "cache") == Path("other/name")  # never an id
    assert resolve_checkpoint("org/name2/x", cache_dir=tmp_path / "cache") == Path("org/name2/x")


def test_cache_lookups(tmp_path):
    cache = tmp_path / "cache"
    repo = cache_repo(cache)
    assert resolve_checkpoint("org/name", cache_dir=cache) == repo / "snapshots" / COMMIT
    assert resolve_checkpoint("org/name", cache_dir=cache, revision=COMMIT) == repo / "snapshots" / COMMIT
    cache_repo(cache, ref="v1.0", content="feature-snapshot\n", snapshot="feature-snapshot")
    assert resolve_checkpoint("org/name", cache_dir=cache, revision="v1.0") == repo / "snapshots" / "feature-snapshot"
    with pytest.raises(CheckpointNotFound, match=r"'org/name' revision 'v2' \(commit 'v2'\) is not in the cache.*"
                                                 rf"cached snapshots: \['{COMMIT}', 'feature-snapshot'\]"):
        resolve_checkpoint("org/name", cache_dir=cache, revision="v2")
    bare = cache / "models--org--bare"
    (bare / "refs").mkdir(parents=True)
    with pytest.raises(CheckpointNotFound, match="cached snapshots: none"):
        resolve_checkpoint("org/bare", cache_dir=cache)


@pytest.mark.parametrize("content", ["..", "../../x", "a b", "", "x" * 300])
def test_refs_that_are_not_commits(tmp_path, content):
    cache_repo(tmp_path, content=content, snapshot=None)
    with pytest.raises(CheckpointError, match=r"'org/name' revision 'main' points to .*; expected a 40-hex-digit"):
        resolve_checkpoint("org/name", cache_dir=tmp_path)


def test_ref_size_bound_and_dangling_ref(tmp_path):
    repo = cache_repo(tmp_path, content=COMMIT + " " * (MAX_REF_BYTES - len(COMMIT)))
    assert resolve_checkpoint("org/name", cache_dir=tmp_path) == repo / "snapshots" / COMMIT  # exactly 1024 bytes
    (repo / "refs" / "main").write_text(COMMIT + " " * (MAX_REF_BYTES + 1 - len(COMMIT)))
    with pytest.raises(CheckpointError, match=f"ref of revision 'main' is larger than {MAX_REF_BYTES} bytes"):
        resolve_checkpoint("org/name", cache_dir=tmp_path)
    (repo / "refs" / "main").unlink()
    os.symlink(tmp_path / "nowhere", repo / "refs" / "main")
    with pytest.raises(CheckpointError, match=r"cannot read ref of revision 'main' \(No such file or directory\)"):
        resolve_checkpoint("org/name", cache_dir=tmp_path)
    assert MAX_REF_BYTES == 1024


@pytest.mark.parametrize("revision", [5, "..", "a b", "refs/../x", "/x", ""])
def test_bad_revisions(tmp_path, revision):
    cache_repo(tmp_path)
    with pytest.raises(ValueError, match=r"revision .* is not a branch, tag or commit name"):
        resolve_checkpoint("org/name", cache_dir=tmp_path, revision=revision)
