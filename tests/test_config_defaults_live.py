"""Every config class's defaults against upstream's config classes (transformers 4.37.2), field by field:
the four families' model configs and the generation config. A config.json that leaves a key out must
mean what it means upstream."""
import dataclasses

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from refimpl.generation.config import GenerationConfig  # noqa: E402
from refimpl.models.led import LEDConfig  # noqa: E402
from refimpl.models.nezha import NezhaConfig  # noqa: E402
from refimpl.models.opt import OPTConfig  # noqa: E402
from refimpl.models.xglm import XGLMConfig  # noqa: E402

FAMILIES = [(LEDConfig, "LEDConfig"), (NezhaConfig, "NezhaConfig"), (OPTConfig, "OPTConfig"),
            (XGLMConfig, "XGLMConfig")]
# refimpl's own fields, not config.json keys: the float64 policy and the keys kept untouched
OWN = {"islands", "islands_cpu", "extra"}


def _mismatches(ours, theirs, names):
    return [f"{name}: refimpl {getattr(ours, name)!r}, upstream {getattr(theirs, name)!r}"
            for name in names if getattr(ours, name) != getattr(theirs, name)]


@pytest.mark.parametrize("ours, name", FAMILIES, ids=[n for _, n in FAMILIES])
def test_model_config_defaults_are_upstreams(ours, name):
    theirs = getattr(transformers, name)()
    names = [f.name for f in dataclasses.fields(ours) if f.name not in OWN | {"id2label"}]
    assert not [n for n in names if not hasattr(theirs, n)], "fields upstream's config does not have"
    # the same defaults whether built directly or from an empty config.json
    for config in (ours(), ours.from_dict({})):
        problems = _mismatches(config, theirs, names)
        assert not problems, f"{name} defaults differ from upstream's:\n" + "\n".join(problems)
        assert config.num_labels == theirs.num_labels == len(theirs.id2label)
    assert getattr(ours, "attribute_map", {}).items() <= theirs.attribute_map.items()
    # the aliases upstream accepts in a config.json name the same field
    for alias, field in getattr(ours, "attribute_map", {}).items():
        value = getattr(theirs, field) * 2
        assert getattr(ours.from_dict({alias: value}), field) == getattr(
            getattr(transformers, name)(**{alias: value}), field) == value


@pytest.mark.parametrize("ours, name", FAMILIES, ids=[n for _, n in FAMILIES])
def test_model_config_without_a_key_keeps_the_other_defaults(ours, name):
    """Each field set alone: the others keep upstream's defaults (a default computed from another field,
    such as OPT's word_embed_proj_dim, follows it as upstream's does)."""
    theirs_cls = getattr(transformers, name)
    for f in dataclasses.fields(ours):
        default = getattr(ours(), f.name)
        if f.name in OWN | {"id2label", "model_type"} or not isinstance(default, int) or isinstance(default, bool):
            continue
        mine = None
        for value in dict.fromkeys([default * 2, default // 2, default + 1]):  # the first one refimpl accepts
            if value != default:
                try:
                    mine = ours.from_dict({f.name: value})
                    break
                except ValueError:
                    continue
        assert mine is not None, f"{name}: no other value of {f.name} accepted"
        theirs = theirs_cls(**{f.name: value})
        names = [g.name for g in dataclasses.fields(ours) if g.name not in OWN | {"id2label"}]
        problems = _mismatches(mine, theirs, names)
        assert not problems, f"{name}({f.name}={value}):\n" + "\n".join(problems)


def test_generation_config_defaults_are_upstreams():
    theirs = transformers.GenerationConfig()
    names = [f.name for f in dataclasses.fields(GenerationConfig)]
    missing = [n for n in names if not hasattr(theirs, n)]
    assert not missing, f"fields upstream's GenerationConfig does not have: {missing}"
    problems = _mismatches(GenerationConfig(), theirs, names)
    assert not problems, "GenerationConfig defaults differ from upstream's:\n" + "\n".join(problems)
    # and every option upstream's GenerationConfig carries is a field here
    upstream_fields = set(theirs.to_dict()) - {"transformers_version"}
    assert upstream_fields <= set(names) | {"transformers_version"}, upstream_fields - set(names)
