"""generate(): token ids identical to upstream's, scores within the golden tolerance (golden/capture_generation.py),
plus properties that need no upstream."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from safetensors.numpy import load_file

import refimpl
from golden import DTYPES, GOLDEN, REGENERATE, compare_tensor
from refimpl import generation
from refimpl.generation import top_k, top_p

GEN = GOLDEN / "generation"
FAMILIES = sorted(p.name for p in GEN.iterdir() if (p / "cases.json").exists()) if GEN.exists() else []
STRATEGIES = GOLDEN / "generation_strategies"  # golden/capture_generation_strategies.py
STRATEGY_FAMILIES = sorted(p.name for p in STRATEGIES.glob("*") if (p / "cases.json").exists())
FIELDS = ("sequences_scores", "scores", "beam_indices", "attentions", "hidden_states", "encoder_attentions",
          "encoder_hidden_states", "decoder_attentions", "cross_attentions", "decoder_hidden_states")


def golden_cases():
    for family in FAMILIES:
        spec = json.loads((GEN / family / "cases.json").read_text())
        for name, kwargs in spec["cases"].items():
            yield pytest.param(family, name, {**spec["always"], **kwargs}, id=f"{family}/{name}")


def strategy_cases():
    for family in STRATEGY_FAMILIES:
        spec = json.loads((STRATEGIES / family / "cases.json").read_text())
        for name, kwargs in spec["cases"].items():
            yield pytest.param(family, name, {**spec["always"], **kwargs}, ["input_ids", "attention_mask",
                               *spec["arrays"][name]], id=f"{family}/{name}")


class Replay:
    """refimpl's draw seam (refimpl.generation.search.draw) fed with upstream's recorded torch.multinomial calls,
    in order: returns upstream's draws and records where the probabilities refimpl offered differ."""

    def __init__(self, calls, dtype, compare=compare_tensor):
        self.calls, self.dtype, self.compare, self.problems = list(calls), dtype, compare, []

    def draw(self, probs, num_samples):
        if not self.calls:
            self.problems.append("refimpl drew more often than upstream")
            return np.zeros((probs.shape[0], num_samples), dtype=np.int64)
        expected, drawn = self.calls.pop(0)
        self.problems += self.compare(probs, expected, self.dtype, "probabilities offered to a draw")
        if drawn.shape != (probs.shape[0], num_samples):
            self.problems.append(f"refimpl asked for {num_samples} draws from {probs.shape}, upstream drew "
                                 f"{drawn.shape}")
            return np.zeros((probs.shape[0], num_samples), dtype=np.int64)
        return drawn

    def leftover(self):
        return [f"refimpl drew {len(self.calls)} times fewer than upstream"] if self.calls else []


def without_tied_beam_choice(fields, kwargs):
    """Beam sampling starts every beam at score 0, so at the first step the beams of a row are identical and draw
    the same token with the same score; later a sequence may sit in several beams. Which of those identical beams
    a beam index names is decided by float32 noise in upstream (its rows differ in the last bit: the matmul's
    blocking) and by order in refimpl, so for beam sampling only where the beam indices stop (-1) is compared."""
    if kwargs.get("do_sample") and kwargs.get("num_beams", 1) > 1 and "beam_indices" in fields:
        fields = {**fields, "beam_indices": fields["beam_indices"] >= 0}
    return fields


def nested_fields(out, names):  # {"field.i.j": array} of the Generate*Output's (nested tuple) fields
    flat = {}

    def walk(prefix, value):
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif value is not None:
            flat[prefix] = np.asarray(value)
    for name in names:
        walk(name, getattr(out, name, None))
    return flat


def expected_fields(tensors, case, dtype):
    prefix = f"{case}/{dtype}/"
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def ours_fields(out):
    fields = {"sequences": out.sequences}
    for name in ("scores",):
        for i, s in enumerate(getattr(out, name) or ()):
            fields[f"{name}.{i}"] = s
    for name in ("sequences_scores", "beam_indices"):
        if getattr(out, name, None) is not None:
            fields[name] = getattr(out, name)
    return fields


