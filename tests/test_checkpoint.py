"""Checkpoint loading: every file format, the HF cache layout, names, dtypes, refusal of unsafe or bad files.

Expected tensors come from upstream: golden/formats/<model>/expected.safetensors holds
`model.state_dict()` (float32) and upstream's own float32 upcast of its float16/bfloat16 files
(`cls.from_pretrained(dir, torch_dtype=torch.float32)`); regenerate with `python golden/capture.py formats`.
No test here needs torch; none opens a network connection.
"""
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

import refimpl
from refimpl.checkpoint import CheckpointError, StateDict, match_params, read_state_dict, resolve_checkpoint
from refimpl.formats.hub_cache import hub_cache_dir
from refimpl.formats.safetensors_file import read_safetensors
from refimpl.formats.torch_pickle import read_torch_file
from refimpl.models import family

FORMATS = Path(__file__).resolve().parents[1] / "golden" / "formats"
REGENERATE = "regenerate with `python golden/capture.py formats` (needs torch + transformers 4.37.2)"
INDEX = json.loads((FORMATS / "index.json").read_text()) if (FORMATS / "index.json").exists() else {}
VARIANTS = [(name, v) for name, info in sorted(INDEX.items()) for v in info["variants"]]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def precision(variant: str) -> str:  # "float16-bin" -> "float16"; "bin-sharded" -> "float32"
    head = variant.split("-")[0]
    return head if head in ("float16", "bfloat16") else "float32"


def expected(name: str, label: str) -> dict:
    tensors = load_file(str(FORMATS / name / "expected.safetensors"))
    return {k[len(label) + 1:]: v for k, v in tensors.items() if k.startswith(label + "/")}


def assert_same(ours: dict, theirs: dict, context: str):
    for key, want in theirs.items():
        assert key in ours, f"{context}: {key} missing"
        got = ours[key]
        assert got.shape == want.shape and got.dtype == want.dtype, \
            f"{context}: {key} is {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0)
        assert np.array_equal(got, want), f"{context}: {key} differs, max abs diff {diff:.3e}"


# ---------------------------------------------------------------- formats vs upstream


def test_golden_formats_present():
    assert len(INDEX) >= 4 and len(VARIANTS) >= 36, f"golden/formats missing; {REGENERATE}"


@pytest.mark.parametrize("name,variant", VARIANTS, ids=[f"{n}/{v}" for n, v in VARIANTS])
def test_every_format_reads_upstream_tensors(name, variant):
    """Each file holds a subset of upstream's state dict (safetensors drops tied copies), bit for bit."""
    label = precision(variant)
    state = read_state_dict(FORMATS / name / variant)
    want = expected(name, label)
    assert set(state) <= set(want), f"{name}/{variant}: unknown names {sorted(set(state) - set(want))[:5]}"
    ours = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in state.items()}
    assert_same(ours, {k: want[k] for k in state}, f"{name}/{variant}")
    floats = {v.dtype for v in state.values() if v.dtype.kind == "f"}
    want_float = np.dtype(np.float16) if label == "float16" else np.dtype(np.float32)  # bfloat16 decodes to float32
    assert floats == {want_float}, f"{name}/{variant}: float dtypes {floats}, expected {want_float}"
    assert isinstance(state, StateDict) and all(Path(state.files[k]).is_file() for k in state)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,variant", VARIANTS, ids=[f"{n}/{v}" for n, v in VARIANTS])
def test_from_pretrained_every_format(name, variant, dtype):
    """Parameters equal those matched from upstream's state dict (or upstream's float32 upcast), bit for bit."""
    info = INDEX[name]
    spec = family(info["family"])
    model = refimpl.from_pretrained(FORMATS / name / variant, dtype=dtype)
    cfg = model.config
    want = match_params(expected(name, precision(variant)), spec.param_shapes(cfg, info["architecture"]), dtype,
                        base_prefix=spec.base_prefix, tied=spec.tied, ignore=spec.ignored_buffers)
    assert set(model.params) == set(want)
    assert_same(model.params, want, f"{name}/{variant}/{dtype}")


@pytest.mark.parametrize("file", ["pytorch_model.bin", "legacy.bin"])
def test_every_torch_dtype_and_view(file):
    """float64/16, bfloat16, every integer type incl. uint16/32 (_rebuild_tensor_v3), bool, views sharing a
    storage (transposed, row, strided column, expanded position_ids), empty, scalar."""
    want = load_file(str(FORMATS / "special" / "expected.safetensors"))
    state = read_torch_file(FORMATS / "special" / file)
    assert set(state) == set(want), f"{file}: names differ: {sorted(set(state) ^ set(want))}"
    assert_same(state, want, file)


