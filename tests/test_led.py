"""LED: generate() against upstream's golden results and properties that need no upstream.

The forward golden cases (every class, field and dtype) run from tests/test_golden.py; live
hypothesis-drawn comparisons with upstream are in tests/test_led_live.py.
"""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import refimpl
from golden import DTYPES, GOLDEN, REGENERATE, cases, compare_tensor, output_fields, run_case
from refimpl import accel
from refimpl.longformer import longformer_self_attention
from refimpl.models import led
from refimpl.models.led import LEDConfig
from refimpl.torch_softmax import float32_softmax_as_torch

GEN = GOLDEN / "led" / "generation"
CG = GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration"
BACKENDS = ["reference", "numpy"] + (["numba"] if accel.HAVE_NUMBA else [])


def golden_case(checkpoint, name):
    return next(c for c in cases("led") if c.checkpoint == checkpoint and c.name == name)


# ---------------------------------------------------------------- generate() vs upstream (golden)


def generation_cases():
    if not (GEN / "cases.json").exists():
        return []
    return [pytest.param(c, id=c["name"]) for c in json.loads((GEN / "cases.json").read_text())["cases"]]


def test_generation_golden_present():
    assert generation_cases(), f"golden/led/generation missing; {REGENERATE}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", generation_cases())
def test_generate_with_global_mask_matches_upstream(case, dtype):
    tensors = load_file(str(GEN / "results.safetensors"))
    args = {a: tensors[f"{case['name']}/input/{a}"] for a in case["arrays"]}
    model = refimpl.from_pretrained(GEN, dtype=dtype)
    out = model.generate(args.pop("input_ids"), **args, **case["kwargs"])  # upstream's documented call
    prefix = f"{case['name']}/{dtype}/"
    expected = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    ours = {"sequences": out.sequences, **{f"scores.{i}": s for i, s in enumerate(out.scores)}}
    for name in ("sequences_scores", "beam_indices"):
        if getattr(out, name, None) is not None:
            ours[name] = getattr(out, name)
    where = f"[led generation {case['name']} {dtype}]"
    assert sorted(ours) == sorted(expected), f"{where} fields {sorted(ours)} != upstream {sorted(expected)}"
    assert np.array_equal(ours["sequences"], expected["sequences"]), (
        f"{where} token ids differ:\nours\n{ours['sequences']}\nupstream\n{expected['sequences']}")
    problems = [p for k in expected for p in compare_tensor(ours[k], expected[k], dtype, f"{where} {k}")]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- encoder_outputs passed in, cache


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["object", "tuple", "last_hidden_state_only"])
def test_encoder_outputs_passed_in_give_upstreams_logits(form, dtype, load_model):
    case = golden_case(CG.name, "global_mixed_counts")
    model = load_model(case.directory, case.architecture, dtype)
    args = case.step_inputs(0, dtype)
    enc = led.run_encoder(model, args["input_ids"], args["attention_mask"], args["global_attention_mask"],
                          output_attentions=True, output_hidden_states=True)
    passed = {"object": enc, "tuple": enc.to_tuple(), "last_hidden_state_only": (enc.last_hidden_state,)}[form]
    decoder_ids = led.shift_tokens_right(args["input_ids"], model.config.pad_token_id,
                                         model.config.decoder_start_token_id)
    out = model(encoder_outputs=passed, attention_mask=args["attention_mask"], decoder_input_ids=decoder_ids,
                output_attentions=True, output_hidden_states=True)
    expected = case.expected(0, dtype)
    fields = ["logits", "encoder_last_hidden_state"] + (
        [k for k in expected if k.startswith(("encoder_attentions", "encoder_global", "encoder_hidden"))]
        if form != "last_hidden_state_only" else [])
    ours = output_fields(out)
    problems = [p for k in fields for p in compare_tensor(ours[k], expected[k], dtype, f"[{form} {dtype}] {k}")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cached_decoding_equals_full_forward(dtype, load_model):
    case = golden_case(CG.name, "decoder_inputs")
    model = load_model(case.directory, case.architecture, dtype)
    args = case.step_inputs(0, dtype)
    full = model(**args).logits
    past, steps = None, []
    for t in range(args["decoder_input_ids"].shape[1]):
        step = model(**{**args, "decoder_input_ids": args["decoder_input_ids"][:, t:t + 1],
                        "decoder_attention_mask": args["decoder_attention_mask"][:, :t + 1],
                        "past_key_values": past, "use_cache": True})
        past = step.past_key_values
        steps.append(step.logits)
    # padded decoder rows differ by design (a single token ignores the decoder mask); compare real tokens
    keep = args["decoder_attention_mask"].astype(bool)
    tol = 1e-5 if dtype == "float32" else 1e-10
    diff = np.abs(np.concatenate(steps, axis=1) - full)[keep].max() / np.abs(full).max()
    assert diff <= tol, f"cached vs full logits ({dtype}): relative difference {diff:.2e} > {tol}"


# ---------------------------------------------------------------- properties without upstream


def test_batch_rows_are_independent(load_model):
    case = golden_case(CG.name, "long_global")
    model = load_model(case.directory, case.architecture, "float64")
    args = case.step_inputs(0, "float64")
    batched = model(**args)
    for row in range(args["input_ids"].shape[0]):
        n = int(args["attention_mask"][row].sum())
        alone = model(**{k: v[row:row + 1, :n] for k, v in args.items() if isinstance(v, np.ndarray)})
        # rows differ only in how far they are padded: same numbers up to the float32 softmax's rounding
        a, b = alone.encoder_last_hidden_state[0], batched.encoder_last_hidden_state[row, :n]
        assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), f"row {row} encoder states: {np.abs(a - b).max():.2e}"
        a, b = alone.logits[0, :n], batched.logits[row, :n]
        assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), f"row {row} logits: {np.abs(a - b).max():.2e}"


