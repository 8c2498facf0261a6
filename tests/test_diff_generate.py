"""refimpl.diff_generate and `refimpl diff-generate`, without torch: bugs planted in a refimpl model's weights,
near-ties built into the output embedding, and the end-of-sequence, sampling and beam-search rules.

Where the first divergence must be is found independently of the replay: one full (uncached) forward of the
unperturbed model over the perturbed model's sequence, and the first new token that is not its argmax."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import refimpl
from golden import GOLDEN
from refimpl.cli import main
from refimpl.diff_generate import Undecidable, diff_generate, in_dtype, score_noise
from refimpl.modeling import Model

SHIPPED = Path(refimpl.__file__).parent / "data" / "opt-tiny"
MODELS = {"opt": SHIPPED, "xglm": GOLDEN / "generation" / "xglm", "led": GOLDEN / "led" / "generation"}
# a weight of the decoder scaled by a factor: the planted bug
PLANTED = {"opt": ("model.decoder.layers.3.fc2.weight", 1.3), "xglm": ("model.layers.0.fc2.weight", 2.5),
           "led": ("led.decoder.layers.0.fc1.weight", 1.3)}


def load(family, dtype="float64"):
    return refimpl.from_pretrained(MODELS[family], dtype=dtype)


def planted(model, name, factor):  # the same model with one weight scaled
    params = dict(model.params)
    params[name] = params[name] * factor
    return Model(model.config, params, model.architecture, model.dtype, source=model.source)


def prompts(family, model, seed, batch=2, length=6):  # -> generate()'s arrays; decoder-only: left padded
    rng = np.random.default_rng(seed)
    vocab = model.config.vocab_size
    ids = rng.integers(3, vocab, size=(batch, length))
    mask = np.ones_like(ids)
    if family == "led":  # an encoder reads padding on the right; global attention on the first token
        mask[1:, length - 2:] = 0
        ids[mask == 0] = model.config.pad_token_id
        ids[:, 0] = 0
        glob = np.zeros_like(ids)
        glob[:, 0] = 1
        return {"input_ids": ids, "attention_mask": mask, "global_attention_mask": glob}
    mask[1:, :2] = 0
    ids[mask == 0] = model.config.pad_token_id
    return {"input_ids": ids, "attention_mask": mask}


def full_forward_logits(family, model, inputs, sequences):  # -> [N, W, V]: one uncached forward
    if family == "led":
        return model(**inputs, decoder_input_ids=sequences).logits
    prompt_width = inputs["input_ids"].shape[1]
    mask = np.concatenate([inputs["attention_mask"],
                           np.ones((sequences.shape[0], sequences.shape[1] - prompt_width), np.int64)], axis=1)
    extra = {}
    if family == "xglm":  # generate()'s positions: count of attended tokens before, padding at 1
        extra["position_ids"] = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
    return model(input_ids=sequences, attention_mask=mask, **extra).logits


def first_disagreement(family, model, inputs, sequences):  # -> (row, step) of the earliest non-argmax new token
    prefix = 1 if family == "led" else inputs["input_ids"].shape[1]
    logits = full_forward_logits(family, model, inputs, sequences)
    eos, found = model.config.eos_token_id, []
    for r, row in enumerate(sequences):
        for t in range(row.shape[0] - prefix):
            token = row[prefix + t]
            if np.argmax(logits[r, prefix + t - 1]) != token:
                found.append((t, r))
                break
            if token == eos:
                break
    return min(found)[::-1] if found else None


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_planted_bug_is_a_divergence_at_the_first_step_it_changes(family, dtype):
    model = load(family, dtype)
    name, factor = PLANTED[family]
    bugged = planted(model, name, factor)
    inputs = prompts(family, model, seed=3)
    tokens = bugged.generate(inputs["input_ids"], **{k: v for k, v in inputs.items() if k != "input_ids"},
                             max_new_tokens=12)
    expected = first_disagreement(family, load(family), inputs, tokens)
    assert expected is not None, f"{family}: the planted bug {name} x{factor} changes no greedy token"
    report = diff_generate(model, inputs, tokens)
    assert (report.verdict, report.row, report.step) == ("divergence", *expected), report.text()
    assert report.margin > report.noise > 0
    own = model.generate(inputs["input_ids"], **{k: v for k, v in inputs.items() if k != "input_ids"},
                         max_new_tokens=12)
    assert diff_generate(model, inputs, own).verdict == "agree"
    assert diff_generate(bugged, inputs, tokens).verdict in ("agree", "tie")


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 16), st.sampled_from(["opt", "xglm"]), st.floats(1.05, 2.0), st.integers(0, 1))
def test_planted_bugs_on_drawn_prompts(seed, family, factor, layer):
    model = load(family) if family == "xglm" else load_golden_opt()
    name = f"model.{'decoder.' if family == 'opt' else ''}layers.{layer}.fc1.weight"
    inputs = prompts(family, model, seed)
    bugged = planted(model, name, factor)
    tokens = bugged.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=10)
    expected = first_disagreement(family, model, inputs, tokens)
    report = diff_generate(model, inputs, tokens)
    if expected is None:
        assert report.verdict == "agree", report.text()
    else:  # a divergence exactly there, or a tie there that later steps may turn into a divergence
        row = report.rows[expected[0]]
        first = row.ties[0] if row.ties else row.step
        assert first == expected[1], report.text()
        assert report.verdict in ("tie", "divergence")


def load_golden_opt():
    return refimpl.from_pretrained(GOLDEN / "generation" / "opt", dtype="float64")


@pytest.mark.parametrize("family", sorted(MODELS))
def test_refimpl_float32_tokens_are_never_a_divergence_from_float64(family):
    """refimpl's own float32 decoding differs from float64 by float32 rounding only: agree or tie, never more."""
    model32 = load(family, "float32")
    for seed in range(3):
        inputs = prompts(family, model32, seed)
        tokens = model32.generate(inputs["input_ids"], **{k: v for k, v in inputs.items() if k != "input_ids"},
                                  max_new_tokens=12)
        assert diff_generate(load(family), inputs, tokens).verdict in ("agree", "tie")