def _mapped(array) -> bool:  # is this array a view of a memory map (not a copy in RAM)?
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base
    return False


@pytest.mark.parametrize("variant", ["safetensors", "safetensors-sharded", "bin", "bin-sharded", "bin-legacy"])
def test_float_tensors_are_memory_mapped(variant):
    state = read_state_dict(FORMATS / "opt-OPTForCausalLM" / variant)
    assert all(_mapped(v) and not v.flags.writeable for v in state.values()), variant


def test_float32_params_are_copied_by_default_and_mapped_with_mmap():
    source = FORMATS / "opt-OPTForCausalLM" / "safetensors"
    copied = refimpl.from_pretrained(source, dtype="float32")
    assert not any(_mapped(v) for v in copied.params.values())
    mapped = refimpl.from_pretrained(source, dtype="float32", mmap=True)
    assert all(_mapped(v) and not v.flags.writeable for v in mapped.params.values())
    for name, value in copied.params.items():
        np.testing.assert_array_equal(value, mapped.params[name], err_msg=name)


def test_refimpl_never_imports_torch():
    files = [str(FORMATS / "opt-OPTModel" / v) for v in ("bin", "bin-legacy", "bfloat16", "safetensors-sharded")]
    code = ("import sys, refimpl; from refimpl.checkpoint import read_state_dict; "
            f"[read_state_dict(f) for f in {files!r}]; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- dtypes


def test_bfloat16_decoding_is_bitwise(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0xFF80, 0x0001, 0x8000, 0x7FC0, 0x4049], np.uint16)
    want = (bits.astype(np.uint32) << 16).view(np.float32)  # the definition of bfloat16
    header = json.dumps({"x": {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}}).encode()
    file = tmp_path / "bf16.safetensors"
    file.write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    got = read_safetensors(file)["x"]
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_integer_buffers_are_kept(tmp_path):
    save_file({"ids": np.arange(5, dtype=np.int64), "flag": np.array([True, False]), "w": np.ones(3, np.float16)},
              str(tmp_path / "model.safetensors"))
    state = read_state_dict(tmp_path)
    assert state["ids"].dtype == np.int64 and state["flag"].dtype == np.bool_ and state["w"].dtype == np.float16
    params = match_params(state, {"w": (3,)}, np.float64, ignore=("ids", "flag"))
    assert params["w"].dtype == np.float64
    with pytest.raises(CheckpointError, match=r"model.safetensors: weight 'ids' has dtype int64"):
        match_params(state, {"ids": (5,)}, np.float32)


# ---------------------------------------------------------------- names


def test_prefix_variants_both_ways():
    a = np.zeros(2, np.float32)
    assert set(match_params({"decoder.w": a}, {"model.decoder.w": (2,)}, np.float32, base_prefix="model")) \
        == {"model.decoder.w"}  # a base-model file (OPTModel: "decoder.*") into a head model
    assert set(match_params({"model.decoder.w": a}, {"decoder.w": (2,)}, np.float32, base_prefix="model")) \
        == {"decoder.w"}
    with pytest.warns(UserWarning, match="ignoring 1 unexpected weights: led.shared.weight"):
        got = match_params({"led.shared.weight": a, "shared.weight": a + 1}, {"shared.weight": (2,)}, np.float32,
                           base_prefix="led")
    assert got["shared.weight"][0] == 1  # an exact name wins over a prefix variant


def test_gamma_beta_renames_as_upstream():
    state = {"nezha.embeddings.LayerNorm.gamma": np.ones(3, np.float32),
             "nezha.embeddings.LayerNorm.beta": np.zeros(3, np.float32)}
    got = match_params(state, {"embeddings.LayerNorm.weight": (3,), "embeddings.LayerNorm.bias": (3,)}, np.float32,
                       base_prefix="nezha")
    assert got["embeddings.LayerNorm.weight"][0] == 1 and got["embeddings.LayerNorm.bias"][0] == 0


def test_tied_and_default_buffers():
    state = {"model.shared.weight": np.ones((4, 2), np.float32)}
    got = match_params(state, {"lm_head.weight": (4, 2), "final_logits_bias": (1, 4)}, np.float64,
                       base_prefix="model", tied={"lm_head.weight": "model.shared.weight"},
                       defaults={"final_logits_bias": np.zeros})
    assert got["lm_head.weight"].dtype == np.float64 and not got["final_logits_bias"].any()
    with pytest.raises(CheckpointError, match=r"missing weights: final_logits_bias \(1, 4\)"):
        match_params(state, {"final_logits_bias": (1, 4)}, np.float32)


