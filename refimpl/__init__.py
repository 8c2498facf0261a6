"""refimpl: a pure-NumPy reference implementation of LED, NEZHA, XGLM and OPT (transformers 4.37.2).

    import refimpl
    model = refimpl.from_pretrained("path/to/checkpoint", dtype="float64")
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
"""
from .runtime import shorten_blas_spin

shorten_blas_spin()  # before anything imports NumPy: see refimpl/runtime.py

from .config import load_config  # noqa: E402
from .modeling import Model, from_pretrained  # noqa: E402

__all__ = ["from_pretrained", "load_config", "Model", "load_tokenizer"]
__version__ = "0.1.0"


def load_tokenizer(path, **kwargs):
    """Load the tokenizer of a checkpoint directory (see refimpl.tokenizers)."""
    from .tokenizers import load_tokenizer as _load

    return _load(path, **kwargs)
