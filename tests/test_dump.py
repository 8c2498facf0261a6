"""refimpl.dump without any framework: importing it imports none, and the name tables do what they say
(the adapters themselves are tested against the real twins in test_dump_twins_live.py and
test_dump_onnx_live.py)."""
import subprocess
import sys

import numpy as np
import pytest

from refimpl.dump.common import change_layout, first_array, model_context, to_upstream
from refimpl.dump.tables import FLAX, TF


def test_import_refimpl_dump_imports_no_framework():
    code = ("import sys, refimpl, refimpl.dump, refimpl.dump_torch; "
            "print(sorted(m for m in ('torch', 'jax', 'flax', 'tensorflow', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class Config:  # what model_context reads from a transformers config
    def __init__(self, **fields):
        vars(self).update(fields)


def test_tf_opt_table_on_a_bare_model():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((2, 3, 5))  # [B, T, F] as TF computes the feed-forward
    raw = {"model.decoder.layers.0.fc1": rows, "model.decoder.layers.0.dropout_1": rows,
           "model.decoder.layers.0.final_layer_norm": rows, "model": rows[..., :4], "": rows[..., :4]}
    dump = to_upstream(raw, TF["opt"], model_context("TFOPTModel", Config(do_layer_norm_before=False)))
    assert list(dump) == ["decoder.layers.0.fc1", "decoder.layers.0.final_layer_norm", ""]  # main layer: the root
    assert dump["decoder.layers.0.fc1"].shape == (6, 5)                  # upstream's [B*T, F] rows
    assert dump["decoder.layers.0.final_layer_norm"].shape == (2, 3, 5)  # post-LN: not on rows upstream
    assert "lm_head" not in dump                                         # a bare model has no head


def test_tied_lm_head_and_led_layouts():
    logits = np.arange(24.0).reshape(2, 3, 4)
    dump = to_upstream({"model.layers.0.fc1": logits, "": logits}, FLAX["xglm"],
                       model_context("FlaxXGLMForCausalLM", Config()))
    assert dump["lm_head"] is dump[""]
    projection = np.arange(30.0).reshape(2, 5, 3)  # [B, T, D]
    dump = to_upstream({"led.led.shared": projection,
                        "led.encoder.layers.0.self_attn.longformer_self_attn.key_global": projection},
                       TF["led"], model_context("TFLEDForConditionalGeneration", Config()))
    assert list(dump) == ["led.shared", "led.encoder.layers.0.self_attn.longformer_self_attn.key_global"]
    np.testing.assert_array_equal(dump["led.encoder.layers.0.self_attn.longformer_self_attn.key_global"],
                                  projection.transpose(1, 0, 2))  # upstream's [T, B, D]


def test_first_array_and_bad_layout():
    assert first_array((np.ones(2, np.float32), "rest")).dtype == np.float64
    assert first_array(np.ones(2, np.int64)) is None and first_array("text") is None
    with pytest.raises(ValueError, match="unknown layout change 'BTD'"):
        change_layout(np.ones((2, 3, 4)), "BTD", "x")