def test_unexpected_weights_reported_once():
    state = {"w": np.ones(2, np.float32), **{f"extra.{i}": np.ones(1, np.float32) for i in range(10)},
             "layers.0.attn.bias_buffer": np.ones(1, np.float32)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        match_params(state, {"w": (2,)}, np.float32, ignore=("bias_buffer",), source="ckpt")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "ignoring 10 unexpected weights" in messages[0] and "bias_buffer" not in messages[0]


def test_shape_mismatch_names_file_and_key(tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(FORMATS / "opt-OPTModel" / "bin-sharded", directory)
    config = json.loads((directory / "config.json").read_text())
    config["ffn_dim"] = 21
    (directory / "config.json").write_text(json.dumps(config))
    shard = r"pytorch_model-0000\d-of-0000\d\.bin"
    with pytest.raises(CheckpointError, match=shard + r": weight 'decoder\.layers\.\d\.fc\d\.(weight|bias)' has shape"):
        refimpl.from_pretrained(directory)


# ---------------------------------------------------------------- the Hugging Face cache


def make_cache(root: Path, repo_id="org/tiny", commit="0123abcd" * 5, source=FORMATS / "opt-OPTModel" / "safetensors"):
    """The layout huggingface_hub writes: blobs/ holds contents, snapshots/<commit>/ symlinks to them."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(source.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint lookup tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_repo_id_with_cache_dir(tmp_path, no_network):
    snapshot = make_cache(tmp_path / "cache")
    model = refimpl.from_pretrained("org/tiny", cache_dir=tmp_path / "cache")
    reference = refimpl.from_pretrained(FORMATS / "opt-OPTModel" / "safetensors")
    assert_same(model.params, reference.params, "hub cache")
    assert resolve_checkpoint("org/tiny", cache_dir=tmp_path / "cache", revision="0123abcd" * 5) == snapshot


def test_cache_environment_variables_in_upstream_order(tmp_path, monkeypatch, no_network):
    for variable in ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE",
                     "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    assert hub_cache_dir() == Path("~/.cache/huggingface/hub").expanduser()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache_dir() == tmp_path / "hub"
    monkeypatch.setenv("TRANSFORMERS_CACHE", str(tmp_path / "tc"))  # transformers 4.37.2 reads it first
    assert hub_cache_dir() == tmp_path / "tc"
    assert hub_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    make_cache(tmp_path / "tc", repo_id="org2/tiny")
    assert refimpl.from_pretrained("org2/tiny").architecture == "OPTModel"


def test_cache_misses_are_clear(tmp_path, no_network):
    make_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        refimpl.from_pretrained("org/absent", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"revision 'v2'.*cached snapshots: \['0123abcd"):
        refimpl.from_pretrained("org/tiny", cache_dir=tmp_path, revision="v2")
    with pytest.raises(CheckpointError, match="never downloads"):  # the same error is also a CheckpointError
        read_state_dict("org/absent", cache_dir=tmp_path)
    local = read_state_dict(FORMATS / "opt-OPTModel" / "safetensors")
    assert_same(read_state_dict("org/tiny", cache_dir=tmp_path), local, "read_state_dict(repo id)")


# ---------------------------------------------------------------- unsafe pickles are refused


class Payload:
    """Unpickling this calls `func(*args)`; every payload below would create `marker` if it ran."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path):
    write = f"open({str(marker)!r}, 'w').write('ran')"
    code = write.encode()
    return {
        "os.system": pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2),
        "eval": pickle.dumps(Payload(eval, write), protocol=2),
        "builtins.exec": pickle.dumps(Payload(exec, write), protocol=2),
        "exec_protocol5": pickle.dumps(Payload(exec, write), protocol=5),  # STACK_GLOBAL inside a FRAME
        "nested_reduce": pickle.dumps(OrderedDict(w=Payload(OrderedDict, [("x", Payload(exec, write))])), protocol=2),
        # a real tensor record whose storage argument is computed by exec(...): an allowed call wrapping a forbidden one
        "inside_tensor_args": (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w"
                               b"ctorch._utils\n_rebuild_tensor_v2\n(cbuiltins\nexec\nX" + len(code).to_bytes(4, "little")
                               + code + b"\x85RK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu."),
    }


class LiveUnpickler(pickle.Unpickler):
    """Plain pickle, except torch's rebuild function is a no-op: proves a payload runs when unpickled normally."""

    def find_class(self, module, name):
        return (lambda *args: None) if module == "torch._utils" else super().find_class(module, name)


def torch_zip(pickled: bytes, storages=()) -> bytes:  # the layout torch.save writes
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        for key, data in storages:
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def torch_legacy(pickled: bytes) -> bytes:
    head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    return head + pickled + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("kind", ["os.system", "eval", "builtins.exec", "exec_protocol5", "nested_reduce",
                                  "inside_tensor_args"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_pickles_are_refused_before_running(tmp_path, kind, container):
    marker = tmp_path / "marker"
    pickled = payloads(marker)[kind]
    file = tmp_path / "pytorch_model.bin"
    file.write_bytes(torch_zip(pickled) if container == "zip" else torch_legacy(pickled))
    with pytest.raises(CheckpointError, match="refusing"):
        read_state_dict(tmp_path)
    assert not marker.exists(), f"{kind}: the payload ran"
    LiveUnpickler(io.BytesIO(pickled)).load()  # the test's own check: unpickled normally, the payload runs
    assert marker.exists(), f"{kind}: the payload is not live"


def test_build_opcode_cannot_patch_rebuild_functions(tmp_path):
    # GLOBAL torch._utils._rebuild_tensor_v2; BUILD {"__defaults__": ...}: would rewrite our function's defaults
    pickled = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00__defaults__)sb."
    (tmp_path / "pytorch_model.bin").write_bytes(torch_zip(pickled))
    with pytest.raises(CheckpointError, match="refusing a pickle opcode"):
        read_state_dict(tmp_path)
    from refimpl.formats import torch_pickle

    assert torch_pickle._rebuild_tensor_v2.__defaults__ == (False, None, None)


def test_tensor_views_are_checked_against_their_storage(tmp_path):
    # _rebuild_tensor_v2(("storage", FloatStorage, "0", "cpu", 4), offset 2, size (3,), stride (1,)): 2 + 3 > 4
    pickled = (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w"
               b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
               b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x02K\x03\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rt"
               b"Ru.")
    (tmp_path / "pytorch_model.bin").write_bytes(torch_zip(pickled, [("0", np.arange(4, dtype="<f4").tobytes())]))
    with pytest.raises(CheckpointError, match=r"tensor 'w' \[3\] \(offset 2, stride \[1\]\) does not fit its storage"):
        read_state_dict(tmp_path)


# ---------------------------------------------------------------- bad files


def tiny_safetensors() -> bytes:
    buffer = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int64),
              "c": np.ones(2, np.float16)}
    from safetensors.numpy import save

    return save(buffer)


