"""NEZHA properties that need no upstream, plus live differential checks against upstream (skipped without
torch). Expected values come from mathematics (a per-pair evaluation of the relative-position formula,
translation invariance of relative attention), from float64 runs of the same model, or from upstream."""
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl
from golden import GOLDEN, compare_tensor
from refimpl import accel, relative_attention as ra
from refimpl.models.nezha import NezhaConfig
from refimpl.layers import sub
from refimpl.models import nezha

SETTINGS = settings(max_examples=25, deadline=None)
CHECKPOINTS = ["k2-NezhaForMaskedLM", "k9-gelu_new-NezhaForMaskedLM"]


def load(name, dtype="float64", architecture=None):
    return refimpl.from_pretrained(GOLDEN / "nezha" / name, architecture=architecture, dtype=dtype)


@pytest.fixture(scope="module")
def models(load_model):  # models(name, dtype) -> a nezha golden checkpoint, loaded once per session
    return lambda name, dtype="float64": load_model(GOLDEN / "nezha" / name, None, dtype)


def assert_close(ours, reference, dtype, where):
    problems = compare_tensor(ours, reference, dtype, where)
    assert not problems, "\n".join(problems)


@st.composite
def batches(draw, max_batch=4, max_len=9):
    """Token ids, token types and a right-padded mask with at least one real token per row."""
    batch, length = draw(st.integers(1, max_batch)), draw(st.integers(1, max_len))
    ids = np.array(draw(st.lists(st.lists(st.integers(1, 40), min_size=length, max_size=length),
                                 min_size=batch, max_size=batch)))
    types = np.array(draw(st.lists(st.lists(st.integers(0, 2), min_size=length, max_size=length),
                                   min_size=batch, max_size=batch)))
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, types, mask


# ---------------------------------------------------------------- batch independence / padding


@SETTINGS
@given(batches(), st.sampled_from(CHECKPOINTS), st.integers(0, 3), st.integers(0, 3))
def test_row_independent_of_batch_and_padding(models, data, name, left_pad, right_pad):
    """A row's MLM logits at its real tokens do not depend on the other rows, nor on padding on either side
    (relative positions make attention translation invariant, and padded keys get exactly zero weight)."""
    ids, types, mask = data
    model = models(name, "float64")
    batch_logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        pad = lambda x, fill: np.concatenate([np.full(left_pad, fill), x[:n], np.full(right_pad, fill)])[None]
        alone = model(input_ids=pad(ids[row], 0), token_type_ids=pad(types[row], 0),
                      attention_mask=pad(np.ones(n, np.int64), 0)).logits[0, left_pad:left_pad + n]
        assert_close(batch_logits[row, :n], alone, "float64",
                     f"{name} row {row} of {ids.shape}, padding {left_pad} left {right_pad} right")


# ---------------------------------------------------------------- the relative term, pair by pair


def sinusoid_row(distance, k, depth):  # the table row of clip(distance) by the paper's formula, one entry at a time
    r = min(max(distance, -k), k) + k
    return np.array([math.sin(r / 10000 ** (m / depth)) if m % 2 == 0 else math.cos(r / 10000 ** ((m - 1) / depth))
                     for m in range(depth)])


def direct_relative_attention(q, key, v, mask, head_mask, k):  # per-pair evaluation of the NEZHA formula
    """mask [B, 1, T or 1, T] additive; returns context [B, H, T, d] and probabilities [B, H, T, T]."""
    batch, heads, length, depth = q.shape
    R = np.array([[sinusoid_row(j - i, k, depth) for j in range(length)] for i in range(length)])  # [T, T, d]
    context = np.zeros_like(q)
    probs = np.zeros((batch, heads, length, length))
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                scores = np.array([(q[b, h, i] @ key[b, h, j] + q[b, h, i] @ R[i, j]) / math.sqrt(depth)
                                   for j in range(length)]) + mask[b, 0, min(i, mask.shape[2] - 1)]
                p = np.exp(scores - scores.max())
                p = p / p.sum() * head_mask[h]
                probs[b, h, i] = p
                context[b, h, i] = sum(p[j] * (v[b, h, j] + R[i, j]) for j in range(length))
    return context, probs


