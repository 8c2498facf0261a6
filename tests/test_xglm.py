"""XGLM: properties that need no upstream (cache == full forward, float32 ~ float64, the sinusoid formula,
generate()'s position ids, the caller's arrays left alone, clear errors) and, when torch and transformers
are installed, differential checks against live upstream on hypothesis-drawn configs and inputs."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.numpy import load_file

import refimpl
from golden import GOLDEN, compare_tensor
from refimpl.models.xglm import generation_position_ids, sinusoid_rows

CHECKPOINTS = ["gelu-scaled-XGLMForCausalLM", "relu-unscaled-XGLMForCausalLM", "gelunew-odd-XGLMForCausalLM",
               "cross-XGLMForCausalLM"]
SETTINGS = settings(max_examples=25, deadline=None)
VOCAB = 43


def load(name, dtype="float64"):
    return refimpl.from_pretrained(GOLDEN / "xglm" / name, dtype=dtype)


MODELS = {(name, dt): load(name, dt) for name in CHECKPOINTS for dt in ("float32", "float64")}


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
def test_cached_decoding_equals_full_forward(data, name, generate_positions, draw):
    """Feeding tokens in chunks with past_key_values gives the logits of one full forward (real tokens),
    with forward()'s default positions or with generate()'s positions sliced per chunk."""
    ids, mask = data
    model = MODELS[name, "float64"]
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
def test_float32_agrees_with_float64(data, name):
    ids, mask = data
    extra = encoder_kwargs(name, ids.shape[0], np.random.default_rng(0))
    out32 = MODELS[name, "float32"](input_ids=ids, attention_mask=mask, labels=ids, **extra)
    out64 = MODELS[name, "float64"](input_ids=ids, attention_mask=mask, labels=ids, **extra)
    assert out32.logits.dtype == np.float32 and out64.logits.dtype == np.float64
    assert_close(out32.logits, out64.logits.astype(np.float32), "float32", f"{name} logits")
    assert_close(out32.loss, out64.loss.astype(np.float32), "float32", f"{name} loss")


def test_float32_never_promotes():
    model = MODELS["cross-XGLMForCausalLM", "float32"]
    out = model(input_ids=np.array([[5, 6, 7]]), output_hidden_states=True, output_attentions=True,
                labels=np.array([[5, 6, 7]]), encoder_hidden_states=np.ones((1, 2, 12)),
                encoder_attention_mask=np.array([[1, 0]]), position_ids=np.array([[0, 1, 2]]))
    arrays = [out.logits, out.loss, *out.hidden_states, *out.attentions, *out.cross_attentions,
              *[t for kv in out.past_key_values for t in kv]]
    assert {np.asarray(a).dtype for a in arrays} == {np.dtype(np.float32)}


# ---------------------------------------------------------------- positions


def test_caller_position_ids_are_not_mutated():
    """Upstream's XGLMSinusoidalPositionalEmbedding.forward does `position_ids += 2` on the caller's tensor."""
    positions = np.array([[0, 1, 2], [1, 0, 1]])
    before = positions.copy()
    model = MODELS["gelu-scaled-XGLMForCausalLM", "float64"]
    first = model(input_ids=np.array([[5, 6, 7], [8, 9, 10]]), position_ids=positions).logits
    np.testing.assert_array_equal(positions, before)
    positions.setflags(write=False)  # a read-only array works too (nothing writes to it)
    second = model(input_ids=np.array([[5, 6, 7], [8, 9, 10]]), position_ids=positions).logits
    np.testing.assert_array_equal(first, second)


def test_default_positions_are_arange_ignoring_padding():
    """forward() without position_ids == forward() with arange(past, past + T) for every row."""
    model = MODELS["relu-unscaled-XGLMForCausalLM", "float64"]
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


# ---------------------------------------------------------------- loss, errors


def test_loss_has_the_predict_pad_term():
    """XGLMForCausalLM: shifted labels end with pad_token_id (1), so the mean has T terms per row, not T - 1."""
    model = MODELS["gelu-scaled-XGLMForCausalLM", "float64"]
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
def test_bad_input_is_refused_clearly(kwargs, message):
    pattern = message if "\\" in message else message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=pattern):
        MODELS["gelu-scaled-XGLMForCausalLM", "float32"](**kwargs)


def test_bad_cross_inputs_are_refused_clearly():
    model = MODELS["cross-XGLMForCausalLM", "float32"]
    with pytest.raises(ValueError, match=r"encoder_hidden_states must have shape \(1, source, 12\)"):
        model(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((2, 3, 12)))
    with pytest.raises(ValueError, match=r"encoder_attention_mask must have shape \(1, 3\)"):
        model(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((1, 3, 12)),
              encoder_attention_mask=np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"cross_attn_head_mask must have shape \(2, 3\)"):
        model(input_ids=np.array([[5, 6]]), encoder_hidden_states=np.zeros((1, 3, 12)),
              cross_attn_head_mask=np.ones((1, 3)))


def test_base_checkpoint_loads_into_the_head():
    """XGLMModel keys lack `model.`; lm_head is tied to embed_tokens when the file lacks it."""
    lm = refimpl.from_pretrained(GOLDEN / "xglm" / "gelu-scaled-XGLMModel", architecture="XGLMForCausalLM")
    np.testing.assert_array_equal(lm.params["lm_head.weight"], lm.params["model.embed_tokens.weight"])
    base = refimpl.from_pretrained(GOLDEN / "xglm" / "gelu-scaled-XGLMForCausalLM", architecture="XGLMModel")
    ids = np.array([[4, 5, 6]])
    head_view = MODELS["gelu-scaled-XGLMForCausalLM", "float32"](input_ids=ids, output_hidden_states=True)
    np.testing.assert_array_equal(base(input_ids=ids).last_hidden_state, head_view.hidden_states[-1])


# ---------------------------------------------------------------- live upstream (skipped without torch)


@pytest.fixture(scope="module")
def upstream():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def live(upstream):
    import live as live_module  # puts golden/ on sys.path
    import capture_xglm

    return live_module, capture_xglm


ACTIVATION_NAMES = ["gelu", "gelu_10", "gelu_fast", "gelu_new", "gelu_python", "gelu_pytorch_tanh", "gelu_accurate",
                    "laplace", "leaky_relu", "linear", "mish", "quick_gelu", "relu", "relu2", "relu6", "sigmoid",
                    "silu", "swish", "tanh"]


@st.composite
def xglm_configs(draw, transformers):
    heads = draw(st.integers(1, 4))
    head_dim = draw(st.integers(max(1, -(-4 // heads)), 5))  # d_model >= 4: the sinusoid divides by d/2 - 1
    vocab, max_positions = draw(st.integers(6, 40)), draw(st.integers(2, 12))
    pad = draw(st.sampled_from([p for p in (1, 0, 3, 5) if p < max_positions + 2]))  # upstream zeroes table row `pad`
    return transformers.XGLMConfig(
        vocab_size=vocab, d_model=heads * head_dim, attention_heads=heads, num_layers=draw(st.integers(1, 3)),
        ffn_dim=draw(st.integers(1, 24)), max_position_embeddings=max_positions,
        activation_function=draw(st.sampled_from(ACTIVATION_NAMES)), scale_embedding=draw(st.booleans()),
        add_cross_attention=draw(st.booleans()), pad_token_id=pad,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)


def live_case(live_module, cfg, cls_name, rng, draw):
    """Inputs for one upstream-vs-refimpl case: padding, optional positions / head masks / labels / encoder
    states, and a cached second step."""
    Case, Step = live_module.Case, live_module.Step
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    ids = rng.integers(0, cfg.vocab_size, size=(batch, length))
    keep = np.arange(length)[None, :] < rng.integers(1, length + 1, size=batch)[:, None]
    mask = (keep[:, ::-1] if draw(st.booleans()) else keep).astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask}
    positions = draw(st.sampled_from(["default", "generate", "random"]))
    if positions == "generate":
        arrays["position_ids"] = generation_position_ids(mask)
    elif positions == "random":  # anywhere in a fresh upstream table, padding row included
        arrays["position_ids"] = rng.integers(-2, max(cfg.max_position_embeddings, length), size=(batch, length))
    if draw(st.booleans()):
        arrays["head_mask"] = rng.integers(0, 3, size=(cfg.num_layers, cfg.attention_heads)) / 2
    if cfg.add_cross_attention:
        source = draw(st.integers(1, 4))
        arrays["encoder_hidden_states"] = rng.normal(size=(batch, source, cfg.d_model))
        if draw(st.booleans()):
            arrays["encoder_attention_mask"] = np.ones((batch, source), np.int64)
            arrays["encoder_attention_mask"][:, 0] = rng.integers(0, 2, size=batch)
        if draw(st.booleans()):
            arrays["cross_attn_head_mask"] = rng.integers(0, 3, size=(cfg.num_layers, cfg.attention_heads)) / 2
    if cls_name == "XGLMForCausalLM":
        arrays["labels"] = np.where(mask == 1, ids, -100)
    kwargs = dict(output_attentions=draw(st.booleans()), output_hidden_states=draw(st.booleans()), use_cache=True)
    case = Case("live", [Step(arrays, kwargs)])
    if draw(st.booleans()):  # continue from the cache with 1 or 2 more tokens
        more = draw(st.integers(1, 2))
        full_mask = np.concatenate([mask, np.ones((batch, more), np.int64)], axis=1)
        step = {"input_ids": rng.integers(0, cfg.vocab_size, size=(batch, more)), "attention_mask": full_mask}
        for name in ("encoder_hidden_states", "encoder_attention_mask"):
            if name in arrays:
                step[name] = arrays[name]
        if positions == "generate":
            step["position_ids"] = generation_position_ids(full_mask, more)
        case.steps.append(live_module.Step(step, {"use_cache": True}, use_past=True))
    return case


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_matches_live_upstream(live, upstream, tmp_path_factory, data):
    """Every output field, float32 and float64, against upstream with the correctly rounded sinusoid
    (golden/capture_xglm.py explains why; the next test covers upstream's own table)."""
    import torch

    live_module, capture_xglm = live
    cfg = data.draw(xglm_configs(upstream))
    cls_name = data.draw(st.sampled_from(["XGLMModel", "XGLMForCausalLM"]))
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    with capture_xglm.correctly_rounded_sinusoid():
        model = capture_xglm.protect_position_ids(getattr(upstream, cls_name)(cfg))
        live_module.randomize_(model, seed)
        case = live_case(live_module, cfg, cls_name, np.random.default_rng(seed), data.draw)
        problems = live_module.live_problems(model, case, tmp_path_factory.mktemp("xglm"))
    assert not problems, f"config {cfg.to_diff_dict()}\n" + "\n".join(problems)


@pytest.mark.parametrize("d_model, heads, scale", [(12, 3, True), (15, 5, False), (64, 4, True)])
def test_matches_unpatched_upstream_in_float32(upstream, tmp_path, d_model, heads, scale):
    """Upstream untouched (its MKL-rounded sinusoid included), float32: logits within 1e-5."""
    import torch

    cfg = upstream.XGLMConfig(vocab_size=29, d_model=d_model, attention_heads=heads, num_layers=2, ffn_dim=19,
                              max_position_embeddings=6, scale_embedding=scale, dropout=0.0)
    torch.manual_seed(0)
    model = upstream.XGLMForCausalLM(cfg).eval()
    import live as live_module

    live_module.randomize_(model, 7)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = np.random.default_rng(1).integers(2, 29, size=(2, 40))  # past the table: upstream regrows it
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    ours = refimpl.from_pretrained(tmp_path, dtype="float32")(input_ids=ids).logits
    assert_close(ours, expected, "float32", f"unpatched d_model={d_model}")


def test_generation_position_ids_match_upstream(upstream):
    import torch

    cfg = upstream.XGLMConfig(vocab_size=20, d_model=8, attention_heads=2, num_layers=1, ffn_dim=8)
    model = upstream.XGLMForCausalLM(cfg)
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    ids = torch.ones(mask.shape, dtype=torch.long)
    first = model.prepare_inputs_for_generation(ids, attention_mask=torch.from_numpy(mask))
    np.testing.assert_array_equal(first["position_ids"].numpy(), generation_position_ids(mask))
    past = tuple((torch.zeros(3, 2, 4, 4), torch.zeros(3, 2, 4, 4)) for _ in range(1))
    step = model.prepare_inputs_for_generation(ids, past_key_values=past, attention_mask=torch.from_numpy(mask))
    np.testing.assert_array_equal(step["position_ids"].numpy(), generation_position_ids(mask, 1))

    # the whole prepare_inputs_for_generation, its quirks included (caller position_ids dropped; no mask)
    from refimpl.models.xglm import prepare_inputs_for_generation

    for kwargs in (dict(attention_mask=mask), dict(attention_mask=mask, past_key_values=past),
                   dict(attention_mask=mask, position_ids=np.zeros(mask.shape, int)), dict(), dict(past_key_values=past),
                   dict(attention_mask=mask, past_key_values=past, use_cache=True)):
        to_torch = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        theirs = model.prepare_inputs_for_generation(ids, **to_torch)
        ours = prepare_inputs_for_generation(ids.numpy(), **kwargs)
        assert sorted(ours) == sorted(theirs), sorted(kwargs)
        for key, value in theirs.items():
            if isinstance(value, torch.Tensor):
                np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=f"{key} for {sorted(kwargs)}")
            elif key != "past_key_values":
                assert ours[key] == value, f"{key} for {sorted(kwargs)}"


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activations_match_upstream(upstream, name):
    import torch
    from transformers.activations import ACT2FN

    from refimpl.ops import activation

    x = np.concatenate([np.linspace(-12, 12, 2001), np.random.default_rng(0).normal(size=500) * 3])
    for dtype, torch_dtype, kind in ((np.float64, torch.float64, "float64"), (np.float32, torch.float32, "float32")):
        expected = ACT2FN[name](torch.from_numpy(x.astype(dtype)).to(torch_dtype)).numpy()
        ours = activation(name)(x.astype(dtype))
        assert_close(ours, expected, kind, f"activation {name} {kind}")