def test_generation_golden_present():
    assert {"opt", "xglm"} <= set(FAMILIES), f"generation golden missing; {REGENERATE}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family, case, kwargs", list(golden_cases()))
def test_generate_matches_upstream(family, case, kwargs, dtype):
    tensors = load_file(str(GEN / family / "results.safetensors"))
    model = refimpl.from_pretrained(GEN / family, dtype=dtype)
    out = model.generate(tensors[f"{case}/input/input_ids"], attention_mask=tensors[f"{case}/input/attention_mask"],
                         **kwargs)
    expected, ours = expected_fields(tensors, case, dtype), ours_fields(out)
    where = f"[{family}/{case} {dtype}]"
    assert sorted(ours) == sorted(expected), f"{where} fields {sorted(ours)} != upstream {sorted(expected)}"
    assert np.array_equal(ours["sequences"], expected["sequences"]), (
        f"{where} token ids differ:\nours\n{ours['sequences']}\nupstream\n{expected['sequences']}")
    problems = [p for key in expected for p in compare_tensor(ours[key], expected[key], dtype, f"{where} {key}")]
    assert not problems, "\n".join(problems)


def test_strategy_golden_present():
    assert {"opt", "xglm", "led"} <= set(STRATEGY_FAMILIES), f"strategy golden missing; {REGENERATE}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family, case, kwargs, arrays", list(strategy_cases()))
def test_strategies_match_upstream(load_model, family, case, kwargs, arrays, dtype):
    """Contrastive, group beam, constrained beam search, beam sampling (upstream's draws replayed), dict outputs
    with attentions and hidden states, LED decoder prefixes and head masks: every field of upstream's output."""
    tensors = load_file(str(STRATEGIES / family / "results.safetensors"))
    model = load_model(STRATEGIES / family, None, dtype)
    inputs = {arg: tensors[f"{case}/input/{arg}"] for arg in arrays}
    expected = expected_fields(tensors, case, dtype)
    draws = sorted((k for k in expected if k.startswith("draws.")), key=lambda k: int(k.split(".")[1]))
    replay = Replay([(expected.pop(f"draw_probs.{k[6:]}"), expected.pop(k)) for k in draws], dtype)
    out = model.generate(**inputs, generator=replay, **kwargs)
    where = f"[{family}/{case} {dtype}]"
    assert np.array_equal(out.sequences, expected.pop("sequences")), f"{where} token ids differ from upstream's"
    ours = without_tied_beam_choice(nested_fields(out, FIELDS), kwargs)
    expected = without_tied_beam_choice(expected, kwargs)
    assert sorted(ours) == sorted(expected), f"{where} fields differ: {sorted(set(ours) ^ set(expected))}"
    problems = replay.problems + replay.leftover()
    problems += [p for key in expected for p in compare_tensor(ours[key], expected[key], dtype, f"{where} {key}")]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- properties (no upstream needed)

@pytest.fixture(scope="module")
def opt_model(load_model):  # the OPT generation checkpoint, float64
    return load_model(GEN / "opt", None, "float64")
PROMPT = np.array([[1, 1, 5, 6, 7], [8, 9, 10, 11, 12]])
MASK = (PROMPT != 1).astype(np.int64)


