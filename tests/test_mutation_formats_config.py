"""config.json reading and the PretrainedConfig keys every family shares, each check at its edge.

Expected behaviour is upstream's PretrainedConfig (transformers 4.37.2): `num_labels=n` means
id2label {i: "LABEL_i"}, id2label keys are integer strings, an attribute_map alias names the same field;
refimpl refuses what upstream would take silently wrong (a token id outside the vocabulary, a negative epsilon).
"""
from __future__ import annotations

import json
import re
import math
import os

import numpy as np
import pytest

from refimpl.config import (MAX_COUNT, BaseConfig, ConfigDict, ConfigError, check_heads, check_islands, in_islands,
                            read_config_json)
from refimpl.models.opt import OPTConfig
from refimpl.models.xglm import XGLMConfig
from refimpl.modeling import resolve_dtype
from refimpl.outputs import CausalLMOutputWithPast, output_class, returned, use_return_dict, with_loss

TINY = {"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "ffn_dim": 8, "num_attention_heads": 2,
        "max_position_embeddings": 16}


def opt(**fields):
    raw = ConfigDict({**TINY, **fields})
    raw.source = "cfg.json"
    return OPTConfig.from_dict(raw)


def refused(match, **fields):
    with pytest.raises(ConfigError, match=match):
        opt(**fields)


def test_shared_defaults_are_upstreams():
    base = BaseConfig()
    assert (base.use_cache, base.output_attentions, base.output_hidden_states, base.tie_word_embeddings,
            base.is_encoder_decoder, base.is_decoder, base.add_cross_attention) == (True, False, False, True,
                                                                                    False, False, False)
    assert base.num_labels == 2 and base.islands is None and base.islands_cpu == "avx2"
    assert (XGLMConfig().decoder_start_token_id, XGLMConfig().pad_token_id, XGLMConfig().bos_token_id,
            XGLMConfig().eos_token_id) == (2, 1, 0, 2)
    with pytest.raises(Exception):
        base.use_cache = False  # frozen: a loaded config cannot be changed in place, only .replace()d
    assert base.replace(use_cache=False).use_cache is False


def test_unknown_keys_go_to_extra_and_do_not_change_equality():
    a, b = opt(note="x"), opt(note="y")
    assert a.extra == {"note": "x"} and a == b and "note" not in repr(a)


def test_num_labels_and_id2label():
    assert opt(num_labels=3).id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and opt(num_labels=3).num_labels == 3
    assert MAX_COUNT == 65536  # layers, heads, labels: the documented bound
    assert opt(num_labels=1).num_labels == 1 and opt(num_labels=MAX_COUNT).num_labels == MAX_COUNT
    assert opt(id2label={"0": "NEG", "1": "POS"}, num_labels=5).id2label == {0: "NEG", 1: "POS"}  # id2label wins
    for bad in (0, MAX_COUNT + 1, True, 2.0):
        refused(rf"field 'num_labels' = {bad!r}: expected an integer from 1 to {MAX_COUNT}", num_labels=bad)
    assert opt(id2label={"7": "x", 3: "y"}).id2label == {7: "x", 3: "y"}
    assert opt(id2label={str(MAX_COUNT - 1): "x"}).num_labels == 1
    for key in ("-1", str(MAX_COUNT), "a", "1" * 20):
        refused(rf"field \"id2label\[{key!r}\]\" = {key!r}: expected an integer label index >= 0", id2label={key: "x"})
    refused(r"field 'id2label' = \['a'\]: expected an object", id2label=["a"])
    assert opt(id2label=None).num_labels == 2


def test_attribute_map_aliases():
    cfg = XGLMConfig.from_dict({"hidden_size": 8, "attention_heads": 2, "num_layers": 1})
    assert cfg.d_model == 8 and "hidden_size" not in cfg.extra
    assert XGLMConfig.from_dict({"hidden_size": 8, "d_model": 8, "attention_heads": 2}).d_model == 8
    with pytest.raises(ConfigError, match=r"field 'hidden_size' = 8: expected the same value as 'd_model' \(16\)"):
        XGLMConfig.from_dict({"hidden_size": 8, "d_model": 16, "attention_heads": 2})


@pytest.mark.parametrize("name", ["pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"])
def test_token_ids_within_the_vocabulary(name):
    assert getattr(opt(**{name: 9}), name) == 9 and getattr(opt(**{name: 0}), name) == 0
    assert getattr(opt(**{name: None}), name) is None
    refused(rf"field '{name}' = 10: expected a token id in 0..9 \(or null\)", **{name: 10})
    refused(rf"field '{name}' = -1: expected a token id in 0..9", **{name: -1})


