"""NEZHA against live upstream (torch + transformers 4.37.2): every class on hypothesis-drawn configs,
stock upstream within float32 noise, decoder mode."""
import sys
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
import refimpl
from golden import GOLDEN
from test_nezha import assert_close  # noqa: F401


# ---------------------------------------------------------------- live upstream (skipped without torch)


CLASSES = ["NezhaModel", "NezhaForPreTraining", "NezhaForMaskedLM", "NezhaForNextSentencePrediction",
           "NezhaForSequenceClassification", "NezhaForMultipleChoice", "NezhaForTokenClassification",
           "NezhaForQuestionAnswering"]


@pytest.fixture(scope="module")
def upstream():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import live  # noqa: F401  (puts golden/ on sys.path)
    sys.path.insert(0, str(GOLDEN))
    import capture_nezha

    return torch, transformers, live, capture_nezha


@st.composite
def nezha_configs(draw, cls_name):
    # upstream's table needs an even head size; hidden >= 8 keeps LayerNorm outputs away from the
    # near-total cancellation a 2-wide LayerNorm produces (tiny logits, meaningless relative errors)
    heads, head_dim = draw(st.sampled_from([(1, 8), (2, 4), (3, 4), (4, 2), (2, 6), (3, 6), (4, 4)]))
    return dict(vocab_size=draw(st.integers(5, 40)), hidden_size=heads * head_dim, num_attention_heads=heads,
                num_hidden_layers=draw(st.integers(1, 3)), intermediate_size=draw(st.integers(1, 24)),
                type_vocab_size=draw(st.integers(1, 3)), max_position_embeddings=draw(st.integers(8, 12)),
                max_relative_position=draw(st.integers(1, 6)),
                hidden_act=draw(st.sampled_from(["gelu", "relu", "gelu_new"])),
                num_labels=2 if cls_name == "NezhaForQuestionAnswering" else draw(st.integers(1, 3)),
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)


