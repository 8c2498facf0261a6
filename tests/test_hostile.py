"""Hostile files: every crafted file ends in the library's own error naming the problem, never in a crash,
hang, memory bomb, silent acceptance or raw exception from deep inside (README "Safety").

Cases that could crash, hang or exhaust memory run in their own interpreter with a time and memory limit
(tests/hostile.py run_limited); the rest run in-process. Every file is built by the test itself.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import refimpl
from refimpl.checkpoint import CheckpointError, read_state_dict, read_weight_file
from refimpl.formats.hub_cache import CheckpointNotFound, resolve_checkpoint
from refimpl.formats.safetensors_file import read_safetensors
from refimpl.formats.torch_pickle import read_torch_file

from hostile import (GOLDEN_FORMATS, _Storage, _Tensor, assert_clean_error, nested_tuple_pickle, patch_zip_entry,
                     run_limited, safetensors_bytes, state_pickle, torch_zip)

SMALL_OPT = GOLDEN_FORMATS / "opt-OPTForCausalLM" / "safetensors"


def _read_in_child(path, reader="refimpl.checkpoint.read_weight_file"):
    module, name = reader.rsplit(".", 1)
    return run_limited(f"import {module}\nreport(lambda: len({module}.{name}({str(path)!r})))")


def _float_storage(n):
    return np.arange(n, dtype="<f4").tobytes()


# ---------------------------------------------------------------- torch pickles


@pytest.mark.parametrize("as_set", [False, True], ids=["dict-key", "set-element"])
def test_tuple_nested_a_million_deep_is_refused_not_a_segfault(tmp_path, as_set):
    path = torch_zip(tmp_path / "deep.bin", nested_tuple_pickle(10**6, as_set), {})
    assert_clean_error(_read_in_child(path), "nests containers|deep")


def test_legacy_file_with_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "legacy.bin"
    path.write_bytes(nested_tuple_pickle(10**6))
    assert_clean_error(_read_in_child(path), "deep")


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96", b"\x8d"], ids=["BINBYTES8", "BYTEARRAY8", "BINUNICODE8"])
def test_length_claims_beyond_the_file_are_refused_before_allocating(tmp_path, opcode):
    pkl = b"\x80\x04" + opcode + struct.pack("<Q", 32 << 30) + b"\x00" * 600 + b"."  # claims 32 GiB in 640 bytes
    path = torch_zip(tmp_path / "bytes8.bin", pkl, {})
    result = _read_in_child(path)
    assert_clean_error(result, "BYTEARRAY8" if opcode == b"\x96" else "claims|left")


def test_many_containers_are_a_clean_error(tmp_path):
    pkl = b"\x80\x04" + b"(" * 2_500_000 + b"."  # 2.5 MB of MARKs: each allocates a list
    path = torch_zip(tmp_path / "marks.bin", pkl, {})
    assert_clean_error(_read_in_child(path), "containers")


def test_zip_bomb_storage_is_refused_unread(tmp_path):
    numel = 1_000_000_000  # 4 GB of float32 claimed, 1 kB of deflate present
    pkl = state_pickle({"w": _Tensor(_Storage("0", "FloatStorage", numel), 0, (numel,), (1,))})
    path = torch_zip(tmp_path / "bomb.bin", pkl, {"0": bytes(1 << 20)}, compress=True)
    patch_zip_entry(path, "archive/data/0", file_size=4 * numel)
    assert_clean_error(_read_in_child(path), "compressed|bomb")


def test_compressed_storage_within_bounds_is_read(tmp_path):
    pkl = state_pickle({"w": _Tensor(_Storage("0", "FloatStorage", 6), 0, (2, 3), (3, 1))})
    path = torch_zip(tmp_path / "deflated.bin", pkl, {"0": _float_storage(6)}, compress=True)
    np.testing.assert_array_equal(read_torch_file(path)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_highly_compressible_deflated_pickle_is_read(tmp_path):
    """data.pkl is bounded by its own limit (64 MB), not by a compression ratio: long repetitive names load."""
    names = [f"{'model.decoder.layers.' * 200}{i}.weight" for i in range(50)]
    pkl = state_pickle({n: _Tensor(_Storage("0", "FloatStorage", 6), 0, (6,), (1,)) for n in names})
    path = torch_zip(tmp_path / "names.bin", pkl, {"0": _float_storage(6)}, compress=True)
    info = zipfile.ZipFile(path).getinfo("archive/data.pkl")
    assert info.file_size > 16 * info.compress_size + 4096
    assert sorted(read_torch_file(path)) == sorted(names)


@pytest.mark.parametrize("entry", ["archive/data/0", "archive/data.pkl"])
def test_encrypted_zip_entries_are_refused(tmp_path, entry):
    pkl = state_pickle({"w": _Tensor(_Storage("0", "FloatStorage", 6), 0, (6,), (1,))})
    path = torch_zip(tmp_path / "enc.bin", pkl, {"0": _float_storage(6)})
    patch_zip_entry(path, entry, flag_bits=1)
    with pytest.raises(CheckpointError, match="encrypted"):
        read_torch_file(path)


def test_one_bfloat16_storage_viewed_a_thousand_times_is_decoded_once(tmp_path):
    numel = 4_000_000  # 8 MB of bfloat16 -> 16 MB of float32; 1000 copies would be 16 GB
    storage = _Storage("0", "BFloat16Storage", numel)
    pkl = state_pickle({f"view{i}": _Tensor(storage, i, (numel - 1000,), (1,)) for i in range(1000)})
    bits = (np.arange(numel) % 200).astype("<u2") + np.uint16(0x3F80)  # bfloat16 1.0 .. ~1.8
    path = torch_zip(tmp_path / "views.bin", pkl, {"0": bits.tobytes()})
    code = (f"from refimpl.formats.torch_pickle import read_torch_file\n"
            f"def run():\n    s = read_torch_file({str(path)!r})\n"
            f"    import numpy as np\n"
            f"    return all(np.may_share_memory(s['view0'], v) for v in s.values()), float(s['view7'][0])\n"
            f"report(run)")
    result = run_limited(code)
    assert result[0] == "ok", result
    shared, first = eval(result[1])
    assert shared  # (and 1000 decoded copies would not fit under the child's memory limit)
    assert first == float((np.array([bits[7]], "<u2").astype(np.uint32) << 16).view(np.float32)[0])


@pytest.mark.parametrize("size, stride, offset", [((10**9,), (1,), 0), ((2, 3), (10**12, 1), 0), ((6,), (1,), 1),
                                                  ((1,) * 40, (1,) * 40, 0), ((10**6,) * 3000, (0,) * 3000, 0)])
def test_views_outside_their_storage_are_refused(tmp_path, size, stride, offset):
    pkl = state_pickle({"w": _Tensor(_Storage("0", "FloatStorage", 6), offset, size, stride)})
    path = torch_zip(tmp_path / "view.bin", pkl, {"0": _float_storage(6)})
    assert_clean_error(_read_in_child(path, "refimpl.formats.torch_pickle.read_torch_file"), "tensor")


def test_storage_claiming_more_than_the_archive_holds(tmp_path):
    pkl = state_pickle({"w": _Tensor(_Storage("0", "FloatStorage", 10**10), 0, (6,), (1,))})
    path = torch_zip(tmp_path / "short.bin", pkl, {"0": _float_storage(6)})
    with pytest.raises(CheckpointError, match="holds 24 bytes"):
        read_torch_file(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_pickles_end_in_checkpoint_errors(tmp_path, data):
    """Random byte flips, truncations and insertions in a real torch data.pkl: a CheckpointError or a
    correct read, never another exception (and never code: only tensor rebuilding is reachable)."""
    pkl = bytearray(state_pickle({f"w{i}": _Tensor(_Storage(str(i), "FloatStorage", 6), 0, (2, 3), (3, 1))
                                  for i in range(3)}))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(pkl) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            pkl[where] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del pkl[where:]
            if not pkl:
                pkl = bytearray(b".")
        else:
            pkl[where:where] = data.draw(st.binary(min_size=1, max_size=9))
    path = torch_zip(tmp_path / "fuzz.bin", bytes(pkl), {str(i): _float_storage(6) for i in range(3)})
    try:
        read_torch_file(path)
    except CheckpointError as err:
        assert str(path) in str(err)


# ---------------------------------------------------------------- safetensors


def _tensor_entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("entry, match", [
    (_tensor_entry(dtype=["F32"]), "dtype"),
    (_tensor_entry(dtype={"F": 32}), "dtype"),
    (_tensor_entry(shape=[1.5]), "shape"),
    (_tensor_entry(shape=[-2, -1]), "shape"),
    (_tensor_entry(shape=[True, 2]), "shape"),
    (_tensor_entry(offsets=(0, 2**70)), "data_offsets"),
    (_tensor_entry(offsets=(8, 0)), "data_offsets"),
    (_tensor_entry(shape=(2**40, 2**40)), "needs"),
    ({"dtype": "F32"}, "needs dtype, shape and data_offsets"),
    ("F32", "needs dtype"),
])
def test_bad_safetensors_entries(tmp_path, entry, match):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes({"w": entry}, bytes(8)))
    with pytest.raises(CheckpointError, match=match):
        read_safetensors(path)


@pytest.mark.parametrize("shape", [[0, 2**63], [0, 2**40, 2**40], [2**64, 0], [0, 2**62, 2], [0] * 31 + [2**63]])
def test_zero_element_tensors_of_absurd_shape_are_named_not_numpy_errors(tmp_path, shape):
    """No element, so no byte of data, yet a shape NumPy cannot create ("Maximum allowed dimension exceeded",
    "array is too big"): refused naming the file, the tensor and its shape."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes({"w": _tensor_entry(shape=shape, offsets=(0, 0))}, b""))
    result = _read_in_child(path, "refimpl.formats.safetensors_file.read_safetensors")
    assert_clean_error(result, f"{path}|'w'|shape {shape}|beyond what NumPy can hold", base="CheckpointError")


