"""The hand-built checkpoint files of test_mutation_formats.py read by torch.load: refimpl reads what torch reads."""
import numpy as np
import pytest

from refimpl.formats.torch_pickle import read_torch_file
from test_mutation_formats import (PROTO2, MARK, STOP, floats, legacy_two_storages, one_float_tensor, parameter,
                                   pid, state, tensor, text, zip_file)

torch = pytest.importorskip("torch")


def views():
    return state(("a", tensor(pid("0", numel=6), 0, (2, 3), (3, 1))), ("t", tensor(pid("0", numel=6), 0, (3, 2), (1, 3))),
                 ("s", tensor(pid("0", numel=6), 1, (2,), (2,))), ("b", tensor(pid("0", numel=6), 5, (3,), (0,))),
                 ("e", tensor(pid("0", numel=6), 6, (0, 3), (3, 1))))


CASES = {
    "views": lambda: zip_file(views(), [("0", floats(6))]),
    "rebuild functions": lambda: zip_file(state(
        ("v1", tensor(pid("0", numel=4), 1, (3,), (1,), version="v1")),
        ("p", parameter(tensor(pid("0", numel=4), 2, (2,), (1,)))),
        ("v3", tensor(pid("1", "UntypedStorage", 6, module="torch.storage"), 0, (3,), (1,), "v3", "uint16"))),
        [("0", floats(4)), ("1", np.array([7, 8, 9], "<u2").tobytes())]),
    "bfloat16": lambda: zip_file(state(("a", tensor(pid("0", "BFloat16Storage", 4), 0, (4,), (1,))),
                                       ("b", tensor(pid("0", "BFloat16Storage", 4), 1, (2,), (1,)))),
                                 [("0", np.array([0x3F80, 0xC000, 0x4049, 0], "<u2").tobytes())]),
    "big-endian zip": lambda: zip_file(one_float_tensor(), [("0", floats(4, 1.5, ">"))], byteorder=b"big"),
    "no byteorder": lambda: zip_file(one_float_tensor(), [("0", floats(4, 1.5))], byteorder=None),
    "empty name, MARK DICT": lambda: zip_file(PROTO2 + MARK + text("") + tensor(pid("0")) + b"d" + STOP,
                                              [("0", floats(4))]),
    "legacy": lambda: legacy_two_storages(),
    "32 dims": lambda: zip_file(state(("w", tensor(pid("0", numel=2), 0, (1,) * 31 + (2,), (1,) * 32))),
                                [("0", floats(2))]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_built_files_read_as_torch_reads_them(tmp_path, case):
    file = tmp_path / "pytorch_model.bin"
    file.write_bytes(CASES[case]())
    theirs = torch.load(file, weights_only=False)  # built by the test itself; MARK DICT is beyond weights_only
    ours = read_torch_file(file)
    assert list(ours) == list(theirs), case
    for key, value in theirs.items():
        want = (value.float() if value.dtype == torch.bfloat16 else value).detach().numpy()
        got = ours[key]
        assert got.shape == want.shape and got.dtype.newbyteorder("=") == want.dtype, \
            f"{case}/{key}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
        assert np.array_equal(got, want), f"{case}/{key}: max diff {np.abs(got - want).max(initial=0)}"


@pytest.mark.parametrize("legacy", [False, True])
def test_parameters_unsigned_types_and_empty_names_as_torch_saves_them(tmp_path, legacy):
    state_dict = {"p": torch.nn.Parameter(torch.arange(6.0).reshape(2, 3)), "": torch.ones(2, dtype=torch.float16),
                  "z": torch.zeros(0, 3), "x": torch.arange(5.0)[3:]}
    if not legacy:  # the old layout has no storage class for torch's unsigned types beyond uint8
        state_dict.update(u16=torch.tensor([1, 65535], dtype=torch.int32).to(torch.uint16),
                          u32=torch.tensor([7, 1 << 31], dtype=torch.int64).to(torch.uint32))
    file = tmp_path / "pytorch_model.bin"
    torch.save(state_dict, file, _use_new_zipfile_serialization=not legacy)
    ours, theirs = read_torch_file(file), torch.load(file, weights_only=True)
    assert set(ours) == set(theirs) == set(state_dict)
    for key, value in theirs.items():
        want = value.detach().numpy()
        assert ours[key].dtype == want.dtype and np.array_equal(ours[key], want), key