BACKENDS = ["reference", "numpy"] + (["numba"] if accel.HAVE_NUMBA else [])


def run_backend(backend, q, key, v, mask, head_mask, table, block=None):  # -> context [B, H, T, d], probs
    if backend == "numba":
        context, probs = ra.relative_attention_numba(q, key, v, mask, head_mask, table, block=block or 256)
    else:
        context, probs = getattr(ra, f"relative_attention_{backend}")(q, key, v, mask, head_mask, table)
    batch, heads, length, depth = q.shape
    return context.reshape(batch, length, heads, depth).transpose(0, 2, 1, 3), probs


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 8), st.sampled_from([2, 4, 6]), st.integers(0, 9),
       st.booleans(), st.integers(1, 8), st.integers(0, 2**16))
def test_relative_term_equals_per_pair_formula(batch, heads, length, depth, k, per_query_mask, block, seed):
    """NEZHA's relative attention (the reference over table rows, the NumPy gathers over 2K+1 rows, the Numba
    kernel in query blocks) equals the paper's formula evaluated pair by pair here, for key-padding and
    per-query masks."""
    rng = np.random.default_rng(seed)
    q, key, v = (rng.normal(size=(batch, heads, length, depth)) * 2 for _ in range(3))
    keep = rng.random((batch, length if per_query_mask else 1, length)) < 0.8
    keep[..., 0] = True
    mask = np.where(keep, 0.0, np.finfo(np.float64).min)[:, None]  # [B, 1, T or 1, T]
    head_mask = rng.random(heads)
    table = nezha.relative_position_table(k, depth, np.float64)
    expected, expected_probs = direct_relative_attention(q, key, v, mask, head_mask, k)
    for backend in BACKENDS:
        ours, probs = run_backend(backend, q / math.sqrt(depth), key, v, mask, head_mask, table, block)
        where = f"{backend}: B={batch} H={heads} T={length} d={depth} K={k} block={block} mask={mask.shape}"
        assert_close(probs, expected_probs, "float64", where + " probs")
        assert_close(ours, expected, "float64", where + " context")


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="numba (and scipy) not installed")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_relative_attention_matches_numpy_path(dtype):
    """The Numba kernel against the NumPy path at a size that uses threads and several query blocks; one
    thread and many give identical bits; without output_probs the context is unchanged."""
    rng = np.random.default_rng(1)
    B, H, T, d, k = 2, 4, 300, 16, 20
    q, key, v = (rng.normal(size=(B, H, T, d)).astype(dtype) for _ in range(3))
    mask = np.zeros((B, 1, 1, T), dtype)
    mask[1, ..., 250:] = np.finfo(dtype).min
    head_mask = np.array([1, 0, 0.5, 1], dtype)
    table = nezha.relative_position_table(k, d, dtype)
    expected = ra.relative_attention_numpy(q, key, v, mask, head_mask, table)
    one = ra.relative_attention_numba(q, key, v, mask, head_mask, table, block=64, n_threads=1)
    many = ra.relative_attention_numba(q, key, v, mask, head_mask, table, block=64, n_threads=3)
    bare = ra.relative_attention_numba(q, key, v, mask, head_mask, table, output_probs=False, block=64, n_threads=3)
    name = np.dtype(dtype).name
    assert_close(one[0], expected[0], name, f"{name} numba vs numpy context")
    assert_close(one[1], expected[1], name, f"{name} numba vs numpy probs")
    assert np.array_equal(many[0], one[0]) and np.array_equal(many[1], one[1]), "threads changed the result"
    assert bare[1] is None and np.array_equal(bare[0], one[0]), "output_probs=False changed the context"