def live_case(cfg, cls_name, rng, data, live):
    batch, length = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 8))
    shape = (batch, data.draw(st.integers(1, 3)), length) if cls_name == "NezhaForMultipleChoice" else (batch, length)
    ids = rng.integers(0, cfg["vocab_size"], size=shape)
    lengths = rng.integers(1, length + 1, size=shape[:-1])
    keep = np.arange(length) < lengths[..., None]
    mask = (keep[..., ::-1] if data.draw(st.booleans()) else keep).astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask,
              "token_type_ids": rng.integers(0, cfg["type_vocab_size"], size=shape)}
    if data.draw(st.booleans()):
        arrays["head_mask"] = rng.integers(0, 2, size=(cfg["num_hidden_layers"], cfg["num_attention_heads"])) * 1.0
    kwargs = dict(output_attentions=data.draw(st.booleans()), output_hidden_states=data.draw(st.booleans()))
    if cls_name in ("NezhaForPreTraining", "NezhaForMaskedLM"):
        arrays["labels"] = np.where(mask == 1, ids, -100)
        if cls_name == "NezhaForPreTraining":
            arrays["next_sentence_label"] = rng.integers(0, 2, batch)
    elif cls_name == "NezhaForNextSentencePrediction":
        arrays["labels"] = rng.integers(0, 2, batch)
    elif cls_name == "NezhaForSequenceClassification":
        arrays["labels"] = rng.normal(size=batch) if cfg["num_labels"] == 1 else rng.integers(0, cfg["num_labels"], batch)
    elif cls_name == "NezhaForMultipleChoice":
        arrays["labels"] = rng.integers(0, shape[1], batch)
    elif cls_name == "NezhaForTokenClassification":
        arrays["labels"] = np.where(mask == 1, rng.integers(0, cfg["num_labels"], shape), -100)
    elif cls_name == "NezhaForQuestionAnswering":
        arrays["start_positions"] = rng.integers(0, length + 2, batch)
        arrays["end_positions"] = rng.integers(0, length + 2, batch)
    return live.Case("live", [live.Step(arrays, kwargs)])


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(CLASSES), st.data())
def test_nezha_matches_live_upstream(upstream, tmp_path_factory, cls_name, data):
    """Every output field, float32 and float64, at the golden tolerances (upstream's table made exact, as in
    golden/capture_nezha.py)."""
    torch, transformers, live, capture_nezha = upstream
    cfg = data.draw(nezha_configs(cls_name))
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    with capture_nezha.exact_relative_positions():
        model = getattr(transformers, cls_name)(transformers.NezhaConfig(**cfg))
        live.randomize_(model, seed)
        case = live_case(cfg, cls_name, np.random.default_rng(seed), data, live)
        problems = live.live_problems(model, case, tmp_path_factory.mktemp("nezha"))
    assert not problems, f"config {cfg}\n" + "\n".join(problems)


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["NezhaForMaskedLM", "NezhaForSequenceClassification"]), st.data())
def test_stock_upstream_within_float32_tolerance(upstream, tmp_path_factory, cls_name, data):
    """Unpatched upstream (its float32 sin/cos table, also in its float64 run) against refimpl float64:
    the table's last-bit differences stay within the float32 tolerance."""
    torch, transformers, live, _ = upstream
    from golden import output_fields
    cfg = data.draw(nezha_configs(cls_name))
    seed = data.draw(st.integers(0, 2**16))
    model = getattr(transformers, cls_name)(transformers.NezhaConfig(**cfg))
    live.randomize_(model, seed)
    model.eval()
    case = live_case(cfg, cls_name, np.random.default_rng(seed), data, live)
    directory = tmp_path_factory.mktemp("stock")
    model.save_pretrained(directory, safe_serialization=True)
    expected = live.run_both_dtypes(model, case)
    ours = refimpl.from_pretrained(directory, architecture=cls_name, dtype="float64")
    args = {k: v for k, v in case.steps[0].arrays.items()}
    fields = output_fields(ours(**args, **case.steps[0].kwargs))
    for dtype in ("float32", "float64"):
        reference = {k.split("/", 2)[2]: v for k, v in expected.items() if k.startswith(f"0/{dtype}/")}
        for key in reference:
            if key == "loss":  # a mean of -log p terms: float32 noise scales with the logits, not the (small) mean
                diff, scale = abs(float(fields[key] - reference[key])), float(np.abs(reference["logits"]).max())
                assert diff <= 1e-5 * scale, f"stock upstream {dtype} loss: diff {diff:.3e} > 1e-5 x max|logits| {scale:.3e}"
                continue
            assert_close(fields[key], reference[key].astype(np.float64), "float32", f"stock upstream {dtype} {key}")
    # islands="upstream" (upstream's float32 table bit for bit, as its float64 run has): within float64's 1e-10
    island = refimpl.from_pretrained(directory, architecture=cls_name, dtype="float64", islands="upstream")
    island_fields = output_fields(island(**args, **case.steps[0].kwargs))
    reference = {k.split("/", 2)[2]: v for k, v in expected.items() if k.startswith("0/float64/")}
    for key in reference:
        if key != "loss":
            scale = max(float(np.abs(reference[key]).max()), 1e-30)
            error = float(np.abs(island_fields[key] - reference[key]).max()) / scale
            assert error <= 1e-10, f"islands='upstream' vs stock upstream float64 {key}: relative {error:.2e}"


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.booleans(), st.booleans(), st.data())
def test_decoder_mode_matches_live_upstream(upstream, tmp_path_factory, cross, pass_encoder, data):
    """is_decoder (causal mask, returned cache) and add_cross_attention, where upstream runs them: encoder
    states as long as the decoder input. Without encoder states upstream reports each layer's cache as its
    "cross attention"; that quirk is compared too."""
    torch, transformers, live, capture_nezha = upstream
    cfg = dict(data.draw(nezha_configs("NezhaModel")), is_decoder=True, add_cross_attention=cross)
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    batch, length = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 8))
    mask = (np.arange(length) < rng.integers(1, length + 1, size=(batch, 1))).astype(np.int64)
    arrays = {"input_ids": rng.integers(0, cfg["vocab_size"], size=(batch, length)), "attention_mask": mask}
    if cross and pass_encoder:
        arrays["encoder_hidden_states"] = rng.normal(size=(batch, length, cfg["hidden_size"]))
        arrays["encoder_attention_mask"] = (rng.random((batch, length)) < 0.8).astype(np.int64)
    kwargs = dict(use_cache=data.draw(st.booleans()), output_attentions=data.draw(st.booleans()),
                  output_hidden_states=True)
    torch.manual_seed(seed)
    with capture_nezha.exact_relative_positions():
        model = transformers.NezhaModel(transformers.NezhaConfig(**cfg))
        live.randomize_(model, seed)
        problems = live.live_problems(model, live.Case("decoder", [live.Step(arrays, kwargs)]),
                                      tmp_path_factory.mktemp("nezha_decoder"))
    assert not problems, f"config {cfg}\n" + "\n".join(problems)