@pytest.mark.parametrize("window, message", [(5, "even"), (0, "positive"), ([4, 6, 4], "multiple"),
                                             ([4, 4], "one value per encoder layer")])
def test_bad_windows_are_rejected(window, message):
    cfg = LEDConfig(vocab_size=11, d_model=6, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=4, decoder_ffn_dim=4, attention_window=window,
                    max_encoder_position_embeddings=32, max_decoder_position_embeddings=8)
    params = {k: np.full(s, 0.1, np.float32) for k, s in led.param_shapes(cfg, "LEDModel").items()}
    with pytest.raises(ValueError, match=message):
        led.led_model(params, cfg, input_ids=np.array([[0, 5, 6, 7, 2]]))


def test_bad_inputs_are_rejected(load_model):
    case = golden_case(CG.name, "global_start")
    model = load_model(case.directory, case.architecture, "float32")
    args = case.step_inputs(0, "float32")
    with pytest.raises(ValueError, match="0/1"):
        model(**{**args, "global_attention_mask": args["global_attention_mask"] * 2})
    with pytest.raises(ValueError, match="shape"):
        model(**{**args, "global_attention_mask": args["global_attention_mask"][:, :3]})
    with pytest.raises(ValueError, match="max_encoder_position_embeddings"):
        model(input_ids=np.full((1, 60), 5))
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(encoder_outputs=(np.zeros((3, 7, 15), np.float32),))
    with pytest.raises(ValueError, match="backend"):
        model(**args, backend="torch")
    cls = load_model(GOLDEN / "led" / "windows-8-4-8-LEDForSequenceClassification", "LEDForSequenceClassification",
                     "float32")
    ids = args["input_ids"].copy()
    ids[0, 3] = 2  # a second </s> in row 0 only
    with pytest.raises(ValueError, match="same number of <eos>"):
        cls(input_ids=ids, attention_mask=args["attention_mask"])


def random_layer(rng, D, dtype):
    return {f"{n}.{kind}": (rng.normal(size=(D, D)) * 1.2 / np.sqrt(D) if kind == "weight" else rng.normal(size=D) * 0.1
                            ).astype(dtype)
            for n in ("query", "key", "value", "query_global", "key_global", "value_global") for kind in ("weight", "bias")}


def dense_attention(p, x, heads, pad, is_global):  # the definition, one query at a time: [B, T, D], probs
    """Full-window Longformer attention as dense masked attention: every query sees every non-padding
    key once (global keys included); global queries use the global projections; padding queries give 0."""
    B, T, D = x.shape
    d = D // heads
    lin = {n: (x @ p[n + ".weight"].T + p[n + ".bias"]).reshape(B, T, heads, d) for n in
           ("query", "key", "value", "query_global", "key_global", "value_global")}
    out = np.zeros((B, T, heads, d))
    probs = np.zeros((B, heads, T, T))
    for b in range(B):
        for h in range(heads):
            for i in range(T):
                if pad[b, i]:
                    continue
                kind = "_global" if is_global[b, i] else ""
                s = lin["key" + kind][b, :, h] @ (lin["query" + kind][b, i, h] / np.sqrt(d))  # [T]
                s = np.where(pad[b], -np.inf, s)
                e = np.exp(s - s.max())
                probs[b, h, i] = e / e.sum()
                out[b, i, h] = probs[b, h, i] @ lin["value" + kind][b, :, h]
    return out.reshape(B, T, D), probs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_global", [False, True])
