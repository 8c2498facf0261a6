"""refimpl: a pure-NumPy reference implementation of LED, NEZHA, XGLM and OPT (transformers 4.37.2).

    import refimpl
    model = refimpl.from_pretrained("path/to/checkpoint", dtype="float64")
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)

Importing refimpl changes nothing in the process: no environment variable, no library loaded (the
names below load their modules on first use). For speed, call `refimpl.runtime.configure_process()`
before anything imports NumPy (see refimpl/runtime.py); the `refimpl` command does.
"""
import importlib
import importlib.util

__version__ = "0.1.0"

_PUBLIC = {  # name -> the module that defines it
    "from_pretrained": "refimpl.modeling", "Model": "refimpl.modeling", "load_config": "refimpl.models",
    "set_backend": "refimpl.accel", "backend_info": "refimpl.accel",
}
__all__ = [*_PUBLIC, "load_tokenizer"]


def __getattr__(name):  # PEP 562: refimpl.from_pretrained, refimpl.scoring, ... load when first used
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: refimpl.scoring, refimpl.ops, ...
    raise AttributeError(f"module 'refimpl' has no attribute {name!r}")


def load_tokenizer(path, **kwargs):
    """Load the tokenizer of a checkpoint directory (see refimpl.tokenizers)."""
    from .tokenizers import load_tokenizer as _load

    return _load(path, **kwargs)
