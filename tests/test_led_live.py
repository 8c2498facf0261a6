"""LED against live upstream on hypothesis-drawn configs, windows, inputs and global masks
(skipped without torch)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from live import Case, Step, live_problems, randomize_  # noqa: E402

# the CPU kernel torch runs here, as refimpl's islands_cpu names it (None: a kernel refimpl does not reproduce)
TORCH_CPU = {"AVX2": "avx2", "AVX512": "avx512"}.get(torch.backends.cpu.get_cpu_capability())
LIVE = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
CLASSES = ["LEDModel", "LEDForConditionalGeneration", "LEDForSequenceClassification", "LEDForQuestionAnswering"]


@st.composite
def led_configs(draw):  # num_labels >= 2: one tiny float32 regression logit fails a normwise 1e-5 (golden has num_labels=1)
    heads = draw(st.integers(1, 3))
    d_model = heads * draw(st.integers(2, 5))
    d_model = d_model if d_model >= 4 else 2 * d_model
    layers = draw(st.integers(1, 3))
    largest = draw(st.sampled_from([4, 6, 8]))  # window 2 crashes upstream; every window divides the largest
    choices = [w for w in (4, 6, 8) if largest % w == 0]
    window = largest if draw(st.booleans()) else [largest] + [draw(st.sampled_from(choices)) for _ in range(layers - 1)]
    dec_heads = draw(st.sampled_from([h for h in (1, 2, 3, 4, 5) if d_model % h == 0]))
    return transformers.LEDConfig(
        vocab_size=draw(st.integers(6, 30)), d_model=d_model, encoder_layers=layers,
        decoder_layers=draw(st.integers(1, 2)), encoder_attention_heads=heads, decoder_attention_heads=dec_heads,
        encoder_ffn_dim=draw(st.integers(1, 16)), decoder_ffn_dim=draw(st.integers(1, 16)), attention_window=window,
        max_encoder_position_embeddings=32, max_decoder_position_embeddings=16,
        activation_function=draw(st.sampled_from(["gelu", "relu", "gelu_new"])), num_labels=draw(st.integers(2, 3)),
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, eos_token_id=2)


@LIVE
@given(led_configs(), st.sampled_from(CLASSES), st.data())
def test_led_matches_live_upstream(tmp_path_factory, cfg, cls_name, data):
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg)
    randomize_(model, seed)
    rng = np.random.default_rng(seed)
    batch, length = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 14))
    lengths = rng.integers(2, length + 1, size=batch)
    ids = np.full((batch, length), 1)
    for row, n in enumerate(lengths):  # "<s> w ... </s>" then padding: one </s> per row
        ids[row, :n] = np.concatenate([[0], rng.integers(3, cfg.vocab_size, size=n - 2), [2]])
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask}
    if data.draw(st.booleans()):  # global tokens anywhere, padding included
        arrays["global_attention_mask"] = (rng.random((batch, length)) < 0.25).astype(np.int64)
    if data.draw(st.booleans()):
        arrays["head_mask"] = rng.integers(0, 2, size=(cfg.encoder_layers, cfg.encoder_attention_heads)).astype(float)
    kwargs = dict(output_attentions=data.draw(st.booleans()), output_hidden_states=data.draw(st.booleans()))
    if cls_name == "LEDForConditionalGeneration":
        arrays["labels"] = np.where(mask == 1, ids, -100)
    elif cls_name == "LEDForSequenceClassification":
        arrays["labels"] = rng.normal(size=batch) if cfg.num_labels == 1 else rng.integers(0, cfg.num_labels, batch)
    elif cls_name == "LEDForQuestionAnswering":
        arrays["start_positions"] = rng.integers(0, length + 2, batch)
        arrays["end_positions"] = rng.integers(0, length + 2, batch)
    steps = [Step(arrays, kwargs)]
    if cls_name in ("LEDModel", "LEDForConditionalGeneration") and "labels" not in arrays:
        dec = rng.integers(3, cfg.vocab_size, size=(batch, 3))
        steps = [Step({**arrays, "decoder_input_ids": dec[:, :2]}, {**kwargs, "use_cache": True}),
                 Step({**arrays, "decoder_input_ids": dec[:, 2:]}, {**kwargs, "use_cache": True}, use_past=True)]
    # islands="upstream" against unpatched upstream float64 too, on the kernel torch runs here
    problems = live_problems(model, Case("live", steps), tmp_path_factory.mktemp("led"), islands=TORCH_CPU)
    assert not problems, f"{cfg.to_dict()}\n{arrays}\n" + "\n".join(problems)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 70), st.integers(1, 6), st.integers(0, 2**16), st.sampled_from(["none", "-inf", "min"]))
def test_float32_softmax_as_torch_matches_torch(length, rows, seed, masked):
    """refimpl's emulation against torch.softmax(dtype=torch.float32) on rows with -inf and finfo.min entries,
    for the kernel torch runs here: bit for bit under AVX2; under AVX-512 (16 lanes, derived from ATen's code,
    its bits unverified for want of such a CPU) within float32 noise."""
    from refimpl.torch_softmax import float32_softmax_as_torch

    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(rows, length)) * 6).astype(np.float64)
    if masked != "none":
        scores[:, rng.random(length) < 0.3] = -np.inf if masked == "-inf" else np.finfo(np.float64).min
        scores[:, 0] = rng.normal()  # keep one finite entry per row
    ours = float32_softmax_as_torch(scores, TORCH_CPU or "avx2")
    theirs = torch.softmax(torch.from_numpy(scores), dim=-1, dtype=torch.float32).double().numpy()
    if TORCH_CPU == "avx2":
        assert np.array_equal(ours, theirs), f"max diff {np.abs(ours - theirs).max():.3e}"
    else:
        assert np.abs(ours - theirs).max() <= 1e-5, f"max diff {np.abs(ours - theirs).max():.3e}"
