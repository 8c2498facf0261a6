"""Every rule of config validation, family by family: a width, vocabulary or position count below 1, a layer
or head count outside 1..MAX_COUNT, heads that do not divide the width, an unknown activation, a negative
relative distance: each refused by a ConfigError naming the field and the value; the bound itself accepted."""
import re

import pytest

from refimpl.config import MAX_COUNT, ConfigError
from refimpl.models.led import LEDConfig
from refimpl.models.nezha import NezhaConfig
from refimpl.models.opt import OPTConfig
from refimpl.models.xglm import XGLMConfig

SIZES = {
    OPTConfig: ["vocab_size", "hidden_size", "ffn_dim", "max_position_embeddings", "word_embed_proj_dim"],
    XGLMConfig: ["vocab_size", "d_model", "ffn_dim", "max_position_embeddings"],
    NezhaConfig: ["vocab_size", "hidden_size", "intermediate_size", "max_position_embeddings", "type_vocab_size"],
    LEDConfig: ["vocab_size", "d_model", "encoder_ffn_dim", "decoder_ffn_dim", "max_encoder_position_embeddings",
                "max_decoder_position_embeddings"],
}
COUNTS = {
    OPTConfig: ["num_hidden_layers", "num_attention_heads"], XGLMConfig: ["num_layers", "attention_heads"],
    NezhaConfig: ["num_hidden_layers", "num_attention_heads"],
    LEDConfig: ["encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads"],
}
HEADS = {OPTConfig: [("hidden_size", "num_attention_heads")], XGLMConfig: [("d_model", "attention_heads")],
         NezhaConfig: [("hidden_size", "num_attention_heads")],
         LEDConfig: [("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads")]}
ACTIVATION = {OPTConfig: "activation_function", XGLMConfig: "activation_function", NezhaConfig: "hidden_act",
              LEDConfig: "activation_function"}
CLASSES = list(SIZES)
IDS = [c.__name__ for c in CLASSES]


def refused(cls, values, name, value):
    with pytest.raises(ConfigError) as info:
        cls.from_dict(values)
    assert f"field {name!r} = {value!r}" in str(info.value), str(info.value)
    return str(info.value)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_sizes_must_be_at_least_one(cls):
    for name in SIZES[cls]:
        for bad in (0, -4):
            assert refused(cls, {name: bad}, name, bad).endswith("expected an integer >= 1")
        small = {name: 1}
        if name == "vocab_size":  # a 1-token vocabulary holds no special-token ids but 0
            small.update(pad_token_id=None, bos_token_id=None, eos_token_id=None, decoder_start_token_id=None)
        if name in ("hidden_size", "d_model"):  # a width of 1 takes one head (and XGLM's sinusoid needs 4)
            small = {name: 4, **{h: 1 for w, h in HEADS[cls]}}
        assert getattr(cls.from_dict(small), name) == small[name]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_counts_are_bounded(cls):
    for name in COUNTS[cls]:
        for bad in (0, MAX_COUNT + 1):
            msg = refused(cls, {name: bad}, name, bad)
            assert msg.endswith(f"expected an integer from 1 to {MAX_COUNT}")
        assert getattr(cls.from_dict({name: 1}), name) == 1


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_heads_divide_the_width(cls):
    for width, heads in HEADS[cls]:
        default = getattr(cls(), width)
        bad = next(h for h in range(3, 100) if default % h)
        msg = refused(cls, {heads: bad}, heads, bad)
        assert msg.endswith(f"expected a divisor of {width} = {default} (each head gets {width} / {heads} dimensions)")
        good = next(h for h in range(3, 100) if default % h == 0)
        assert getattr(cls.from_dict({heads: good}), heads) == good


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_activation_must_be_known(cls):
    from refimpl.ops import ACTIVATIONS

    name = ACTIVATION[cls]
    msg = refused(cls, {name: "swish2"}, name, "swish2")
    assert msg.endswith(f"expected one of {sorted(ACTIVATIONS)}")
    for act in ACTIVATIONS:
        assert getattr(cls.from_dict({name: act}), name) == act


def test_nezha_relative_distance_is_not_negative():
    assert refused(NezhaConfig, {"max_relative_position": -1}, "max_relative_position", -1).endswith(
        "expected an integer >= 0")
    assert NezhaConfig.from_dict({"max_relative_position": 0}).max_relative_position == 0


def test_led_windows():
    msg = refused(LEDConfig, {"attention_window": 3}, "attention_window", 3)
    assert msg.endswith("expected an even integer > 0, or a list of them")
    msg = refused(LEDConfig, {"attention_window": [4, 4], "encoder_layers": 3}, "attention_window", [4, 4])
    assert re.search(r"one window per encoder layer \(encoder_layers = 3\), got 2$", msg)
    assert LEDConfig.from_dict({"attention_window": [2, 4], "encoder_layers": 2}).attention_window == [2, 4]
