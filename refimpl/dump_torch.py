"""`refimpl.dump_torch` is kept for existing code: the adapter lives in refimpl/dump/torch_dump.py."""
from .dump.common import save_dump  # noqa: F401
from .dump.torch_dump import dump_torch, first_tensor  # noqa: F401
