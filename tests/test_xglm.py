"""XGLM: properties that need no upstream (cache == full forward, float32 ~ float64, the sinusoid formula,
generate()'s position ids, the caller's arrays left alone, clear errors) and, when torch and transformers
are installed, differential checks against live upstream on hypothesis-drawn configs and inputs."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from safetensors.numpy import load_file

import refimpl
from golden import GOLDEN, compare_tensor
from refimpl import torch_vml
from refimpl.models.xglm import generation_position_ids, sinusoid_rows

CHECKPOINTS = ["gelu-scaled-XGLMForCausalLM", "relu-unscaled-XGLMForCausalLM", "gelunew-odd-XGLMForCausalLM",
               "cross-XGLMForCausalLM"]
SETTINGS = settings(max_examples=25, deadline=None)
VOCAB = 43


def load(name, dtype="float64"):
    return refimpl.from_pretrained(GOLDEN / "xglm" / name, dtype=dtype)


@pytest.fixture(scope="module")
def models(load_model):  # models(name, dtype) -> a xglm golden checkpoint, loaded once per session
    return lambda name, dtype="float64": load_model(GOLDEN / "xglm" / name, None, dtype)


def assert_close(ours, reference, dtype, where):
    problems = compare_tensor(ours, reference, dtype, where)
    assert not problems, "\n".join(problems)


@st.composite
def batches(draw, max_batch=3, max_len=12, left=None):
    """Token ids (no pad id inside) and a left- or right-padded mask with at least one real token per row."""
    batch, length = draw(st.integers(1, max_batch)), draw(st.integers(1, max_len))
    ids = np.array(draw(st.lists(st.lists(st.integers(3, VOCAB - 1), min_size=length, max_size=length),
                                 min_size=batch, max_size=batch)))
    lengths = np.array(draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch)))
    keep = np.arange(length)[None, :] < lengths[:, None]
    left = draw(st.booleans()) if left is None else left
    mask = (keep[:, ::-1] if left else keep).astype(np.int64)
    return ids, mask


def encoder_kwargs(name, batch, rng):  # the cross-attention checkpoint needs encoder states
    if not name.startswith("cross"):
        return {}
    return {"encoder_hidden_states": rng.normal(size=(batch, 4, 12)), "encoder_attention_mask": np.ones((batch, 4), int)}


# ---------------------------------------------------------------- cache, dtype


@SETTINGS
@given(batches(), st.sampled_from(CHECKPOINTS), st.booleans(), st.data())
def test_cached_decoding_equals_full_forward(models, data, name, generate_positions, draw):
    """Feeding tokens in chunks with past_key_values gives the logits of one full forward (real tokens),
    with forward()'s default positions or with generate()'s positions sliced per chunk."""
    ids, mask = data
    model = models(name, "float64")
    extra = encoder_kwargs(name, ids.shape[0], np.random.default_rng(ids.size))
    positions = generation_position_ids(mask) if generate_positions else None
    full = model(input_ids=ids, attention_mask=mask, position_ids=positions, **extra).logits
    cuts = sorted(set(draw.draw(st.lists(st.integers(1, ids.shape[1] - 1), max_size=3)) if ids.shape[1] > 1 else []))
    past, pieces = None, []
    for start, stop in zip([0] + cuts, cuts + [ids.shape[1]]):
        chunk_positions = None if positions is None else generation_position_ids(mask[:, :stop], stop - start)
        out = model(input_ids=ids[:, start:stop], attention_mask=mask[:, :stop], position_ids=chunk_positions,
                    past_key_values=past, use_cache=True, **extra)
        past = out.past_key_values
        pieces.append(out.logits)
    real = mask.astype(bool)
    assert_close(np.concatenate(pieces, axis=1)[real], full[real], "float64", f"{name} cuts {cuts}")


@SETTINGS
@given(batches(), st.sampled_from(CHECKPOINTS))
def test_float32_agrees_with_float64(models, data, name):
    ids, mask = data
    extra = encoder_kwargs(name, ids.shape[0], np.random.default_rng(0))
    out32 = models(name, "float32")(input_ids=ids, attention_mask=mask, labels=ids, **extra)
    out64 = models(name, "float64")(input_ids=ids, attention_mask=mask, labels=ids, **extra)
    assert out32.logits.dtype == np.float32 and out64.logits.dtype == np.float64
    assert_close(out32.logits, out64.logits.astype(np.float32), "float32", f"{name} logits")
    assert_close(out32.loss, out64.loss.astype(np.float32), "float32", f"{name} loss")


def test_float32_never_promotes(models):
    model = models("cross-XGLMForCausalLM", "float32")
    out = model(input_ids=np.array([[5, 6, 7]]), output_hidden_states=True, output_attentions=True,
                labels=np.array([[5, 6, 7]]), encoder_hidden_states=np.ones((1, 2, 12)),
                encoder_attention_mask=np.array([[1, 0]]), position_ids=np.array([[0, 1, 2]]))
    arrays = [out.logits, out.loss, *out.hidden_states, *out.attentions, *out.cross_attentions,
              *[t for kv in out.past_key_values for t in kv]]
    assert {np.asarray(a).dtype for a in arrays} == {np.dtype(np.float32)}


# ---------------------------------------------------------------- positions


def test_caller_position_ids_are_not_mutated(models):
    """Upstream's XGLMSinusoidalPositionalEmbedding.forward does `position_ids += 2` on the caller's tensor."""
    positions = np.array([[0, 1, 2], [1, 0, 1]])
    before = positions.copy()
    model = models("gelu-scaled-XGLMForCausalLM", "float64")
    first = model(input_ids=np.array([[5, 6, 7], [8, 9, 10]]), position_ids=positions).logits
    np.testing.assert_array_equal(positions, before)
    positions.setflags(write=False)  # a read-only array works too (nothing writes to it)
    second = model(input_ids=np.array([[5, 6, 7], [8, 9, 10]]), position_ids=positions).logits
    np.testing.assert_array_equal(first, second)


def test_default_positions_are_arange_ignoring_padding(models):
    """forward() without position_ids == forward() with arange(past, past + T) for every row."""
    model = models("relu-unscaled-XGLMForCausalLM", "float64")
    ids, mask = np.array([[1, 1, 5, 6], [7, 8, 9, 10]]), np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    default = model(input_ids=ids, attention_mask=mask).logits
    explicit = model(input_ids=ids, attention_mask=mask, position_ids=np.array([[0, 1, 2, 3]] * 2)).logits
    np.testing.assert_array_equal(default, explicit)


@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=9), min_size=1, max_size=4).filter(
    lambda rows: len({len(r) for r in rows}) == 1))
def test_generation_position_ids(rows):
    """prepare_inputs_for_generation: real tokens count 0, 1, 2, ... in order; pads read position 1."""
    mask = np.array(rows)
    positions = generation_position_ids(mask)
    for r in range(mask.shape[0]):
        real = mask[r] == 1
        np.testing.assert_array_equal(positions[r, real], np.arange(real.sum()))
        assert np.all(positions[r, ~real] == 1)
    np.testing.assert_array_equal(generation_position_ids(mask, 1), positions[:, -1:])


def formula_entry(row, col, dim):  # one table entry, evaluated on its own with Python scalars
    half = dim // 2
    if col >= 2 * half:
        return 0.0
    k = col % half
    exponent = np.float32(k) * np.float32(-(math.log(10000) / (half - 1)))  # float32 * float32, as torch
    freq = np.float32(math.exp(float(exponent)))
    angle = float(np.float32(row) * freq)
    return float(np.float32(math.sin(angle) if col < half else math.cos(angle)))


@pytest.mark.parametrize("dim", [4, 5, 12, 15, 16])
def test_sinusoid_equals_per_entry_formula(dim):
    rows = np.arange(0, 70)
    table = sinusoid_rows(rows, dim, padding_idx=1)
    assert table.dtype == np.float32 and table.shape == (70, dim)
    for r in rows:
        expected = [0.0] * dim if r == 1 else [formula_entry(r, c, dim) for c in range(dim)]
        np.testing.assert_array_equal(table[r], np.array(expected, np.float32), err_msg=f"dim {dim} row {r}")


def test_sinusoid_rows_are_computed_on_demand():
    """Any rows, any shape, without a table: rows far past max_position_embeddings cost nothing extra."""
    rows = np.array([[3, 100_000], [2, 7]])
    np.testing.assert_array_equal(sinusoid_rows(rows, 12), sinusoid_rows(rows.reshape(-1), 12).reshape(2, 2, 12))
    exact = np.sin(100_000 * np.exp(-np.arange(6) * math.log(10000) / 5))
    # the float32 argument is off by up to half an ulp of 100000 * f_k (~0.004 rad): a float32 formula
    np.testing.assert_allclose(sinusoid_rows(np.array([100_000]), 12)[0, :6], exact, atol=1e-2)


@pytest.mark.parametrize("dim", [4, 12, 15, 64, 1024])
def test_sinusoid_close_to_upstream(dim):
    """Upstream's own float32 tables (torch/MKL exp, sin, cos; stored by golden/capture_xglm.py) are within one
    float32 ulp of each entry plus one ulp of its angle (torch's f_k may be one ulp off, times the row)."""
    upstream = load_file(str(GOLDEN / "xglm" / "upstream_sinusoid.safetensors"))[f"dim{dim}"]
    rows = np.arange(upstream.shape[0])
    ours = sinusoid_rows(rows, dim, padding_idx=1)
    half = dim // 2
    freq = np.exp(-np.arange(half) * math.log(10000) / (half - 1))
    angle = np.concatenate([rows[:, None] * freq] * 2 + ([np.zeros((len(rows), 1))] if dim % 2 else []), axis=1)
    bound = np.spacing(np.abs(upstream)) + np.spacing(angle.astype(np.float32))  # [rows, dim]
    excess = np.abs(ours.astype(np.float64) - upstream) / bound
    assert excess.max() <= 1.0, f"dim {dim}: entry {np.unravel_index(excess.argmax(), excess.shape)} off by {excess.max()} bounds"
    assert np.mean(ours != upstream) < 0.25, f"dim {dim}: {np.mean(ours != upstream):.1%} of entries differ"


@pytest.mark.skipif(not torch_vml.available(), reason="MKL's runtime is not installed (the islands extra)")
@pytest.mark.parametrize("dim", [4, 12, 15, 64, 1024])
def test_sinusoid_as_torch_is_upstream_bit_for_bit(dim):
    """as_torch=True (islands="upstream"): upstream's own float32 tables exactly, torch's MKL exp/sin/cos."""
    upstream = load_file(str(GOLDEN / "xglm" / "upstream_sinusoid.safetensors"))[f"dim{dim}"]
    ours = sinusoid_rows(np.arange(upstream.shape[0]), dim, padding_idx=1, as_torch=True)
    differ = np.argwhere(ours.view(np.uint32) != upstream.view(np.uint32))
    assert not len(differ), f"dim {dim}: {len(differ)} entries differ, first at {tuple(differ[0])}"


# ---------------------------------------------------------------- loss, errors


def test_loss_has_the_predict_pad_term(models):
    """XGLMForCausalLM: shifted labels end with pad_token_id (1), so the mean has T terms per row, not T - 1."""
    model = models("gelu-scaled-XGLMForCausalLM", "float64")
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
    out = model(input_ids=ids, labels=ids)
    logp = out.logits - np.log(np.exp(out.logits).sum(-1, keepdims=True))
    targets = np.concatenate([ids[:, 1:], np.ones((2, 1), int)], axis=1)
    expected = -np.mean(np.take_along_axis(logp, targets[..., None], -1))
    assert abs(out.loss - expected) < 1e-12


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_ids=np.array([[5, 43]])), "outside the vocabulary of 43"),
    (dict(input_ids=np.array([5, 6])), "must have 2 dimensions"),
    (dict(input_ids=np.array([[5, 6]]), attention_mask=np.ones((1, 3))), "attention_mask"),
    (dict(input_ids=np.array([[5, 6]]), position_ids=np.array([[0, 1, 2]])), "position_ids must have shape (1, 2)"),
    (dict(input_ids=np.array([[5, 6]]), position_ids=np.array([0, 1])), "position_ids must have 2 dimensions"),
    (dict(input_ids=np.array([[5, 6]]), position_ids=np.array([[0.5, 1]])), "position_ids must hold integer"),
    (dict(input_ids=np.array([[5, 6]]), position_ids=np.array([[-3, 0]])), "position_ids must lie in -2..7"),
    (dict(input_ids=np.array([[5, 6]]), position_ids=np.array([[0, 8]])), "position_ids must lie in -2..7"),
    (dict(input_ids=np.array([[5]]), inputs_embeds=np.zeros((1, 1, 12))), "not both"),
    (dict(inputs_embeds=np.zeros((1, 2, 13))), r"inputs_embeds must have shape \(batch, sequence, 12\)"),
    (dict(), "pass input_ids or inputs_embeds"),
    (dict(input_ids=np.array([[5, 6]]), head_mask=np.ones((3, 3))), "head_mask must have shape (2, 3)"),
    (dict(input_ids=np.array([[5, 6]]), labels=np.array([[5, 99]])), "label 99"),
    (dict(input_ids=np.array([[5, 6]]), labels=np.array([[5, 6, 7]])), "labels must have shape"),
    (dict(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((1, 2, 12))), "add_cross_attention=True"),
])
def test_bad_input_is_refused_clearly(models, kwargs, message):
    pattern = message if "\\" in message else message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=pattern):
        models("gelu-scaled-XGLMForCausalLM", "float32")(**kwargs)