def near_tie(model, inputs, gap):
    """OPT ties its output projection to the input embedding: an unused token b whose embedding row is the
    greedy choice a's times (1 - gap) scores (1 - gap) times a's logit at the first step."""
    first = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=1)
    a = int(first[0, -1])
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[0, -1]
    assert logits[a] > 0, "the construction needs a positive top logit"
    used = set(inputs["input_ids"].ravel().tolist()) | {a, 0, 1, 2, 3}
    b = next(t for t in range(4, model.config.vocab_size) if t not in used)
    params = dict(model.params)
    for name in ("model.decoder.embed_tokens.weight", "lm_head.weight"):  # the tied pair, if both are loaded
        if name in params:
            embed = params[name].copy()
            embed[b] = embed[a] * (1 - gap)
            params[name] = embed
    tied = Model(model.config, params, model.architecture, model.dtype, source=model.source)
    return tied, a, b


@pytest.mark.parametrize("gap, verdict", [(1e-9, "tie"), (1e-2, "divergence")])
def test_near_tie_at_the_first_step(gap, verdict):
    model = load("opt")
    inputs = {"input_ids": np.array([[2, 31, 415, 77, 1200]]), "attention_mask": np.ones((1, 5), np.int64)}
    tied, a, b = near_tie(model, inputs, gap)
    forced = np.concatenate([inputs["input_ids"], [[b]]], axis=1)  # the candidate takes b, then refimpl's choices
    tokens = tied.generate(forced, attention_mask=np.ones_like(forced), max_new_tokens=7)
    report = diff_generate(tied, inputs, tokens)
    logits = tied(**inputs).logits[0, -1]
    assert report.rows[0].ties[:1] == ([0] if verdict == "tie" else [])
    assert (report.verdict, report.step) == (verdict, 0), report.text()
    assert report.first_difference == 0 and report.to_json()["first_difference"] == 0
    assert (report.rows[0].candidate_token, report.rows[0].refimpl_token) == (b, a)
    assert report.margin == pytest.approx(logits[a] - logits[b], rel=1e-6, abs=1e-12)
    assert report.noise == pytest.approx(score_noise(logits, in_dtype(tied, np.float32)(**inputs).logits[0, -1]))
    assert report.exit_code == (0 if verdict == "tie" else 1)
    if verdict == "tie":  # a later wrong token still decides: divergence there, the tie remembered
        later = tokens.copy()
        later[0, 5 + 3] = (later[0, 5 + 3] + 1) % tied.config.vocab_size
        report = diff_generate(tied, inputs, later)
        assert (report.verdict, report.step, report.first_difference, report.rows[0].ties) == ("divergence", 3, 0, [0])


def test_noise_rule():
    s64 = np.array([10.0, 9.0, -np.inf, -3.0])
    s32 = s64 + np.array([1e-6, -2e-6, 0.0, 0.0])
    assert score_noise(s64, s32) == pytest.approx(4.0 * 2 * 2e-6)  # SAFETY x 2 x the largest error
    assert score_noise(s64, s64) == pytest.approx(8 * np.finfo(np.float32).eps * 10.0)  # the ulp floor
    assert score_noise(np.full(3, -np.inf), np.full(3, -np.inf)) == 0.0


def greedy(model, inputs, **kwargs):
    return model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)


