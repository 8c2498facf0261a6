"""OPT properties that need no upstream: each compares refimpl with itself under a transformation whose
result mathematics fixes (batch independence, cache == full forward, float32 ~ float64), or checks
that bad input is refused with a clear message."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl
from golden import GOLDEN, compare_tensor

CHECKPOINTS = ["preln-OPTForCausalLM", "postln-proj-OPTForCausalLM", "nobias-noaffine-OPTForCausalLM"]
SETTINGS = settings(max_examples=25, deadline=None)


def load(name, dtype="float64"):
    return refimpl.from_pretrained(GOLDEN / "opt" / name, dtype=dtype)


@pytest.fixture(scope="module")
def models(load_model):  # models(name, dtype) -> a opt golden checkpoint, loaded once per session
    return lambda name, dtype="float64": load_model(GOLDEN / "opt" / name, None, dtype)


@st.composite
def batches(draw, max_batch=4, max_len=9):
    """Token ids (no pad id inside) and a right-padded mask with at least one real token per row."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_len))
    ids = np.array(draw(st.lists(st.lists(st.integers(3, 36), min_size=length, max_size=length),
                                 min_size=batch, max_size=batch)))
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


def assert_close(ours, reference, dtype, where):
    problems = compare_tensor(ours, reference, dtype, where)
    assert not problems, "\n".join(problems)


@SETTINGS
@given(batches(), st.sampled_from(CHECKPOINTS), st.integers(0, 3))
def test_row_independent_of_batch_and_right_padding(models, data, name, extra_pad):
    """A row's logits at its real positions do not depend on the other rows or on extra right padding."""
    ids, mask = data
    model = models(name, "float64")
    batch_logits = model(input_ids=ids, attention_mask=mask).logits
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        padded_ids = np.concatenate([ids[row, :n], np.full(extra_pad, 1)])[None]
        padded_mask = np.concatenate([np.ones(n, np.int64), np.zeros(extra_pad, np.int64)])[None]
        alone = model(input_ids=padded_ids, attention_mask=padded_mask).logits[0, :n]
        assert_close(batch_logits[row, :n], alone, "float64", f"{name} row {row} of {ids.shape}")


@SETTINGS
@given(batches(max_len=8), st.sampled_from(CHECKPOINTS), st.data())
def test_cached_decoding_equals_full_forward(models, data, name, draw):
    """Feeding tokens in chunks with past_key_values gives the logits of one full forward."""
    ids, mask = data
    model = models(name, "float64")
    full = model(input_ids=ids, attention_mask=mask).logits
    cuts = sorted(set(draw.draw(st.lists(st.integers(1, ids.shape[1] - 1), max_size=3)) if ids.shape[1] > 1 else []))
    past, pieces = None, []
    for start, stop in zip([0] + cuts, cuts + [ids.shape[1]]):
        out = model(input_ids=ids[:, start:stop], attention_mask=mask[:, :stop], past_key_values=past, use_cache=True)
        past = out.past_key_values
        pieces.append(out.logits)
    real = mask.astype(bool)
    assert_close(np.concatenate(pieces, axis=1)[real], full[real], "float64", f"{name} cuts {cuts}")


@SETTINGS
@given(batches(), st.sampled_from(CHECKPOINTS))
def test_float32_agrees_with_float64(models, data, name):
    ids, mask = data
    out32 = models(name, "float32")(input_ids=ids, attention_mask=mask).logits
    out64 = models(name, "float64")(input_ids=ids, attention_mask=mask).logits
    assert out32.dtype == np.float32 and out64.dtype == np.float64
    assert_close(out32, out64.astype(np.float32), "float32", name)


def test_float32_never_promotes(models):
    model = models("preln-OPTForCausalLM", "float32")
    out = model(input_ids=np.array([[5, 6, 7]]), output_hidden_states=True, output_attentions=True,
                labels=np.array([[5, 6, 7]]))
    arrays = [out.logits, out.loss, *out.hidden_states, *out.attentions, *[t for kv in out.past_key_values for t in kv]]
    assert {np.asarray(a).dtype for a in arrays} == {np.dtype(np.float32)}


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_ids=np.array([[5, 37]])), "outside the vocabulary of 37"),
    (dict(input_ids=np.array([[5, -1]])), "outside the vocabulary"),
    (dict(input_ids=np.array([5, 6])), "must have 2 dimensions"),
    (dict(input_ids=np.array([[5, 6]]), attention_mask=np.ones((1, 3))), "attention_mask"),
    (dict(input_ids=np.array([[5.5, 6]])), "integer token ids"),
    (dict(input_ids=np.full((1, 25), 5)), "max_position_embeddings=24"),
    (dict(input_ids=np.array([[5]]), inputs_embeds=np.zeros((1, 1, 12))), "not both"),
    (dict(), "pass input_ids or inputs_embeds"),
    (dict(input_ids=np.array([[5, 6]]), head_mask=np.ones((3, 3))), "head_mask must have shape (2, 3)"),
    (dict(input_ids=np.array([[5, 6]]), labels=np.array([[5, 99]])), "label 99"),
])
def test_bad_input_is_refused_clearly(models, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models("preln-OPTForCausalLM", "float32")(**kwargs)


def test_bad_checkpoint_is_refused_clearly(tmp_path):
    import shutil

    src = GOLDEN / "opt" / "preln-OPTForCausalLM"
    shutil.copy(src / "config.json", tmp_path / "config.json")
    from safetensors.numpy import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    state["model.decoder.layers.1.fc1.weight"] = state["model.decoder.layers.1.fc1.weight"][:, :5]
    del state["model.decoder.layers.0.fc2.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"fc1.weight.*\(20, 5\).*\(20, 12\)"):
        refimpl.from_pretrained(tmp_path)
    state["model.decoder.layers.1.fc1.weight"] = np.zeros((20, 12), np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing weights: model.decoder.layers.0.fc2.bias \(12,\)"):
        refimpl.from_pretrained(tmp_path)


def test_base_checkpoint_loads_into_heads_and_back(models):
    """OPTModel keys lack `model.`; heads add it. lm_head is tied to the embeddings when absent."""
    base = GOLDEN / "opt" / "preln-OPTModel"
    lm = refimpl.from_pretrained(base, architecture="OPTForCausalLM")
    assert lm.params["lm_head.weight"].shape == (lm.config.vocab_size, lm.config.word_embed_proj_dim)
    np.testing.assert_array_equal(lm.params["lm_head.weight"], lm.params["model.decoder.embed_tokens.weight"])
    back = refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTForCausalLM", architecture="OPTModel")
    ids = np.array([[4, 5, 6]])
    head_view = models("preln-OPTForCausalLM", "float32")(input_ids=ids, output_hidden_states=True)
    np.testing.assert_array_equal(back(input_ids=ids).last_hidden_state, head_view.hidden_states[-1])
    with pytest.raises(ValueError, match="missing weights: score.weight"):
        refimpl.from_pretrained(base, architecture="OPTForSequenceClassification")


def test_unknown_architecture_and_dtype():
    with pytest.raises(ValueError, match="not a opt architecture"):
        refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTModel", architecture="BertModel")
    with pytest.raises(ValueError, match="dtype 'float16' is not supported"):
        refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTModel", dtype="float16")