@pytest.mark.parametrize("shape", [[0, 2**40], [2**20, 0, 2**20], [0]])
def test_zero_element_tensors_numpy_can_shape_are_read(tmp_path, shape):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes({"w": _tensor_entry(shape=shape, offsets=(0, 0))}, b""))
    assert read_safetensors(path)["w"].shape == tuple(shape)


def test_shape_with_200000_dims_is_refused_quickly(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes({"w": _tensor_entry(shape=[2**31] * 200_000)}, bytes(8)))
    assert_clean_error(_read_in_child(path), "shape")


@pytest.mark.parametrize("raw", [b"\xff" * 8, struct.pack("<Q", 10**6) + b"{}", struct.pack("<Q", 2) + b"[]",
                                 struct.pack("<Q", 200_001) + b"[" * 100_000 + b"]" * 100_001, b"abc"],
                         ids=["huge-length", "past-the-end", "not-an-object", "nested-100000-deep", "short"])
def test_bad_safetensors_headers(tmp_path, raw):
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw)
    assert_clean_error(_read_in_child(path), "safetensors")


# ---------------------------------------------------------------- files that are not regular files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "weights.index.json"])
def test_a_fifo_as_weight_file_does_not_block(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    assert_clean_error(_read_in_child(fifo), "not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_as_config_or_weights_in_a_directory_does_not_block(tmp_path):
    shutil.copytree(SMALL_OPT, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    os.mkfifo(tmp_path / "m" / "model.safetensors")
    assert_clean_error(run_limited(f"import refimpl\nreport(lambda: refimpl.from_pretrained({str(tmp_path / 'm')!r}))"),
                       "no weights found")
    shutil.copy(SMALL_OPT / "model.safetensors", tmp_path / "m" / "weights.safetensors")
    (tmp_path / "m" / "config.json").unlink()
    os.mkfifo(tmp_path / "m" / "config.json")
    assert_clean_error(run_limited(f"import refimpl\nreport(lambda: refimpl.from_pretrained({str(tmp_path / 'm')!r}))"),
                       "config.json|not a regular file")


# ---------------------------------------------------------------- shard indexes and JSON


@pytest.mark.parametrize("layout", ["self", "pair"])
def test_shard_indexes_naming_index_files_are_refused(tmp_path, layout):
    first, second = tmp_path / "a.index.json", tmp_path / "b.index.json"
    first.write_text(json.dumps({"weight_map": {"w": first.name if layout == "self" else second.name}}))
    second.write_text(json.dumps({"weight_map": {"w": first.name}}))
    with pytest.raises(CheckpointError, match="is an index file"):
        read_weight_file(first)


@pytest.mark.parametrize("target", ["config.json", "model.safetensors.index.json"])
def test_json_nested_100000_deep(tmp_path, target):
    shutil.copytree(SMALL_OPT, tmp_path / "m")
    if target != "config.json":
        (tmp_path / "m" / "model.safetensors").unlink()
    (tmp_path / "m" / target).write_text("[" * 100_000 + "]" * 100_000)
    result = run_limited(f"import refimpl\nreport(lambda: refimpl.from_pretrained({str(tmp_path / 'm')!r}))")
    assert_clean_error(result, f"{target}|nested too deeply")


# ---------------------------------------------------------------- the Hugging Face cache stays inside the cache


def _cache_repo(tmp_path, ref_text=None):
    cache = tmp_path / "cache"
    repo = cache / "models--org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(SMALL_OPT, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit if ref_text is None else ref_text)
    return cache, repo, commit


def test_cache_resolves_a_good_ref(tmp_path):
    cache, repo, commit = _cache_repo(tmp_path)
    assert resolve_checkpoint("org/tiny", cache_dir=cache) == repo / "snapshots" / commit


@pytest.mark.parametrize("ref", ["../../..", "../../../outside", "/etc", "/", "..", "snap/../../x", "a\x00b"])
def test_refs_escaping_the_cache_are_refused(tmp_path, ref):
    cache, repo, _ = _cache_repo(tmp_path, ref)
    (tmp_path / "outside").mkdir()
    shutil.copytree(SMALL_OPT, tmp_path / "outside" / "snapshots-target", dirs_exist_ok=True)
    with pytest.raises(CheckpointError, match="points to|not in the cache"):
        resolve_checkpoint("org/tiny", cache_dir=cache)


@pytest.mark.parametrize("revision", ["../../x", "/abs", "main/../..", "", 7, "a b"])
def test_bad_revisions_are_refused(tmp_path, revision):
    cache, _, _ = _cache_repo(tmp_path)
    with pytest.raises(ValueError, match="revision"):
        resolve_checkpoint("org/tiny", cache_dir=cache, revision=revision)


def test_missing_revision_lists_cached_snapshots(tmp_path):
    cache, _, commit = _cache_repo(tmp_path)
    with pytest.raises(CheckpointNotFound, match=commit):
        resolve_checkpoint("org/tiny", cache_dir=cache, revision="v9")


def test_snapshot_symlinked_outside_the_cache_is_refused(tmp_path):
    cache, repo, _ = _cache_repo(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(SMALL_OPT, elsewhere)
    other = "f" * 40
    (repo / "snapshots" / other).symlink_to(elsewhere, target_is_directory=True)
    (repo / "refs" / "main").write_text(other)
    with pytest.raises(CheckpointError, match="outside the cache"):
        resolve_checkpoint("org/tiny", cache_dir=cache)


def _resolve_in_child(cache):
    return ("from refimpl.formats.hub_cache import resolve_checkpoint\n"
            f"report(lambda: resolve_checkpoint('org/tiny', cache_dir={str(cache)!r}))")


def test_huge_sparse_ref_is_refused_unread(tmp_path):
    cache, repo, _ = _cache_repo(tmp_path)
    with open(repo / "refs" / "main", "r+b") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse
    code = _resolve_in_child(cache)
    assert_clean_error(run_limited(code), "larger than")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_ref_does_not_block(tmp_path):
    cache, repo, _ = _cache_repo(tmp_path)
    (repo / "refs" / "main").unlink()
    os.mkfifo(repo / "refs" / "main")
    code = _resolve_in_child(cache)
    assert_clean_error(run_limited(code), "not a regular file")


# ---------------------------------------------------------------- loaded models are immune to later file changes


def _logits(model):
    return model(input_ids=np.array([[5, 6, 7, 8]])).logits


@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_truncating_or_rewriting_weights_after_loading_changes_nothing(tmp_path, change):
    directory = tmp_path / "m"
    shutil.copytree(SMALL_OPT, directory)
    weights = directory / "model.safetensors"
    code = f"""
import numpy as np, os, refimpl
def run():
    model = refimpl.from_pretrained({str(directory)!r}, dtype="float32")
    before = model(input_ids=np.array([[5, 6, 7, 8]])).logits.copy()
    if {change!r} == "truncate":
        os.truncate({str(weights)!r}, 100)
    else:
        size = os.path.getsize({str(weights)!r})
        with open({str(weights)!r}, "r+b") as f:
            f.seek(size // 2)
            f.write(b"\\x7f" * (size - size // 2))
    after = model(input_ids=np.array([[5, 6, 7, 8]])).logits
    return float(np.abs(after - before).max())
report(run)
"""
    result = run_limited(code)
    assert result == ["ok", "0.0"], result


def test_mmap_opt_in_shares_the_file(tmp_path):
    model = refimpl.from_pretrained(SMALL_OPT, dtype="float32", mmap=True)
    copied = refimpl.from_pretrained(SMALL_OPT, dtype="float32")
    np.testing.assert_array_equal(_logits(model), _logits(copied))
    assert any(isinstance(v.base, np.memmap) or isinstance(getattr(v.base, "base", None), np.memmap)
               for v in model.params.values())


# ---------------------------------------------------------------- a config that would allocate absurd memory


@pytest.mark.parametrize("source, field, value, expected", [
    # a huge vocabulary fails on the weights' shapes, not on allocating [10**12, D]
    (GOLDEN_FORMATS / "led-LEDForConditionalGeneration" / "safetensors", "vocab_size", 10**12, "shape"),
    (SMALL_OPT, "num_hidden_layers", 10**9, "num_hidden_layers|1000000000"),  # refused before building
], ids=["huge-vocabulary", "a-billion-layers"])
def test_absurd_sizes_in_config_end_in_a_clean_error(tmp_path, source, field, value, expected):
    shutil.copytree(source, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps(dict(config, **{field: value})))
    result = run_limited(f"import refimpl\nreport(lambda: refimpl.from_pretrained({str(tmp_path / 'm')!r}))")
    assert_clean_error(result, expected)


def test_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=str(path)):
        read_state_dict(path)