def test_problem_type_architectures_and_non_negative_numbers():
    for kind in ("regression", "single_label_classification", "multi_label_classification", None):
        assert opt(problem_type=kind).problem_type == kind
    refused(r"field 'problem_type' = 'x': expected null or one of \['regression', 'single_label_classification', "
            r"'multi_label_classification'\]", problem_type="x")
    assert opt(architectures=["OPTModel"]).architectures == ["OPTModel"]
    refused(r"field 'architectures' = \[1\]: expected a list of class names", architectures=[1])
    from refimpl.models.nezha import NezhaConfig

    base = {"hidden_size": 8, "num_attention_heads": 2}
    for name in ("layer_norm_eps", "classifier_dropout"):
        assert getattr(NezhaConfig.from_dict({**base, name: 0}), name) == 0
        with pytest.raises(ConfigError, match=rf"field '{name}' = -1e-12: expected a number >= 0"):
            NezhaConfig.from_dict({**base, name: -1e-12})
    assert NezhaConfig.from_dict({**base, "classifier_dropout": None}).classifier_dropout is None


@pytest.mark.parametrize("field,value,expected", [
    ("use_cache", 1, "true or false"), ("vocab_size", True, "an integer"), ("vocab_size", 10.0, "an integer"),
    ("activation_function", 3, "a string"), ("architectures", "OPTModel", "a list or null"),
    ("id2label", None, None), ("pad_token_id", "1", "an integer or null"),
])
def test_field_types_from_the_annotations(field, value, expected):
    if expected is None:
        assert getattr(opt(**{field: value}), field) is None
    else:
        refused(rf"cfg.json: field '{field}' = {value!r}: expected {expected}$", **{field: value})


def test_float_fields():
    from refimpl.models.nezha import NezhaConfig

    base = {"hidden_size": 8, "num_attention_heads": 2}
    assert NezhaConfig.from_dict({**base, "layer_norm_eps": 1}).layer_norm_eps == 1  # an integer is a number
    for bad in (math.inf, math.nan, True, "0.1"):
        with pytest.raises(ConfigError, match=r"field 'layer_norm_eps' = .*: expected a finite number$"):
            NezhaConfig.from_dict({**base, "layer_norm_eps": bad})
    with pytest.raises(ConfigError, match=r"field 'classifier_dropout' = 'x': expected a finite number or null$"):
        NezhaConfig.from_dict({**base, "classifier_dropout": "x"})


