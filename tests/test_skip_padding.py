"""`skip_padding=True` (refimpl's own decoder argument, what scoring passes): the layers run on the real
positions only (refimpl.attention.PackedRows). Expected values are the padded forward's (every position
through every layer, the padding hidden by the attention mask only), itself checked against upstream by
the golden and live tests; and for scoring, log_softmax of the full logits."""
import re

import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl.attention import PackedRows
from refimpl.ops import log_softmax
from refimpl.scoring import token_logprobs
from refimpl.trace import tracing

BASES = ["opt/preln-OPTModel", "opt/postln-proj-OPTModel", "opt/nobias-noaffine-OPTModel",
         "xglm/gelu-scaled-XGLMModel", "xglm/gelunew-odd-XGLMModel", "xglm/relu-unscaled-XGLMModel"]
LMS = ["opt/preln-OPTForCausalLM", "opt/postln-proj-OPTForCausalLM", "xglm/gelu-scaled-XGLMForCausalLM"]
TOLERANCE = {"float32": 2e-6, "float64": 1e-13}  # relative to the largest value: float rounding only


def masks(batch=4, length=9):
    """Right padding, left padding, a hole inside a row, and no padding at all: {name: [B, T] 0/1}."""
    lengths = np.array([length, 3, 6, 1])[:batch]
    right = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    hole = right.copy()
    hole[0, 4] = 0
    return {"right": right, "left": right[:, ::-1].copy(), "hole": hole, "none": np.ones_like(right)}


def ids_for(model, mask, seed=0):
    ids = np.random.default_rng(seed).integers(3, model.config.vocab_size, size=mask.shape)
    return np.where(mask == 1, ids, model.config.pad_token_id)


def assert_close(got, expected, dtype, what):
    scale = max(float(np.abs(expected).max()), 1.0)
    worst = np.unravel_index(np.argmax(np.abs(got - expected)), got.shape) if got.size else ()
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    assert diff <= TOLERANCE[dtype] * scale, f"{what}: max |diff| {diff:.3g} at {worst} (scale {scale:.3g})"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["right", "left", "hole", "none"])
@pytest.mark.parametrize("checkpoint", BASES)
def test_real_positions_equal_the_padded_forward(checkpoint, layout, dtype):
    model = refimpl.from_pretrained(GOLDEN / checkpoint, dtype=dtype)
    mask = masks()[layout]
    ids = ids_for(model, mask)
    heads = model.config.num_attention_heads if hasattr(model.config, "num_attention_heads") else \
        model.config.attention_heads
    head_mask = np.ones(heads, dtype)
    head_mask[0] = 0.5
    for extra in ({}, {"head_mask": head_mask}):
        padded = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).last_hidden_state  # [B, T, D]
        packed = model(input_ids=ids, attention_mask=mask, use_cache=False, skip_padding=True,
                       **extra).last_hidden_state
        what = f"{checkpoint} {layout} {dtype} {sorted(extra)}"
        assert packed.shape == padded.shape and packed.dtype == padded.dtype, what
        real = mask == 1
        assert_close(packed[real], padded[real], dtype, what + " real positions")
        assert not packed[~real].any(), what + ": padding is not 0.0"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("checkpoint", LMS)
def test_padded_token_logprobs_are_the_full_log_softmax(checkpoint, dtype):
    """token_logprobs (which skips the padding) against log_softmax of the full logits of the padded forward,
    at every scored position; 0.0 elsewhere."""
    model = refimpl.from_pretrained(GOLDEN / checkpoint, dtype=dtype)
    for layout, mask in masks().items():
        ids = ids_for(model, mask, seed=1)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [B, T, V]
        expected = np.take_along_axis(log_softmax(logits[:, :-1]), ids[:, 1:, None], axis=-1)[..., 0]
        scored = (mask[:, 1:] == 1) & (mask[:, :-1] == 1)
        got = token_logprobs(model, ids, mask)
        assert_close(got[scored], expected[scored], dtype, f"{checkpoint} {layout} {dtype}")
        assert not got[~scored].any(), f"{checkpoint} {layout}: unscored positions are not 0.0"


@pytest.mark.parametrize("checkpoint", ["opt/preln-OPTModel", "xglm/gelu-scaled-XGLMModel"])
@pytest.mark.parametrize("option, named", [({"use_cache": True}, "use_cache=True"),
                                           ({"output_hidden_states": True}, "output_hidden_states=True"),
                                           ({"output_attentions": True}, "output_attentions=True")])
def test_what_skipping_cannot_give_is_refused(checkpoint, option, named):
    model = refimpl.from_pretrained(GOLDEN / checkpoint)
    mask = masks()["right"]
    with pytest.raises(ValueError, match=f"skip_padding=True .*{named}"):
        model(input_ids=ids_for(model, mask), attention_mask=mask, skip_padding=True,
              **{"use_cache": False, **option})


@pytest.mark.parametrize("value", [1, "yes", None, np.bool_(True)])
def test_skip_padding_takes_true_or_false_only(value):
    model = refimpl.from_pretrained(GOLDEN / "opt/preln-OPTModel")
    with pytest.raises(ValueError, match=f"^skip_padding must be True or False, got {re.escape(repr(value))}$"):
        model(input_ids=np.array([[4, 5, 6]]), use_cache=False, skip_padding=value)


def test_a_cache_cross_attention_and_a_trace_are_refused():
    model = refimpl.from_pretrained(GOLDEN / "opt/preln-OPTModel")
    ids = np.array([[4, 5, 6]])
    past = model(input_ids=ids[:, :1], use_cache=True).past_key_values  # one cached token: the least refused
    with pytest.raises(ValueError, match="skip_padding=True .*past_key_values"):
        model(input_ids=ids[:, 1:2], attention_mask=np.ones((1, 2), np.int64), past_key_values=past,
              use_cache=False, skip_padding=True)
    with tracing(), pytest.raises(ValueError, match="skip_padding=True .*a trace"):
        model(input_ids=ids, use_cache=False, skip_padding=True)
    cross = refimpl.from_pretrained(GOLDEN / "xglm/cross-XGLMForCausalLM")
    states = np.zeros((1, 2, cross.config.d_model), np.float32)
    with pytest.raises(ValueError, match="skip_padding=True .*encoder_hidden_states"):
        cross.spec.architectures[cross.spec.base_model](
            cross.spec.base_params(cross.params, cross.architecture), cross.config, input_ids=ids,
            encoder_hidden_states=states, use_cache=False, skip_padding=True)


def test_packed_rows_pack_and_unpack():
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    rows = PackedRows.of(mask)
    assert rows.index.tolist() == [0, 1, 4, 5] and (rows.batch, rows.length) == (2, 3)
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) + 1  # [B, T, D], no zeros
    packed = rows.pack(x)  # [N, D]
    assert packed.tolist() == [[1, 2], [3, 4], [9, 10], [11, 12]]
    back = rows.unpack(packed)
    assert back.dtype == x.dtype and back.shape == x.shape
    assert np.array_equal(back, np.where(mask[..., None] == 1, x, 0))
