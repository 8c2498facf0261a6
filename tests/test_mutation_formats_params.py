"""Checkpoint directories and shard indexes, the match of a file's tensors to a model's parameters, and the
checks of caller inputs (refimpl/inputs.py), each at its edge with the exact message.

Files are written by the safetensors library (the format save_pretrained writes); expected values are the
arrays written, so every test knows what the reader must return.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import refimpl
from refimpl import inputs
from refimpl.checkpoint import CheckpointError, StateDict, match_params, read_state_dict

OPT_TINY = Path(refimpl.__file__).parent / "data" / "opt-tiny"


def save(directory: Path, name: str, tensors: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / name))
    return directory / name


def index(directory: Path, weight_map, name="model.safetensors.index.json") -> Path:
    (directory / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory / name


# ---------------------------------------------------------------- directories and shard indexes


def test_directory_prefers_safetensors_as_upstream_does(tmp_path):
    save(tmp_path, "model.safetensors", {"w": np.ones(2, np.float32)})
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    np.testing.assert_array_equal(read_state_dict(tmp_path)["w"], [1, 1])
    np.testing.assert_array_equal(read_state_dict(str(tmp_path / "model.safetensors"))["w"], [1, 1])


def test_missing_path_message(tmp_path):
    with pytest.raises(CheckpointError, match=rf"no weights found: {tmp_path / 'x'} does not exist \(expected a "
                                              r"directory holding model.safetensors or another of "
                                              r"model.safetensors.index.json, pytorch_model.bin, "
                                              r"pytorch_model.bin.index.json\)"):
        read_state_dict(tmp_path / "x")


def test_repo_id_with_cache_dir_and_revision(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--m"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text(commit)
    save(repo / "snapshots" / commit, "model.safetensors", {"w": np.full(2, 3, np.float32)})
    np.testing.assert_array_equal(read_state_dict("org/m", cache_dir=tmp_path, revision="v1")["w"], [3, 3])


def test_sharded_checkpoint(tmp_path):
    save(tmp_path, "s1.safetensors", {"a": np.ones(2, np.float32)})
    save(tmp_path, "s2.safetensors", {"b": np.zeros(3, np.float32), "c": np.full(1, 7, np.float32)})
    index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"})
    state = read_state_dict(tmp_path)
    assert isinstance(state, StateDict) and set(state) == {"a", "b", "c"}
    assert state.files == {"a": str(tmp_path / "s1.safetensors"), "b": str(tmp_path / "s2.safetensors"),
                           "c": str(tmp_path / "s2.safetensors")}
    np.testing.assert_array_equal(state["c"], [7])


@pytest.mark.parametrize("weight_map,match", [
    ([["a", "s1.safetensors"]], r"expected a non-empty \"weight_map\""),
    ({}, r"expected a non-empty \"weight_map\""),
    ({"a": 1}, r"expected a non-empty \"weight_map\""),
    ({"a": "sub/s1.safetensors"}, r"shard name 'sub/s1.safetensors' must be a file name in the same directory"),
    ({"a": "other.index.json"}, r"shard 'other.index.json' is an index file; shards must be weight files"),
    ({"a": "s9.safetensors"}, r"shard s9.safetensors is missing \(.*s9.safetensors does not exist\)"),
    ({"a": "s2.safetensors", "b": "s1.safetensors"}, r"the index puts 'a' in s2.safetensors, but it is in "
                                                     r".*s1.safetensors"),
    ({"a": "s1.safetensors", "b": "s2.safetensors", "z": "s2.safetensors"},
     r"the index puts 'z' in s2.safetensors, but no shard holds it"),
])
def test_broken_indexes(tmp_path, weight_map, match):
    save(tmp_path, "s1.safetensors", {"a": np.ones(2, np.float32)})
    save(tmp_path, "s2.safetensors", {"b": np.zeros(3, np.float32)})
    index(tmp_path, weight_map)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(tmp_path)


def test_one_tensor_in_two_shards(tmp_path):
    save(tmp_path, "s1.safetensors", {"a": np.ones(2, np.float32)})
    save(tmp_path, "s2.safetensors", {"a": np.zeros(2, np.float32)})
    index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(CheckpointError, match=r"s2.safetensors: tensor 'a' is also in .*s1.safetensors"):
        read_state_dict(tmp_path)


# ---------------------------------------------------------------- match_params


def mapped(tmp_path, tensors) -> StateDict:
    return read_state_dict(save(tmp_path, "model.safetensors", tensors))


def file_backed(array) -> bool:
    base = array
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = getattr(base, "base", None)
    return False


def test_default_copies_c_contiguous_in_the_compute_dtype(tmp_path):
    state = mapped(tmp_path, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "h": np.ones(2, np.float16)})
    state["t"] = state["w"].T  # a transposed view (as torch files hold them)
    got = match_params(state, {"w": (2, 3), "h": (2,), "t": (3, 2)}, np.float32)
    for name, value in got.items():
        assert value.dtype == np.float32 and value.flags.c_contiguous and value.flags.writeable, name
        assert not file_backed(value), f"{name}: a default load must not keep the file mapped"
    np.testing.assert_array_equal(got["t"], np.arange(6).reshape(2, 3).T)


def test_mmap_keeps_views_but_still_casts(tmp_path):
    state = mapped(tmp_path, {"w": np.arange(4, dtype=np.float32), "h": np.ones(2, np.float16)})
    got = match_params(state, {"w": (4,), "h": (2,)}, np.float32, mmap=True)
    assert file_backed(got["w"]) and got["h"].dtype == np.float32 and not file_backed(got["h"])


def test_default_buffers_take_the_compute_dtype():
    got = match_params({"w": np.ones(2, np.float32)}, {"w": (2,), "bias": (1, 3)}, np.float32,
                       defaults={"bias": np.zeros})
    assert got["bias"].dtype == np.float32 and got["bias"].shape == (1, 3)


def test_tied_weight_missing_both_names_is_reported():
    with pytest.raises(CheckpointError, match=r"ckpt: missing weights: lm_head.weight \(4, 2\), b \(1,\)"):
        match_params({"x": np.ones(1, np.float32)}, {"lm_head.weight": (4, 2), "b": (1,)}, np.float32,
                     tied={"lm_head.weight": "embed.weight"}, source="ckpt")


def test_dtype_and_shape_messages():
    with pytest.raises(CheckpointError, match=r"ckpt: weight 'w' has dtype int64, expected a floating-point tensor"):
        match_params({"w": np.ones(2, np.int64)}, {"w": (2,)}, np.float32, source="ckpt")
    with pytest.raises(CheckpointError, match=r"ckpt: weight 'm.w' has shape \(2,\), but the config expects \(3,\) "
                                              r"for 'w'"):
        match_params({"m.w": np.ones(2, np.float32)}, {"w": (3,)}, np.float32, base_prefix="m", source="ckpt")


@pytest.mark.parametrize("extra,listed", [(8, 8), (9, 8)])
def test_unexpected_weights_list_at_most_eight(extra, listed):
    state = {"w": np.ones(1, np.float32), **{f"x{i}": np.ones(1, np.float32) for i in range(extra)}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        match_params(state, {"w": (1,)}, np.float32, source="ckpt")
    message = str(caught[0].message)
    names = ", ".join(f"x{i}" for i in range(listed))
    assert message == f"ckpt: ignoring {extra} unexpected weights: {names}" + (" ..." if extra > 8 else ""), message


def test_no_warning_when_every_weight_is_used():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        match_params({"w": np.ones(1, np.float32), "b": np.ones(1, np.float32)}, {"w": (1,), "b": (1,)}, np.float32)


def test_unexpected_weight_warning_points_at_the_callers_line(tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(OPT_TINY, directory)
    state = dict(read_state_dict(directory))
    state["extra.weight"] = np.ones(2, np.float32)
    for name in ("model.safetensors", "pytorch_model.bin"):
        (directory / name).unlink(missing_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(directory / "model.safetensors"))
    with pytest.warns(UserWarning, match="ignoring 1 unexpected weights: extra.weight") as caught:
        refimpl.from_pretrained(directory)
    assert Path(caught[0].filename).resolve() == Path(__file__).resolve(), caught[0].filename


# ---------------------------------------------------------------- caller inputs


def test_ids_shapes_and_ranges():
    with pytest.raises(ValueError, match=r"^input_ids must have 2 dimensions \(batch, sequence\), got shape \(3,\)$"):
        inputs.ids([1, 2, 3])
    with pytest.raises(ValueError, match=r"^labels must have 1 dimensions, got shape \(1, 1\)$"):
        inputs.ids([[1]], "labels", ndim=1)
    with pytest.raises(ValueError, match=r"input_ids is empty \(shape \(1, 0\)\)"):
        inputs.ids(np.zeros((1, 0), np.int64))
    assert inputs.ids([[0, 9]], vocab_size=10).dtype == np.int64
    with pytest.raises(ValueError, match=r"^input_ids holds id 10, outside the vocabulary of 10 \(valid: 0..9\)$"):
        inputs.ids([[0, 10]], vocab_size=10)
    with pytest.raises(ValueError, match=r"^input_ids holds id -1, outside the vocabulary of 10"):
        inputs.ids([[-1, 10]], vocab_size=10)
    edge = np.array([[-(1 << 63), (1 << 63) - 1]], dtype=object)
    np.testing.assert_array_equal(inputs.ids(edge), np.array([[-(1 << 63), (1 << 63) - 1]], np.int64))
    with pytest.raises(ValueError, match=r"^input_ids holds id 9223372036854775808, outside the int64 range$"):
        inputs.ids(np.array([[1 << 63]], np.uint64))
    with pytest.raises(ValueError, match=r"^input_ids holds id -9223372036854775809, outside the int64 range$"):
        inputs.ids(np.array([[-(1 << 63) - 1]], dtype=object))


@pytest.mark.parametrize("value,match", [
    ([[True]], r"got dtype bool \(True/False are not token ids\)"),
    ([[1.5, 2.0]], r"got dtype float64 \(the non-integral value 1.5\)"),
    ([[np.nan]], r"\(the non-integral value nan\)"),
    ([[1.0, 2.0]], r"got dtype float64 \(integral values\); convert integral values with .astype\(np.int64\)"),
    (np.array([[1, "a"]], dtype=object), r"got 'a' \(str\)"),
    (np.array([[1, True]], dtype=object), r"got True \(bool\)"),
    ([["a"]], r"got dtype <U1"),
    ([[1, 2], [3]], r"must be a rectangular array \(every row the same length\)"),
])
def test_ids_types(value, match):
    with pytest.raises(ValueError, match=match):
        inputs.ids(value)


def test_object_ids_of_numpy_integers_are_accepted():
    np.testing.assert_array_equal(inputs.ids(np.array([[np.int32(3), 4]], dtype=object)), [[3, 4]])


def test_masks():
    np.testing.assert_array_equal(inputs.mask([[True, False]], (1, 2)), [[1, 0]])
    np.testing.assert_array_equal(inputs.mask(np.array([[1.0, 0.0]]), (1, 2)), [[1, 0]])
    assert inputs.mask(np.zeros((0, 2)), (0, 2)).shape == (0, 2)
    with pytest.raises(ValueError, match=r"^m must have shape \(1, 2\), got \(2,\)$"):
        inputs.mask([1, 0], (1, 2), "m")
    with pytest.raises(ValueError, match=r"^m must hold 0/1 values, got dtype <U1$"):
        inputs.mask([["1", "0"]], (1, 2), "m")
    with pytest.raises(ValueError, match=r"^m must hold 0/1 values \(1 = attend, 0 = padding\), got \[-1, 2, 3, 4, 5\]$"):
        inputs.mask([[0, 1, 7, 6, 5, 4, 3, 2, -1]], (1, 9), "m")
    with pytest.raises(ValueError, match=r"got \[0.5\]$"):
        inputs.mask([[0.5, 1.0]], (1, 2), "m")


def test_floats_and_one_of():
    assert inputs.floats(None, np.float32, "x") is None
    out = inputs.floats([[1, 2]], np.float32, "x", shape=(1, 2))
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match=r"^x must be numeric, got dtype <U1$"):
        inputs.floats(["a"], np.float32, "x")
    with pytest.raises(ValueError, match=r"^x must have shape \(2,\), got \(1, 2\)$"):
        inputs.floats([[1, 2]], np.float32, "x", shape=(2,))
    with pytest.raises(ValueError, match=r"^pass either a or b, not both$"):
        inputs.one_of(1, 2, "a", "b")
    with pytest.raises(ValueError, match=r"^pass a or b$"):
        inputs.one_of(None, None, "a", "b")
    inputs.one_of(1, None)
    inputs.one_of(None, 2)


def test_embed():
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids, x = inputs.embed([[1, 3]], None, table)
    np.testing.assert_array_equal(x, table[[[1, 3]]])
    with pytest.raises(ValueError, match=r"outside the vocabulary of 4"):
        inputs.embed([[4]], None, table)
    ids, x = inputs.embed(None, np.ones((1, 2, 3)), table)
    assert ids is None and x.dtype == np.float32
    for shape in [(2, 3), (1, 2, 4), (0, 2, 3), (1, 0, 3)]:
        with pytest.raises(ValueError, match=r"^e must have shape \(batch, sequence, 3\) with batch >= 1 and sequence "
                                             rf">= 1, got \({', '.join(map(str, shape))},?\)$"):
            inputs.embed(None, np.ones(shape), table, embeds_name="e")


def kv(b=1, h=2, s=3, d=4, dtype=np.float32):
    return np.zeros((b, h, s, d), dtype)


def test_past_length():
    assert inputs.past_length(None, 2, 1) == 0
    assert inputs.past_length(((kv(), kv()), (kv(), kv())), 2, 1, 2, 4) == 3
    cross = ((kv(), kv(), kv(s=7), kv(s=7)),)
    assert inputs.past_length(cross, 1, 1, 2, 4, arrays=(2, 4)) == 3
    cases = [
        (((kv(), kv()),), r"^past_key_values must hold one tuple per layer \(2\), got 1$"),
        ("cache", r"^past_key_values must hold one tuple per layer \(2\), got str$"),
        (((kv(), kv()), kv()), r"^past_key_values\[1\] must hold 2 arrays \(self-attention key, value\[, "
                               r"cross-attention key, value\]\), got ndarray$"),
        (((kv(), kv()), (kv(),)), r"^past_key_values\[1\] must hold 2 arrays .*got 1$"),
        (((kv(), kv(dtype=np.int64)), (kv(), kv())), r"^past_key_values\[0\]\[1\] must be a float array, got dtype int64$"),
        (((kv(), kv(s=4)), (kv(), kv())), r"^past_key_values\[0\]\[1\] \(self-attention value\) must have shape "
                                          r"\(batch=1, heads=2, length=3, head_dim=4\), got \(1, 2, 4, 4\)$"),
        (((kv(b=2), kv()), (kv(), kv())), r"^past_key_values\[0\]\[0\] \(self-attention key\) must have shape "
                                          r"\(batch=1, heads=2, length, head_dim=4\), got \(2, 2, 3, 4\)$"),
        (((kv(), kv()), (kv(), np.zeros((1, 2, 3)))), r"past_key_values\[1\]\[1\] .* got \(1, 2, 3\)$"),
        (((kv(), kv()), (kv(), kv(d=5))), r"past_key_values\[1\]\[1\] .* got \(1, 2, 3, 5\)$"),
        (((kv(), kv()), (kv(h=3), kv())), r"past_key_values\[1\]\[0\] .* got \(1, 3, 3, 4\)$"),
    ]
    for cache, match in cases:
        with pytest.raises(ValueError, match=match):
            inputs.past_length(cache, 2, 1, 2, 4)
    with pytest.raises(ValueError, match=r"^past_key_values\[0\]\[3\] \(cross-attention value\) must have shape "
                                         r"\(batch=1, heads=2, length=7, head_dim=4\), got \(1, 2, 6, 4\)$"):
        inputs.past_length(((kv(), kv(), kv(s=7), kv(s=6)),), 1, 1, 2, 4, arrays=(2, 4))
    with pytest.raises(ValueError, match=r"must hold 2 or 4 arrays"):
        inputs.past_length(((kv(), kv(), kv()),), 1, 1, 2, 4, arrays=(2, 4))


def test_causal_lm_mask_and_output_flags():
    ones = inputs.causal_lm_mask(None, 2, 3, 4)
    assert ones.shape == (2, 7) and ones.dtype == np.int64 and ones.all()
    with pytest.raises(ValueError, match=r"attention_mask \(it must span past \+ current tokens\) must have shape "
                                         r"\(1, 5\), got \(1, 2\)"):
        inputs.causal_lm_mask([[1, 1]], 1, 3, 2)

    class Cfg:
        use_cache, output_attentions, output_hidden_states = True, False, True

    assert inputs.output_flags(Cfg()) == (True, False, True)
    assert inputs.output_flags(Cfg(), False, True, False) == (False, True, False)


# ---------------------------------------------------------------- from_pretrained's arguments reach the loader


def test_from_pretrained_passes_every_argument(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / commit
    shutil.copytree(OPT_TINY, snapshot)
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "v1").write_text(commit)
    model = refimpl.from_pretrained("org/tiny", cache_dir=tmp_path, revision="v1", dtype="float64",
                                    islands="upstream", islands_cpu="avx512", mmap=True)
    assert model.source == snapshot and model.architecture == "OPTForCausalLM"  # the config's first architecture
    assert (model.config.islands, model.config.islands_cpu) == ("upstream", "avx512")
    assert model.dtype == np.float64 and all(v.dtype == np.float64 for v in model.params.values())
    n = sum(v.size for v in model.params.values())
    assert repr(model) == f"<refimpl OPTForCausalLM ({n:,} parameters, float64, islands=upstream (avx512))>"
    mapped_model = refimpl.from_pretrained(OPT_TINY, mmap=True)  # float32 weights need no cast: kept mapped
    assert all(file_backed(v) for v in mapped_model.params.values())
    assert not any(file_backed(v) for v in refimpl.from_pretrained(OPT_TINY).params.values())
    assert repr(refimpl.from_pretrained(OPT_TINY, "OPTModel")).startswith("<refimpl OPTModel (")
    with pytest.raises(ValueError, match=r"islands_cpu must be one of"):
        refimpl.from_pretrained(OPT_TINY, islands_cpu="sse")


def test_from_pretrained_default_architecture_and_missing_weight_source(tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(OPT_TINY, directory)
    config = json.loads((directory / "config.json").read_text())
    del config["architectures"]
    (directory / "config.json").write_text(json.dumps(config))
    assert refimpl.from_pretrained(directory).architecture == "OPTModel"  # the family's base model
    state = {k: np.ascontiguousarray(v) for k, v in read_state_dict(directory).items()
             if not k.endswith("fc1.bias")}
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"^{directory}: missing weights: decoder.layers.0.fc1.bias \(512,\)"):
        refimpl.from_pretrained(directory)