def test_end_of_sequence_rules():
    model = load("opt")
    inputs = prompts("opt", model, 5)
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    width = inputs["input_ids"].shape[1]
    tokens = greedy(model, inputs, max_new_tokens=8, min_new_tokens=8)  # eos forbidden throughout
    assert diff_generate(model, inputs, tokens, max_new_tokens=8, min_new_tokens=8).verdict == "agree"
    ended = tokens.copy()  # row 0 ends at new token 2, then is padded
    ended[0, width + 2] = eos
    ended[0, width + 3:] = pad
    report = diff_generate(model, inputs, ended, max_new_tokens=8, min_new_tokens=8)
    assert (report.verdict, report.row, report.step, report.margin) == ("divergence", 0, 2, float("inf"))
    assert "forbid" in report.rows[0].reason
    plain = diff_generate(model, inputs, ended, max_new_tokens=8)  # eos allowed: a score, not -inf
    assert (plain.row, plain.step) == (0, 2) and np.isfinite(plain.margin)
    # trailing pad columns after every row ended are accepted; stopping early is not
    own = greedy(model, inputs, max_new_tokens=8, sequence_bias={(eos,): 8.0})
    assert (own[:, width:] == eos).any(axis=1).all(), "the bias should end every row"
    padded = np.concatenate([own, np.full((own.shape[0], 3), pad)], axis=1)
    assert diff_generate(model, inputs, padded, max_new_tokens=8, sequence_bias={(eos,): 8.0}).verdict == "agree"
    short = tokens[:, :width + 4]
    report = diff_generate(model, inputs, short, max_new_tokens=8, min_new_tokens=8)
    assert report.verdict == "divergence" and report.step == 4 and "stopped" in report.rows[report.row].reason
    assert diff_generate(model, inputs, short, min_new_tokens=8).verdict == "agree"  # no limit: the candidate's length
    longer = greedy(model, inputs, max_new_tokens=10, min_new_tokens=10)
    report = diff_generate(model, inputs, longer, max_new_tokens=8, min_new_tokens=8)
    assert report.verdict == "divergence" and report.step == 8 and "past max_new_tokens" in report.rows[0].reason


def test_eos_then_padding_is_generate_s_handling():
    model = load("opt")
    inputs = prompts("opt", model, 1, batch=3)
    bias = {"sequence_bias": {(model.config.eos_token_id,): 6.0}, "max_new_tokens": 10}
    tokens = greedy(model, inputs, **bias)  # rows 0 and 2 end (eos), row 1 does not
    ended = (tokens[:, inputs["input_ids"].shape[1]:] == model.config.eos_token_id).any(axis=1)
    assert ended.tolist() == [True, False, True]
    assert diff_generate(model, inputs, tokens, **bias).verdict == "agree"
    after = tokens.copy()
    after[2, -1] = 5  # not padding after row 2's eos
    report = diff_generate(model, inputs, after, **bias)
    assert (report.verdict, report.row, report.step) == ("divergence", 2, 9) and "pad" in report.rows[2].reason
    assert [r.verdict for r in report.rows] == ["agree", "agree", "divergence"]


def test_processors_follow_the_generation_arguments():
    model = load("opt")
    inputs = prompts("opt", model, 9)
    kwargs = dict(max_new_tokens=10, repetition_penalty=1.4, no_repeat_ngram_size=2, min_new_tokens=3)
    tokens = greedy(model, inputs, **kwargs)
    assert diff_generate(model, inputs, tokens, **kwargs).verdict == "agree"
    plain = greedy(model, inputs, max_new_tokens=10)
    if not np.array_equal(plain, tokens):  # the processors matter: without them it is a divergence
        assert diff_generate(model, inputs, plain, **kwargs).verdict == "divergence"


def test_sampling_checks_support_only():
    model = load_golden_opt()  # small: these run generate() often
    inputs = prompts("opt", model, 2)
    kwargs = dict(max_new_tokens=8, do_sample=True, top_k=4)
    tokens = greedy(model, inputs, seed=1, **kwargs)
    report = diff_generate(model, inputs, tokens, **kwargs)
    assert report.verdict == "possible" and report.exit_code == 0 and report.strategy == "sampling"
    width = inputs["input_ids"].shape[1]
    logits = model(**inputs).logits[1, -1]
    outside = int(np.argsort(logits)[0])  # the least likely token: removed by top_k=4
    bad = tokens.copy()
    bad[1, width] = outside
    report = diff_generate(model, inputs, bad, **kwargs)
    assert (report.verdict, report.row, report.step) == ("divergence", 1, 0)
    three = greedy(model, inputs, seed=2, num_return_sequences=3, **kwargs)  # rows: B x 3
    assert diff_generate(model, inputs, three, **kwargs).verdict == "possible"