def tiny_torch_bin(kind: str) -> bytes:
    variant = "bin-legacy" if kind == "legacy" else "bfloat16-bin"
    return (FORMATS / "opt-OPTModel" / variant / "pytorch_model.bin").read_bytes()


@pytest.mark.parametrize("cut", [0, 7, 8, 40, -1, -13])
def test_truncated_safetensors(tmp_path, cut):
    data = tiny_safetensors()
    file = tmp_path / "model.safetensors"
    file.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=str(file)):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("header,message", [
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}).encode(),
     "tensor 'a' has dtype 'F8_E4M3'"),
    (json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode(),
     r"tensor 'a': F32 \[3\] needs 12 bytes"),
    (json.dumps({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}).encode(), "bad shape"),
    (json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                 "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode(), "overlapping or missing"),
])
def test_bad_safetensors_headers(tmp_path, header, message):
    file = tmp_path / "model.safetensors"
    file.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(file)


@pytest.mark.parametrize("kind", ["zip", "legacy"])
@pytest.mark.parametrize("cut", [3, 200, -100, -1])
def test_truncated_torch_files(tmp_path, kind, cut):
    file = tmp_path / "pytorch_model.bin"
    file.write_bytes(tiny_torch_bin(kind)[:cut])
    with pytest.raises(CheckpointError, match=str(file)):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("variant", ["safetensors-sharded", "bin-sharded"])