def test_full_window_equals_dense_masked_attention(backend, dtype, with_global):
    rng = np.random.default_rng(3)
    B, T, heads, d = 3, 10, 2, 3
    D = heads * d
    p = random_layer(rng, D, dtype)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    pad = np.zeros((B, T), bool)
    pad[1, 7:], pad[2, 4:] = True, True
    is_global = np.zeros((B, T), bool)
    if with_global:
        is_global[0, [0, 5]], is_global[1, 2] = True, True
    window = 2 * T  # one side T >= T - 1: the band covers the whole sequence
    out, probs, global_probs = longformer_self_attention(p, x, window, heads, pad, is_global, with_global,
                                                         output_attentions=True, backend=backend)
    want, dense = dense_attention({k: v.astype(np.float64) for k, v in p.items()}, x.astype(np.float64), heads,
                                  pad, is_global)
    tol = 2e-6  # the softmax runs in float32 (upstream's), whatever the dtype
    assert np.abs(out - want).max() <= tol * np.abs(want).max(), f"{backend} {dtype} context"
    # local probabilities: [global columns | band slot s <-> key i - T + s]; global keys only in their column
    X = int(is_global.sum(1).max()) if with_global else 0
    expected = np.zeros((B, heads, T, X + 2 * T + 1))
    for b in range(B):
        g = np.flatnonzero(is_global[b])
        for i in range(T):
            if is_global[b, i]:
                continue  # upstream zeroes global rows; their probabilities are in global_probs
            expected[b, :, i, :len(g)] = dense[b, :, i][:, g]
            for j in range(T):
                if not is_global[b, j]:
                    expected[b, :, i, X + j - i + T] = dense[b, :, i, j]
    assert np.abs(probs - expected).max() <= tol, f"{backend} {dtype} local probs"
    if with_global:
        for b in range(B):
            for x_slot, i in enumerate(np.flatnonzero(is_global[b])):
                assert np.abs(global_probs[b, :, x_slot] - dense[b, :, i]).max() <= tol, f"{backend} global probs"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_gives_the_golden_encoder(dtype, load_model):
    case = golden_case(CG.name, "long_global")
    model = load_model(case.directory, case.architecture, dtype)
    args = case.step_inputs(0, dtype)
    expected = case.expected(0, dtype)
    for backend in BACKENDS:
        out = model(**args, backend=backend)
        # float64 reference: the same torch softmax per row, on dot products summed in another order, so a
        # score may round to a neighbouring float32 (~1e-7); the NumPy and Numba backends are upstream-exact
        tol = "float32" if backend == "reference" and dtype == "float64" else dtype
        ours = output_fields(out)
        problems = [p for k in ("encoder_last_hidden_state", "logits")
                    for p in compare_tensor(ours[k], expected[k], tol, f"[{backend} {dtype}] {k}")]
        assert not problems, "\n".join(problems)


ISLAND_CASES = [c for c in cases("led") if any("/float64_upstream_islands/" in k for k in c.tensors)]
GOLDEN_CPU = json.loads((GOLDEN / "manifest.json").read_text())["versions"]["torch_cpu_capability"].lower()


def test_island_golden_present():
    assert len(ISLAND_CASES) >= 10, f"LED golden without upstream-islands runs; {REGENERATE}"


@pytest.mark.parametrize("case", ISLAND_CASES, ids=lambda c: c.id)
def test_islands_upstream_reproduces_unpatched_upstream_float64(case):
    """islands="upstream": upstream's own float64 run, float32 softmax island included, as torch's CPU kernel
    of the capture machine (manifest) computed it: every field within 1e-10, the local attention
    probabilities (float32 values) bit for bit, NaN rows of the global attentions where upstream's are."""
    def load(directory, architecture, dtype):
        return refimpl.from_pretrained(directory, architecture=architecture, dtype=dtype, islands="upstream",
                                       islands_cpu=GOLDEN_CPU)

    problems = run_case(load, case, "float64", "float64_upstream_islands")
    model = load(case.directory, case.architecture, "float64")  # the first step again: probabilities, bit for bit
    ours = output_fields(model(**case.step_inputs(0, "float64")))
    for key, value in case.expected(0, "float64_upstream_islands").items():
        if key.startswith("encoder_attentions") and not np.array_equal(ours[key], value, equal_nan=True):
            problems.append(f"[{case.id}] {key}: not bit for bit, max {np.nanmax(np.abs(ours[key] - value)):.3e}")
    assert not problems, "\n".join(problems)


