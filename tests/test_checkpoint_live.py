"""Checkpoint readers against torch.load (torch needed)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from refimpl.formats.torch_pickle import read_torch_file
from test_checkpoint import FUZZ  # noqa: F401


# ---------------------------------------------------------------- live: against torch.load (skipped without torch)

TORCH_DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]


@pytest.mark.upstream
@FUZZ
@given(data=st.data(), legacy=st.booleans())
def test_torch_files_match_torch_load(tmp_path_factory, data, legacy):
    """Random state dicts of every dtype, with shared storages and strided views, as torch.save writes them."""
    torch = pytest.importorskip("torch")
    state = {}
    for i in range(data.draw(st.integers(1, 4))):
        dtype = getattr(torch, data.draw(st.sampled_from(TORCH_DTYPES)))
        shape = data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
        base = (torch.randn(shape) * 50).to(dtype)
        state[f"t{i}"] = base
        if base.ndim >= 2 and data.draw(st.booleans()):
            state[f"t{i}.T"] = base.transpose(0, -1)  # a view sharing the storage
        if base.ndim >= 1 and base.shape[0] > 1:
            state[f"t{i}.slice"] = base[1:]  # a storage offset
    file = tmp_path_factory.mktemp("live") / "pytorch_model.bin"
    torch.save(state, file, _use_new_zipfile_serialization=not legacy)
    ours = read_torch_file(file)
    theirs = torch.load(file, weights_only=True)
    assert set(ours) == set(theirs)
    for key, tensor in theirs.items():
        want = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        assert ours[key].dtype == want.dtype and ours[key].shape == want.shape, f"{key}: {ours[key].dtype}{ours[key].shape}"
        assert np.array_equal(ours[key], want, equal_nan=want.dtype.kind == "f"), f"{key} differs"