def test_broken_shard_indexes(tmp_path, variant):
    directory = tmp_path / "ckpt"
    shutil.copytree(FORMATS / "opt-OPTForCausalLM" / variant, directory)
    index_file = next(directory.glob("*.index.json"))
    index = json.loads(index_file.read_text())
    shards = sorted(set(index["weight_map"].values()))
    key = sorted(index["weight_map"])[0]
    other = next(s for s in shards if s != index["weight_map"][key])
    wrong = dict(index, weight_map=dict(index["weight_map"], **{key: other}))
    index_file.write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match=f"the index puts '{key}' in .*, but it is in"):
        read_state_dict(directory)
    index_file.write_text(json.dumps(dict(index, weight_map=dict(index["weight_map"], ghost=shards[0]))))
    with pytest.raises(CheckpointError, match="the index puts 'ghost' in .*, but no shard holds it"):
        read_state_dict(directory)
    index_file.write_text(json.dumps(dict(index, weight_map=dict(index["weight_map"], x="../escape.bin"))))
    with pytest.raises(CheckpointError, match="must be a file name"):
        read_state_dict(directory)
    index_file.write_text(json.dumps(index))
    (directory / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match=f"shard {shards[-1]} is missing"):
        read_state_dict(directory)
    index_file.write_text("{not json")
    with pytest.raises(CheckpointError, match="shard index is not valid JSON"):
        read_state_dict(directory)


def test_empty_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no weights found"):
        read_state_dict(tmp_path)


# ---------------------------------------------------------------- fuzzing: CheckpointError or a result, nothing else


def mutate(data: bytes, flips, cut) -> bytes:
    data = bytearray(data[:cut] if cut is not None else data)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    return bytes(data)


MUTATIONS = dict(flips=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=4),
                 cut=st.none() | st.integers(0, 4096))


def read_or_refuse(file: Path, reader):
    try:
        result = reader(file)
    except CheckpointError as err:
        assert str(file) in str(err)
        return
    for array in result.values():  # whatever was returned must be usable arrays
        np.asarray(array, dtype=np.float64).sum()


@FUZZ
@given(**MUTATIONS)
def test_fuzz_safetensors(tmp_path_factory, flips, cut):
    file = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    file.write_bytes(mutate(tiny_safetensors(), flips, cut))
    read_or_refuse(file, read_safetensors)


@FUZZ
@given(kind=st.sampled_from(["zip", "legacy"]), **MUTATIONS)
def test_fuzz_torch_files(tmp_path_factory, kind, flips, cut):
    file = tmp_path_factory.mktemp("fuzz") / "pytorch_model.bin"
    file.write_bytes(mutate(tiny_torch_bin(kind), flips, cut))
    read_or_refuse(file, read_torch_file)


@FUZZ
@given(**MUTATIONS, payload=st.sampled_from(["os.system", "builtins.exec", "nested_reduce"]))
def test_fuzz_pickle_inside_valid_zip(tmp_path_factory, flips, cut, payload):
    """Mutate data.pkl itself (the zip's CRC would otherwise catch most flips) and the malicious pickles."""
    directory = tmp_path_factory.mktemp("fuzz")
    marker = directory / "marker"
    with zipfile.ZipFile(io.BytesIO(tiny_torch_bin("zip"))) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("/data.pkl"))
    storages = [(n.rsplit("/", 1)[1], d) for n, d in members.items() if "/data/" in n]
    for source in (members[pkl], payloads(marker)[payload]):
        file = directory / "pytorch_model.bin"
        file.write_bytes(torch_zip(mutate(source, flips, cut), storages))
        read_or_refuse(file, read_torch_file)
        assert not marker.exists()


def test_copied_weights_count_once_in_peak_memory(tmp_path):
    """match_params copies each weight out of its memory-mapped file and drops the file's pages from the
    process right after (release_pages): loading 192 MB of weights raises the peak RSS by about 192 MB, not
    twice that (the file's pages plus the copies), and the copies hold the file's numbers. Measured as the
    resident memory with the file still mapped (ru_maxrss would hide it: importing numba leaves a transient
    peak of its own, of a varying 100-250 MB)."""
    rng = np.random.default_rng(0)
    weights = {f"w{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(48)}  # 48 x 4 MB
    save_file(weights, str(tmp_path / "model.safetensors"))
    code = f"""
import resource, numpy as np
from refimpl.checkpoint import match_params, read_state_dict
state = read_state_dict({str(tmp_path / "model.safetensors")!r})
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20  # MB
before = resident()
params = match_params(state, {{k: (1024, 1024) for k in state}}, np.float32)
grown = resident() - before  # state (the file's map) is still alive here
print(grown, sum(float(np.abs(a).sum()) for a in params.values()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    grown, total = map(float, out.stdout.split())
    assert grown < 192 * 1.4, f"loading 192 MB of weights left {grown:.0f} MB resident"
    assert total == pytest.approx(sum(float(np.abs(w).sum()) for w in weights.values()), rel=1e-9)