def test_table_is_the_interleaved_sinusoid():
    table = nezha.relative_position_table(5, 6, np.float64)
    for r in range(11):
        np.testing.assert_allclose(table[r], sinusoid_row(r - 5, 5, 6), rtol=0, atol=1e-15, err_msg=f"row {r}")
    assert nezha.relative_position_table(3, 4, np.float32).dtype == np.float32


# ---------------------------------------------------------------- memory


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_relative_memory_does_not_grow_with_max_positions():
    """Upstream keeps a (max_pos, max_pos, d) buffer per layer; here nothing depends on max_position_embeddings,
    and the relative term for T tokens builds arrays of O(B*H*T*max(T, 2K+1)), never O(T*T*d)."""
    small = NezhaConfig(vocab_size=41, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=20, max_position_embeddings=64, max_relative_position=8)
    huge = small.replace(max_position_embeddings=100_000)
    rng = np.random.default_rng(0)
    params = {name: rng.normal(size=shape).astype(np.float32) * 0.1
              for name, shape in nezha.param_shapes(small, "NezhaModel").items()}
    assert nezha.param_shapes(small, "NezhaModel") == nezha.param_shapes(huge, "NezhaModel")
    ids = rng.integers(0, 41, size=(2, 64))
    nezha.nezha_model(params, small, ids)  # warm-up: Numba's first call compiles (or loads) its kernels
    peaks = [peak_bytes(lambda: nezha.nezha_model(params, cfg, ids)) for cfg in (small, huge)]
    assert abs(peaks[0] - peaks[1]) < 4096, f"peak memory depends on max_position_embeddings: {peaks}"
    # the relative term alone, T = 64 tokens, head_dim 24: far below one [T, T, d] float32 array per batch row
    B, H, T, d, k = 2, 2, 64, 24, 8
    q = rng.normal(size=(B, H, T, d)).astype(np.float32)
    probs = rng.random((B, H, T, T)).astype(np.float32)
    table = nezha.relative_position_table(k, d, np.float32)
    score_peak = peak_bytes(lambda: ra.relative_key_scores(q, table))
    value_peak = peak_bytes(lambda: ra.relative_value_context(probs, table))
    bound = 3 * (B * H * T * T * 4) + 3 * T * T * 8  # a few [B, H, T, T] float32 arrays + [T, T] masks
    assert score_peak < bound and value_peak < bound, (score_peak, value_peak, bound)
    assert max(score_peak, value_peak) < B * H * T * T * d * 4, "built something of the size of [B, H, T, T, d]"


# ---------------------------------------------------------------- dtypes


@settings(max_examples=15, deadline=None)
@given(batches(), st.sampled_from(CHECKPOINTS))
def test_float32_agrees_with_float64(models, data, name):
    ids, types, mask = data
    out32 = models(name, "float32")(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=ids)
    out64 = models(name, "float64")(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=ids)
    assert out32.logits.dtype == np.float32 and out32.loss.dtype == np.float32
    assert_close(out32.logits.astype(np.float64), out64.logits, "float32", f"{name} logits")


def test_float32_never_promotes():
    model = load("k2-NezhaForPreTraining", "float32")
    out = model(input_ids=np.array([[1, 2, 3]]), output_attentions=True, output_hidden_states=True,
                labels=np.array([[1, -100, 3]]), next_sentence_label=np.array([1]),
                head_mask=np.ones((2, 3)))
    for name, value in out.items():
        for array in (value if isinstance(value, tuple) else (value,)):
            assert array.dtype == np.float32, f"{name} is {array.dtype}"


# ---------------------------------------------------------------- bad input