def test_exact_float64_differs_from_the_island_by_float32_noise(load_model):
    """The default float64 (every step in float64) against upstream's island run: apart by float32 rounding
    of the softmax (~1e-7 relative), never more; and uniform where the island gives NaN."""
    case = golden_case(CG.name, "long_global")
    exact = case.expected(0, "float64")
    island = case.expected(0, "float64_upstream_islands")
    diff = np.abs(exact["logits"] - island["logits"]).max() / np.abs(exact["logits"]).max()
    assert 1e-12 < diff < 1e-5, f"exact vs island logits: relative {diff:.3e}"
    for key, value in exact.items():
        assert not np.isnan(value).any(), f"{key}: the exact float64 has no NaN (uniform rows instead)"


def test_float32_softmax_as_torch_refuses_unknown_kernels():
    assert np.isnan(float32_softmax_as_torch(np.full((1, 4), np.finfo(np.float64).min))).all()  # as upstream
    with pytest.raises(ValueError, match="avx512"):
        float32_softmax_as_torch(np.zeros((1, 4)), "sse")
    with pytest.raises(ValueError, match="islands_cpu"):
        refimpl.from_pretrained(CG, dtype="float64", islands="upstream", islands_cpu="neon")
    with pytest.raises(ValueError, match="islands must be"):
        refimpl.from_pretrained(CG, dtype="float64", islands="float32")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_attention_reassociated_equals_projected(dtype):
    # the cheap form (queries mapped into the hidden space) against upstream's (every token projected)
    from refimpl.longformer import global_attention

    rng = np.random.default_rng(5)
    B, T, heads, d = 2, 9, 3, 4
    p = random_layer(rng, heads * d, dtype)
    x = rng.normal(size=(B, T, heads * d)).astype(dtype)
    is_global = np.zeros((B, T), bool)
    is_global[0, [1, 4, 8]], is_global[1, 2] = True, True
    is_masked = np.zeros((B, T), bool)
    is_masked[1, 6:] = True
    head_mask = np.array([1.0, 0.0, 0.5], dtype)
    a_out, a_probs = global_attention(p, x, is_global, is_masked, heads, head_mask, reassociate=True)
    b_out, b_probs = global_attention(p, x, is_global, is_masked, heads, head_mask, reassociate=False)
    used = np.arange(3)[None, :] < is_global.sum(1)[:, None]  # spare slots are NaN in float64, as upstream
    tol = 1e-5 if dtype == np.float32 else 1e-6  # float32 softmax: a 1-ulp score change moves probs by ~1e-7
    assert np.abs(a_out[used] - b_out[used]).max() <= tol * np.abs(b_out[used]).max()
    assert np.abs(a_probs.transpose(0, 2, 1, 3)[used] - b_probs.transpose(0, 2, 1, 3)[used]).max() <= tol


def test_base_checkpoint_loads_as_generation_head_with_tied_lm_head_and_zero_bias():
    # LEDForConditionalGeneration._keys_to_ignore_on_load_missing = ["final_logits_bias"]; lm_head is led.shared
    model = refimpl.from_pretrained(GOLDEN / "led" / "windows-8-4-8-LEDModel", architecture="LEDForConditionalGeneration")
    assert np.array_equal(model.params["final_logits_bias"], np.zeros((1, model.config.vocab_size), np.float32))
    assert np.array_equal(model.params["lm_head.weight"], model.params["led.shared.weight"])
    base = refimpl.from_pretrained(GOLDEN / "led" / "windows-8-4-8-LEDModel")
    ids = np.array([[0, 5, 9, 2]])
    hidden = base(input_ids=ids).last_hidden_state
    assert np.allclose(model(input_ids=ids).logits, hidden @ base.params["shared.weight"].T, atol=1e-5)


def test_upstream_band_blocks_do_not_change_results():
    from refimpl.banded_attention import banded_attention_torch_layout

    rng = np.random.default_rng(9)
    q, k, v = (rng.normal(size=(2, 3, 24, 4)) for _ in range(3))
    bias = np.where(rng.random((2, 24)) < 0.2, np.finfo(np.float64).min, 0.0)
    masked = rng.random((2, 24)) < 0.2
    one = banded_attention_torch_layout(q, k, v, 3, bias, masked, output_probs=True, rows=24)
    many = banded_attention_torch_layout(q, k, v, 3, bias, masked, output_probs=True, rows=5)
    assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