def test_islands_heads_and_config_files(tmp_path):
    check_islands(None, "avx2")
    check_islands("upstream", "avx512")
    with pytest.raises(ValueError, match=r"islands must be None .* got 'yes'"):
        check_islands("yes", "avx2")
    with pytest.raises(ValueError, match=r"islands_cpu must be one of \('avx2', 'avx512'\) .* got 'sse'"):
        check_islands(None, "sse")
    cfg = opt().replace(islands="upstream")
    f32, f64 = np.dtype("float32"), np.dtype("float64")
    assert in_islands(cfg, f64) and not in_islands(cfg, f32) and not in_islands(opt(), f64)
    check_heads(8, 2)
    check_heads(8, 1)
    check_heads(8, 8)
    for width, heads in ((8, 3), (8, 0), (8, -2)):
        with pytest.raises(ValueError, match=rf"hidden size {width} is not divisible by the number of attention "
                                             rf"heads {heads}"):
            check_heads(width, heads)
    with pytest.raises(FileNotFoundError, match="no config.json at"):
        read_config_json(tmp_path)
    os.symlink(tmp_path / "nowhere", tmp_path / "config.json")
    with pytest.raises(ConfigError, match="cannot read config.json"):  # a dangling link is named, not "missing"
        read_config_json(tmp_path)
    os.unlink(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"config.json must hold a JSON object, found list"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": 3}))
    with pytest.raises(ConfigError, match=r"field 'model_type' = 3: expected a string such as \"opt\""):
        read_config_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{1")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "opt"}))
    raw = read_config_json(tmp_path)
    assert raw == {"model_type": "opt"} and raw.source == str(tmp_path / "config.json")


# ---------------------------------------------------------------- dtypes and return_dict


def test_resolve_dtype():
    assert resolve_dtype("float32") == np.float32 and resolve_dtype(np.float64) == np.float64
    with pytest.raises(ValueError, match=r"dtype 'float16' is not supported; use 'float32' or 'float64'"):
        resolve_dtype("float16")
    with pytest.raises(ValueError, match=r"dtype float16 is not supported; use float32 or float64"):
        resolve_dtype(np.float16)


def test_return_dict_from_the_config_as_upstream():
    out = CausalLMOutputWithPast(logits=np.ones(2))
    assert returned(opt(), None, out) is out
    assert returned(opt(return_dict=False), None, out) == (out.logits,)
    assert returned(opt(torchscript=True), None, out) == (out.logits,)  # use_return_dict = return_dict and not torchscript
    assert returned(opt(return_dict=False), True, out) is out and returned(opt(), False, out) == (out.logits,)
    assert returned(opt(), False, out, as_tuple=lambda: ("mine",)) == ("mine",)
    assert use_return_dict(opt(), np.bool_(False)) is False
    with pytest.raises(ValueError, match=r"return_dict must be True, False or None, got 1"):
        use_return_dict(opt(), 1)
    with pytest.raises(ValueError, match=r"config 'torchscript' must be true or false, got 'yes'"):
        use_return_dict(opt(torchscript="yes"))
    assert with_loss(None, (1,)) == (1,) and with_loss(0.5, (1,)) == (0.5, 1)


def test_model_output_mapping_behaviour():
    out = CausalLMOutputWithPast(loss=None, logits=np.zeros(1), hidden_states=(1,))
    assert out.keys() == ["logits", "hidden_states"] and len(out) == 2 and list(out) == ["logits", "hidden_states"]
    assert out["hidden_states"] == (1,) and out[1] == (1,) and out.to_tuple()[0] is out.logits
    assert [k for k, _ in out.items()] == ["logits", "hidden_states"]
    with pytest.raises(KeyError):
        out["loss"]  # None fields are not keys, as upstream's ModelOutput
    cls = output_class("Pair", "a", "b", doc="two")
    assert cls.__doc__ == "two" and output_class("P", "x").__doc__ == "P(x)"
    pair = cls(b=2)
    assert pair.to_tuple() == (2,) and pair.a is None and isinstance(pair, CausalLMOutputWithPast.__mro__[1])


# ---------------------------------------------------------------- family specs and pruned heads


def spec(**changes):
    import dataclasses

    from refimpl.models import family

    base = family("opt")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return type(base)(**{**fields, **changes})


@pytest.mark.parametrize("changes,problem", [
    ({"config": dict}, "config must be a BaseConfig subclass"),
    ({"config": OPTConfig()}, "config must be a BaseConfig subclass"),
    ({"config": XGLMConfig}, "config.model_type is 'xglm'"),
    ({"base_model": "Nope"}, "base_model 'Nope' is not among the architectures"),
    ({"causal_lm": {"X": "w"}}, "causal_lm names 'X', which is not among the architectures"),
    ({"masked_lm": {"Y": "logits"}}, "masked_lm names 'Y'"),
    ({"sequence_classifiers": ("Z",)}, "sequence_classifiers names 'Z'"),
    ({"generates": ("W",)}, "generates names 'W'"),
    ({"generation": None}, "generates lists classes, but there are no generation hooks"),
    ({"param_shapes": 3}, "param_shapes is not callable"),
])
def test_family_spec_checks_itself(changes, problem):
    with pytest.raises(TypeError, match=rf"^family spec 'opt': .*{problem}"):
        spec(**changes)


def test_family_spec_accessors():
    import dataclasses

    s = spec(generates=(), generation=None)  # a family that does not generate is fine
    assert s.check_architecture("OPTModel") == "OPTModel"
    with pytest.raises(ValueError, match=r"'BertModel' is not a opt architecture; expected one of \['OPTForCausalLM'"):
        s.check_architecture("BertModel")
    params = {"model.decoder.w": 1, "lm_head.weight": 2}
    assert s.base_params(params, "OPTModel") is params
    assert dict(s.base_params(params, "OPTForCausalLM")) == {"decoder.w": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.base_model = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec().generation.decoder_mask = "x"  # a family's declared hooks cannot be changed by a caller
    assert spec().tied == {"lm_head.weight": "model.decoder.embed_tokens.weight"}


def test_pruned_heads():
    from refimpl.family import pruned_heads, refuse_pruned_heads

    def cfg(raw):
        return BaseConfig().replace(extra={"pruned_heads": raw})

    assert pruned_heads(cfg({"0": [1, 0], 2: [3], " 1 ": []}), 3, 4) == {0: frozenset({0, 1}), 2: frozenset({3}),
                                                                        1: frozenset()}
    assert pruned_heads(cfg(None), 3, 4) == {} and pruned_heads(BaseConfig(), 3, 4) == {}
    with pytest.raises(ValueError, match=r"config pruned_heads must map layer -> list of heads, got \[1\]"):
        pruned_heads(cfg([1]), 3, 4)
    for key in ("3", -1, "-1", "x", 1.0):
        with pytest.raises(ValueError, match=rf"config pruned_heads names layer {key!r}; the model has layers 0..2$"):
            pruned_heads(cfg({key: [0]}), 3, 4)
    for heads in ([4], [-1], [True], "0", [0.0]):
        with pytest.raises(ValueError, match=rf"config pruned_heads\['0'\] must list heads among 0..3, got "
                                             rf"{re.escape(repr(heads))}$"):
            pruned_heads(cfg({"0": heads}), 3, 4)
    refuse_pruned_heads(cfg({}), "OPTModel")
    with pytest.raises(ValueError, match=r"config pruned_heads=\{'0': \[1\]\}, but transformers 4.37.2 cannot prune "
                                         r"heads of OPTModel"):
        refuse_pruned_heads(cfg({"0": [1]}), "OPTModel")