def test_greedy_equals_argmax_of_full_forwards(opt_model):
    """Cached greedy decoding against the argmax of a full forward (no cache) over the sequence so far."""
    greedy = opt_model.generate(PROMPT, attention_mask=MASK, max_new_tokens=6, eos_token_id=None)
    ids, mask = PROMPT.copy(), MASK.copy()
    for _ in range(6):
        logits = opt_model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1]
        ids = np.concatenate([ids, logits.argmax(-1)[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    np.testing.assert_array_equal(greedy, ids)


def test_beam_search_code_with_one_beam_is_greedy(opt_model):
    """generate() sends num_beams=1 to greedy search; the beam-search code itself, run with one beam (its
    scorer keeps the single best candidate each step), must choose the same tokens."""
    greedy = opt_model.generate(PROMPT, attention_mask=MASK, max_new_tokens=6, eos_token_id=None)
    cfg, model_kwargs = generation.GenerationConfig.for_model(opt_model).updated(
        num_beams=1, eos_token_id=None, max_length=PROMPT.shape[1] + 6, attention_mask=MASK, use_cache=True)
    decoder = generation.Decoder(opt_model, model_kwargs, opt_model.spec.generation)
    processors = generation.build_processors(cfg, PROMPT.shape[1])
    beam = generation.beam_search(decoder, PROMPT, PROMPT.shape[0], cfg, processors, is_encoder_decoder=False)
    np.testing.assert_array_equal(beam, greedy)


def test_beam_scores_are_the_sequences_log_probabilities(opt_model):
    """With length_penalty=0 a beam's score is the sum of its new tokens' log-probabilities: recomputed here
    from one full forward per returned sequence (no cache, no beam bookkeeping); best sequence first."""
    new = 4
    out = opt_model.generate(PROMPT, attention_mask=MASK, max_new_tokens=new, num_beams=3, num_return_sequences=2,
                             length_penalty=0.0, eos_token_id=None, return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape == (4, PROMPT.shape[1] + new)
    for i, sequence in enumerate(out.sequences):
        mask = np.concatenate([MASK[i // 2], np.ones(new, np.int64)])[None]
        logits = opt_model(input_ids=sequence[None], attention_mask=mask, use_cache=False).logits[0]  # [L, V]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        positions = np.arange(PROMPT.shape[1], PROMPT.shape[1] + new)
        expected = logp[positions - 1, sequence[positions]].sum()
        assert abs(out.sequences_scores[i] - expected) <= 1e-5 * max(1.0, abs(expected)), \
            f"sequence {i}: score {out.sequences_scores[i]!r}, its log-probability {expected!r}"
    assert np.all(out.sequences_scores[0::2] >= out.sequences_scores[1::2]), "the best sequence must come first"


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 8), st.floats(0.1, 0.95), st.floats(0.3, 2.0))
def test_sampling_reproducible_and_respects_top_k_top_p(opt_model, seed, k, p, t):
    kwargs = dict(attention_mask=MASK, do_sample=True, max_new_tokens=5, top_k=k, top_p=p, temperature=t,
                  eos_token_id=None, return_dict_in_generate=True, output_scores=True)
    first = opt_model.generate(PROMPT, seed=seed, **kwargs)
    again = opt_model.generate(PROMPT, generator=np.random.default_rng(seed), **kwargs)
    np.testing.assert_array_equal(first.sequences, again.sequences)
    for step, scores in enumerate(first.scores):
        chosen = first.sequences[:, PROMPT.shape[1] + step]
        assert np.isfinite(scores[np.arange(len(chosen)), chosen]).all(), "sampled a token that top-k/top-p removed"
        assert (np.isfinite(scores).sum(-1) <= k).all()


def test_top_k_and_top_p_keep_the_right_sets():
    scores = np.log(np.array([[0.5, 0.25, 0.15, 0.1]]))
    assert np.isfinite(top_k(2)(None, scores.copy())).tolist() == [[True, True, False, False]]
    # top_p=0.7: keep the smallest set whose probability reaches 0.7 -> {0.5, 0.25}
    assert np.isfinite(top_p(0.7)(None, scores.copy())).tolist() == [[True, True, False, False]]
    assert np.isfinite(top_p(0.8)(None, scores.copy())).tolist() == [[True, True, True, False]]


def test_generate_rejects_bad_input(opt_model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        opt_model.generate(np.array([[5, 99]]))
    with pytest.raises(ValueError, match="num_return_sequences"):
        opt_model.generate(PROMPT, num_beams=2, num_return_sequences=3)


def test_cli_generate_left_pads_and_matches_generate(opt_model, tmp_path):
    """`refimpl generate` batches prompts with left padding; each row equals generate() on that batch."""
    from refimpl.cli import main

    (tmp_path / "in.txt").write_text("5 6 7\n9 10 11 12 13\nnot ids\n")
    assert main(["generate", str(tmp_path / "in.txt"), "--format", "ids", "--model", str(GEN / "opt"),
                 "--max-new-tokens", "4", "--num-beams", "2", "--dtype", "float64", "-o", str(tmp_path / "o")]) == 3
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    batch = np.array([[1, 1, 5, 6, 7], [9, 10, 11, 12, 13]])
    expected = opt_model.generate(batch, attention_mask=(np.arange(5) >= np.array([[2], [0]])).astype(int),
                              max_new_tokens=4, num_beams=2)
    eos = opt_model.config.eos_token_id
    assert rows[0]["new_token_ids"] == up_to_eos(expected[0, 5:], eos)
    assert rows[1]["new_token_ids"] == up_to_eos(expected[1, 5:], eos)
    assert rows[2]["error"] == "line 3: expected whitespace-separated integer token ids"


def up_to_eos(new, eos):  # the new tokens up to the first eos (included): what a record holds
    new = [int(t) for t in new]
    return new[:new.index(eos) + 1] if eos in new else new


def test_cli_generate_encoder_decoder_pads_right(tmp_path):
    """For LED the prompts are right-padded encoder inputs (global attention on the first token) and the
    output is what the decoder produced after its start token."""
    from refimpl.cli import main

    directory = GOLDEN / "led" / "window-6-LEDForConditionalGeneration"
    (tmp_path / "in.txt").write_text("5 6 7 8\n9 10 11\n")
    assert main(["generate", str(tmp_path / "in.txt"), "--format", "ids", "--model", str(directory),
                 "--max-new-tokens", "4", "--num-beams", "2", "--dtype", "float64", "-o", str(tmp_path / "o")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    model = refimpl.from_pretrained(directory, dtype="float64")
    batch = np.array([[5, 6, 7, 8], [9, 10, 11, model.config.pad_token_id]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    glob = np.zeros_like(mask)
    glob[:, 0] = 1
    expected = model.generate(batch, attention_mask=mask, global_attention_mask=glob, max_new_tokens=4, num_beams=2)
    eos = model.config.eos_token_id
    assert [r["new_token_ids"] for r in rows] == [up_to_eos(expected[0, 1:], eos), up_to_eos(expected[1, 1:], eos)]


def test_generate_returns_encoder_outputs_when_asked():
    model = refimpl.from_pretrained(GOLDEN / "led" / "window-6-LEDForConditionalGeneration")
    ids = np.array([[5, 6, 7, 8, 2]])
    out = model.generate(ids, max_new_tokens=2, return_dict_in_generate=True, output_attentions=True,
                         output_hidden_states=True)
    assert out.encoder_attentions is not None and out.encoder_hidden_states is not None
    assert len(out.encoder_hidden_states) == model.config.encoder_layers + 1


# ---------------------------------------------------------------- strategies: properties and refusals

def test_generate_refuses_what_no_model_input_takes(opt_model):
    """GenerationMixin._validate_model_kwargs: a typo or an argument of another model is named, not ignored."""
    with pytest.raises(ValueError, match=r"not used by the model: \['num_beem', 'decoder_input_ids'\]"):
        opt_model.generate(PROMPT, attention_mask=MASK, num_beem=3, decoder_input_ids=PROMPT)
    with pytest.raises(ValueError, match=r"`prefix_allowed_tokens_fn` is not implemented by refimpl; it must be None"):
        opt_model.generate(PROMPT, attention_mask=MASK, prefix_allowed_tokens_fn=lambda b, ids: [5], streamer=None)
    with pytest.raises(ValueError, match="inputs_embeds"):
        opt_model.generate(PROMPT, attention_mask=MASK, inputs_embeds=np.zeros((2, 5, 12)))
    past = opt_model.generate(PROMPT, attention_mask=MASK, max_new_tokens=2, return_dict_in_generate=True)
    with pytest.raises(ValueError, match="past_key_values cannot be passed"):
        opt_model.generate(past.sequences, attention_mask=np.ones_like(past.sequences), num_beams=2,
                           past_key_values=past.past_key_values)
    with pytest.raises(ValueError, match="needs num_beams > 1"):
        opt_model.generate(PROMPT, attention_mask=MASK, force_words_ids=[[5]])
    with pytest.raises(ValueError, match="force_words_ids"):
        opt_model.generate(PROMPT, attention_mask=MASK, num_beams=2, force_words_ids=[[5, -1]])
    with pytest.raises(ValueError, match="subset"):
        generation.DisjunctiveConstraint([[5], [5, 6]])


def last_hidden_and_probs(model, ids, mask):  # one full forward without cache -> ([B, S, D] states, [B, V] probs)
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
    logits = out.logits[:, -1]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return out.hidden_states[-1], probs / probs.sum(-1, keepdims=True)


def test_contrastive_search_is_its_definition(opt_model):
    """Each step picks, among the top_k most probable tokens, the one maximising (1 - a) p - a max_j cos(h, h_j):
    recomputed with full forwards (no cache, no batched candidates) over the sequence so far."""
    alpha, k, new = 0.6, 3, 5
    out = opt_model.generate(PROMPT, attention_mask=MASK, penalty_alpha=alpha, top_k=k, max_new_tokens=new,
                             eos_token_id=None)
    ids, mask = PROMPT.copy(), MASK.copy()
    for _ in range(new):
        context, probs = last_hidden_and_probs(opt_model, ids, mask)
        chosen = []
        for row in range(len(ids)):
            best, best_score = None, -np.inf
            for token in np.argsort(-probs[row], kind="stable")[:k]:
                grown = np.concatenate([ids[row], [token]])[None]
                h, _ = last_hidden_and_probs(opt_model, grown, np.concatenate([mask[row], [1]])[None])
                cos = (context[row] @ h[0, -1]) / np.linalg.norm(context[row], axis=-1) / np.linalg.norm(h[0, -1])
                score = (1 - alpha) * probs[row, token] - alpha * cos.max()
                if score > best_score:
                    best, best_score = token, score
            chosen.append(best)
        ids = np.concatenate([ids, np.array(chosen)[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones((len(ids), 1), np.int64)], axis=1)
    np.testing.assert_array_equal(out, ids)


def test_beam_sampling_draws_distinct_candidates_reproducibly(opt_model):
    kwargs = dict(attention_mask=MASK, do_sample=True, num_beams=3, max_new_tokens=4, top_k=5, eos_token_id=None,
                  return_dict_in_generate=True, output_scores=True)
    first, again = opt_model.generate(PROMPT, seed=7, **kwargs), opt_model.generate(PROMPT, seed=7, **kwargs)
    np.testing.assert_array_equal(first.sequences, again.sequences)
    probs = np.array([[0.0, 0.5, 0.25, 0.25, 0.0]] * 400)
    drawn = generation.search.draw(probs, 3, np.random.default_rng(0))
    assert all(sorted(row) == [1, 2, 3] for row in drawn.tolist()), "three distinct non-zero tokens per row"
    first_choice = np.bincount(drawn[:, 0], minlength=5) / 400  # the first draw follows the probabilities
    assert abs(first_choice[1] - 0.5) < 0.1 and first_choice[0] == first_choice[4] == 0


@pytest.fixture(scope="module")
def led_model(load_model):
    return load_model(STRATEGIES / "led", None, "float64")


def test_led_encoder_outputs_once_per_input_and_decoder_prefix_continued(led_model):
    ids = np.array([[5, 6, 7, 8, 2], [9, 10, 11, 2, 1]])
    mask = (ids != 1).astype(np.int64)
    out = led_model.generate(ids, attention_mask=mask, num_beams=3, max_new_tokens=3, return_dict_in_generate=True,
                             output_attentions=True, output_hidden_states=True)
    assert all(a.shape[0] == 2 for a in out.encoder_attentions + out.encoder_hidden_states), "batch B, not B * beams"
    assert all(a.shape[0] == 6 for step in out.decoder_attentions for a in step), "decoder: one row per beam"
    prefix = np.array([[7, 8], [9, 9]])
    continued = led_model.generate(ids, attention_mask=mask, decoder_input_ids=prefix, max_new_tokens=3)
    start = led_model.config.decoder_start_token_id
    np.testing.assert_array_equal(continued[:, :3], np.concatenate([[[start], [start]], prefix], axis=1))
    with_start = led_model.generate(ids, attention_mask=mask, decoder_input_ids=continued[:, :3], max_new_tokens=3)
    np.testing.assert_array_equal(with_start, continued)
