"""XGLM against live upstream (torch + transformers 4.37.2): hypothesis-drawn configs and inputs, the
unpatched sinusoid table in float32, generate()'s position ids and every activation."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
import refimpl
from refimpl.models.xglm import generation_position_ids
from test_xglm import assert_close  # noqa: F401


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


@pytest.mark.parametrize("d_model, heads", [(12, 3), (64, 4)])
def test_islands_upstream_is_unpatched_upstream_float64(upstream, tmp_path, d_model, heads):
    """Upstream's own float64 run (its float32 sinusoid table, cast) against refimpl islands="upstream": the
    same table bit for bit (torch's own float32 exp/sin/cos), so within float64's 1e-10; the default float64
    (an exact table) is apart by the whole island."""
    import torch

    import live as live_module  # puts golden/ on sys.path
    from common import running_in

    cfg = upstream.XGLMConfig(vocab_size=29, d_model=d_model, attention_heads=heads, num_layers=2, ffn_dim=19,
                              max_position_embeddings=40, dropout=0.0)
    torch.manual_seed(0)
    model = upstream.XGLMForCausalLM(cfg).eval()

    live_module.randomize_(model, 7)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = np.random.default_rng(1).integers(2, 29, size=(2, 30))
    with torch.no_grad(), running_in(model, torch.float64, islands=True):
        expected = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    island = refimpl.from_pretrained(tmp_path, dtype="float64", islands="upstream")(input_ids=ids).logits
    exact = refimpl.from_pretrained(tmp_path, dtype="float64")(input_ids=ids).logits
    scale = np.abs(expected).max()
    island_error, exact_error = np.abs(island - expected).max() / scale, np.abs(exact - expected).max() / scale
    assert island_error <= 1e-10, f"islands='upstream' vs unpatched upstream float64: relative {island_error:.2e}"
    assert island_error < exact_error, f"the island ({island_error:.2e}) should be closer than exact ({exact_error:.2e})"


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