def test_beam_search():
    model = load_golden_opt()  # small: these run generate() often
    inputs = prompts("opt", model, 4)
    kwargs = dict(max_new_tokens=6, num_beams=3)
    tokens = greedy(model, inputs, **kwargs)
    report = diff_generate(model, inputs, tokens, **kwargs)
    assert report.verdict == "agree" and report.strategy == "beam search"
    two = greedy(model, inputs, num_return_sequences=2, **kwargs)
    assert diff_generate(model, inputs, two, **kwargs).verdict == "agree"
    bad = tokens.copy()
    bad[0, -3:] = [20, 21, 22] if list(bad[0, -3:]) != [20, 21, 22] else [23, 24, 25]
    with pytest.raises(Undecidable, match="row 0 differs .* at new token 3"):
        diff_generate(model, inputs, bad, **kwargs)


@pytest.mark.parametrize("kwargs, what", [
    (dict(num_beams=2, do_sample=True), "beam sampling"), (dict(num_beams=2, num_beam_groups=2,
                                                                diversity_penalty=1.0), "group beam search"),
    (dict(penalty_alpha=0.6, top_k=4), "contrastive search"), (dict(num_beams=2, force_words_ids=[[5]]), "constrained")])
def test_strategies_that_cannot_be_judged(kwargs, what):
    model = load("opt")
    inputs = prompts("opt", model, 1)
    tokens = greedy(model, inputs, max_new_tokens=3)
    with pytest.raises(NotImplementedError, match=what):
        diff_generate(model, inputs, tokens, **kwargs)


def test_bad_candidates_get_clear_errors():
    model = load("opt")
    inputs = prompts("opt", model, 1)
    tokens = greedy(model, inputs, max_new_tokens=3)
    for bad, message in [(tokens[0], "2-D"), (tokens.astype(float), "integer"), (tokens[:1], "not a multiple"),
                         (tokens[:, :inputs["input_ids"].shape[1]], "no new token"),
                         (np.where(tokens == tokens[0, 3], 5000, tokens), "outside the vocabulary"),
                         (np.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1), "does not start with the prompt")]:
        with pytest.raises(ValueError, match=message):
            diff_generate(model, inputs, bad)
    with pytest.raises(ValueError, match="input_ids"):
        diff_generate(model, {"attention_mask": inputs["attention_mask"]}, tokens)
    led = load("led")
    led_inputs = prompts("led", led, 1)
    led_tokens = led.generate(**led_inputs, max_new_tokens=3)
    with pytest.raises(ValueError, match="decoder start token"):
        diff_generate(led, led_inputs, led_tokens[:, 1:])


def run_cli(*argv, capsys):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli(tmp_path, capsys):
    model = refimpl.from_pretrained(SHIPPED)
    inputs = prompts("opt", model, 0)
    np.savez(tmp_path / "in.npz", **inputs)
    tokens = greedy(model, inputs, max_new_tokens=8)
    np.save(tmp_path / "ours.npy", tokens)
    bad = tokens.copy()
    bad[1, -4] = (bad[1, -4] + 1) % model.config.vocab_size
    np.save(tmp_path / "bad.npy", bad)
    common = ("--model", SHIPPED, "--inputs", tmp_path / "in.npz")
    code, out, _ = run_cli("diff-generate", *common, "--tokens", tmp_path / "ours.npy", "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["verdict"] == "agree" and report["step"] is None
    assert {"verdict", "step", "margin", "noise"} <= set(report)
    code, out, _ = run_cli("diff-generate", *common, "--tokens", tmp_path / "bad.npy", "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 1 and (report["verdict"], report["row"], report["step"]) == ("divergence", 1, 4)
    code, out, _ = run_cli("diff-generate", *common, "--tokens", tmp_path / "bad.npy", "--max-new-tokens", 8,
                           "--repetition-penalty", 1.2, capsys=capsys)
    assert code == 1 and "diverges" in out
    code, _, err = run_cli("diff-generate", *common, "--tokens", tmp_path / "missing.npy", capsys=capsys)
    assert code == 2 and "--tokens" in err
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run_cli("diff-generate", *common, "--tokens", tmp_path / "objects.npy", capsys=capsys)
    assert code == 2 and "not a readable .npy" in err
    np.savez(tmp_path / "wrong.npz", input_ids=inputs["input_ids"], nonsense=inputs["attention_mask"])
    code, _, err = run_cli("diff-generate", "--model", SHIPPED, "--inputs", tmp_path / "wrong.npz", "--tokens",
                           tmp_path / "ours.npy", capsys=capsys)
    assert code == 2 and "nonsense" in err
    code, _, err = run_cli("diff-generate", *common, "--tokens", tmp_path / "ours.npy", "--num-beams", 2,
                           "--do-sample", capsys=capsys)
    assert code == 2 and "beam sampling" in err