def test_bad_cross_inputs_are_refused_clearly(models):
    model = models("cross-XGLMForCausalLM", "float32")
    with pytest.raises(ValueError, match=r"encoder_hidden_states must have shape \(1, source, 12\)"):
        model(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((2, 3, 12)))
    with pytest.raises(ValueError, match=r"encoder_attention_mask must have shape \(1, 3\)"):
        model(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((1, 3, 12)),
              encoder_attention_mask=np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"cross_attn_head_mask must have shape \(2, 3\)"):
        model(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((1, 3, 12)),
              cross_attn_head_mask=np.ones((1, 3)))


def test_base_checkpoint_loads_into_the_head(models):
    """XGLMModel keys lack `model.`; lm_head is tied to embed_tokens when the file lacks it."""
    lm = refimpl.from_pretrained(GOLDEN / "xglm" / "gelu-scaled-XGLMModel", architecture="XGLMForCausalLM")
    np.testing.assert_array_equal(lm.params["lm_head.weight"], lm.params["model.embed_tokens.weight"])
    base = refimpl.from_pretrained(GOLDEN / "xglm" / "gelu-scaled-XGLMForCausalLM", architecture="XGLMModel")
    ids = np.array([[4, 5, 6]])
    head_view = models("gelu-scaled-XGLMForCausalLM", "float32")(input_ids=ids, output_hidden_states=True)
    np.testing.assert_array_equal(base(input_ids=ids).last_hidden_state, head_view.hidden_states[-1])


# ---------------------------------------------------------------- live upstream (skipped without torch)