BAD = [
    (dict(input_ids=[[1, 41]]), "outside the vocabulary of 41"),
    (dict(input_ids=[[1, 2]], token_type_ids=[[0, 3]]), "token_type_ids holds id 3"),
    (dict(input_ids=[[1, 2]], token_type_ids=[[0, 1, 0]]), "token_type_ids must have shape (1, 2)"),
    (dict(input_ids=np.ones((1, 17), int)), "exceeds max_position_embeddings=16"),
    (dict(input_ids=[[1, 2, 3]], attention_mask=[[1, 1]]), "attention_mask must have shape (1, 3)"),
    (dict(input_ids=[[1, 2, 3]], attention_mask=[[[1, 1, 1]]]), "attention_mask (3-d: batch, query, key) must"),
    (dict(input_ids=[[1, 2, 3]], head_mask=np.ones((3, 3))), "head_mask must have shape (2, 3)"),
    (dict(input_ids=[1, 2, 3]), "input_ids must have 2 dimensions"),
    (dict(inputs_embeds=np.ones((1, 3, 5))), "inputs_embeds must have shape (batch, sequence, 12)"),
    (dict(input_ids=[[1]], inputs_embeds=np.ones((1, 1, 12))), "not both"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_refused_clearly(models, kwargs, message):
    model = models("k2-NezhaForMaskedLM", "float32")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model(**kwargs)


def test_what_upstream_cannot_run_is_refused_clearly():
    decoder = load("k2-decoder-cross-NezhaModel")
    ids = np.array([[1, 2, 3]])
    past = decoder(input_ids=ids, use_cache=True).past_key_values
    with pytest.raises(NotImplementedError, match="cannot continue from past_key_values"):
        decoder(input_ids=np.array([[4]]), past_key_values=past)
    for malformed in ([(1,)], "past", past[:-1], tuple(layer[:1] for layer in past)):  # checked before any use
        with pytest.raises(ValueError, match=r"past_key_values"):
            decoder(input_ids=np.array([[4]]), past_key_values=malformed)
    with pytest.raises(NotImplementedError, match="as many encoder positions as decoder tokens"):
        decoder(input_ids=ids, encoder_hidden_states=np.ones((1, 5, 12)))
    qa = load("k2-NezhaForQuestionAnswering")
    with pytest.raises(ValueError, match="needs num_labels=2"):
        nezha.nezha_for_question_answering(qa.params, qa.config.replace(id2label={0: "a", 1: "b", 2: "c"}),
                                           input_ids=ids)
    mc = load("k2-NezhaForMultipleChoice")
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, num_choices, sequence\)"):
        mc(input_ids=ids)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(1, 1, 3\)"):
        mc(input_ids=ids[None], attention_mask=np.ones((1, 2, 3)))


def test_checkpoints_load_across_heads():
    """The MLM checkpoint lacks the tied decoder (save_pretrained drops it): it is the word embedding matrix.
    A head checkpoint without a pooler loads as NezhaModel only via add_pooling_layer=False."""
    mlm = load("k2-NezhaForMaskedLM")
    np.testing.assert_array_equal(mlm.params["cls.predictions.decoder.weight"],
                                  mlm.params["nezha.embeddings.word_embeddings.weight"])
    with pytest.raises(Exception, match="pooler.dense.weight"):
        load("k2-NezhaForMaskedLM", architecture="NezhaModel")
    ids = np.array([[5, 6, 7, 8]])
    base = nezha.nezha_model(sub(mlm.params, "nezha"), mlm.config, ids, add_pooling_layer=False)
    assert base.pooler_output is None
    with pytest.raises(ValueError, match="pass add_pooling_layer=False"):
        nezha.nezha_model(sub(mlm.params, "nezha"), mlm.config, ids)
    pre = load("k2-NezhaForPreTraining")  # has a pooler: loads as every pooled head and as the base model
    for arch in ("NezhaModel", "NezhaForMaskedLM", "NezhaForNextSentencePrediction"):
        model = load("k2-NezhaForPreTraining", architecture=arch)
        assert model(input_ids=ids) is not None
    assert pre(input_ids=ids).prediction_logits.shape == (1, 4, 41)
