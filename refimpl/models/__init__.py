"""One module per family. Each exposes:

- `ARCHITECTURES`: {upstream class name: forward function(params, cfg, **upstream keyword arguments)}
- `param_shapes(cfg, architecture)`: {state-dict name: shape} of every weight that class uses
- `BASE_PREFIX`: upstream's `base_model_prefix`; `TIED`: {weight: the weight it is tied to}
"""
import importlib

FAMILIES = {"opt": "refimpl.models.opt", "xglm": "refimpl.models.xglm", "nezha": "refimpl.models.nezha",
            "led": "refimpl.models.led"}


def family_module(model_type: str):
    if model_type not in FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not supported; expected one of {sorted(FAMILIES)}")
    try:
        return importlib.import_module(FAMILIES[model_type])
    except ModuleNotFoundError as err:
        if err.name == FAMILIES[model_type]:
            raise NotImplementedError(f"the {model_type} family is not implemented yet") from None
        raise
