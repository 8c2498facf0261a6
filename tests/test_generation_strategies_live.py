"""Every decoding strategy of generate() against live upstream (transformers 4.37.2), OPT, XGLM and LED, float32
and float64, on hypothesis-drawn models, prompts, strategies and options (skipped without torch).

Each example runs upstream's generate() and refimpl's with the same arguments and compares every field of the
dict output: token ids, beam indices exactly; scores, sequences_scores, attentions, hidden states (per step, per
layer), encoder outputs, past_key_values within 1e-5 (float32) / 1e-10 (float64), normwise (tests/golden.py).
Sampling strategies replay upstream's torch.multinomial results through refimpl's draw seam
(generate(generator=Replay)), which also checks that refimpl offered the same probabilities to each draw.
The recipes of upstream's GenerationTesterMixin (tests/generation/test_utils.py) are replayed in spirit:
greedy, sampling, beam search, beam sampling, group beam search, constrained beam search (force_words_ids and
constraint objects), contrastive search, dict outputs with scores/attentions/hidden states, left-padded batches,
continuing from past_key_values, LED with head masks and decoder prefixes.
"""
import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, reject, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from live import randomize_  # noqa: E402  (puts golden/ on sys.path)

from capture_generation_strategies import recorded_multinomial, upstream_in as capture_upstream_in  # noqa: E402
from common import flatten  # noqa: E402
from golden import TOL, compare_tensor  # noqa: E402
from test_generation import Replay, nested_fields, without_tied_beam_choice  # noqa: E402

import refimpl  # noqa: E402
from refimpl import generation  # noqa: E402

transformers.logging.set_verbosity_error()
LIVE = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
FIELDS = ("sequences", "sequences_scores", "scores", "beam_indices", "attentions", "hidden_states",
          "encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
          "decoder_hidden_states", "past_key_values")
EOS, PAD, BOS = 2, 1, 0


# ---------------------------------------------------------------- models (upstream's ModelTester configs, smaller)

def upstream_model(family, vocab, seed):
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=BOS, dropout=0.0,
                  attention_dropout=0.0)
    if family == "opt":  # OPTModelTester: hidden 16, 2 layers, 4 heads, ffn 4, word_embed_proj_dim 16
        model = transformers.OPTForCausalLM(transformers.OPTConfig(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=4, ffn_dim=8, max_position_embeddings=40,
            word_embed_proj_dim=16, **common))
    elif family == "xglm":  # XGLMModelTester: d_model 32, 2 layers, 4 heads, ffn 37
        model = transformers.XGLMForCausalLM(transformers.XGLMConfig(
            d_model=16, num_layers=2, attention_heads=4, ffn_dim=20, max_position_embeddings=40, **common))
    else:  # LEDModelTester: d_model 16, 2 + 2 layers, 4 heads, ffn 4, attention_window 4
        model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(
            d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=8, decoder_ffn_dim=8, max_encoder_position_embeddings=32,
            max_decoder_position_embeddings=32, attention_window=4, decoder_start_token_id=EOS, **common))
    randomize_(model, seed)
    return model.eval()


@functools.lru_cache(maxsize=None)
def model_pair(family, vocab, seed, directory):  # -> (upstream model, {dtype: refimpl model})
    model = upstream_model(family, vocab, seed)
    model.save_pretrained(directory, safe_serialization=True)
    return model, {d: refimpl.from_pretrained(directory, dtype=d) for d in TORCH_DTYPE}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    return lambda family, vocab, seed: model_pair(family, vocab, seed, str(root / f"{family}-{vocab}-{seed}"))


def upstream_in(model, family, dtype):  # golden/capture_generation_strategies.py: float64 without float32 islands
    return capture_upstream_in(model, family, TORCH_DTYPE[dtype])


# ---------------------------------------------------------------- the sampling seam

# ---------------------------------------------------------------- comparison

def to_torch_kwargs(kwargs, dtype):
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(v))
            out[k] = t.to(TORCH_DTYPE[dtype]) if t.is_floating_point() else t
        elif k == "constraints":
            out[k] = [upstream_constraint(c) for c in v]
        else:
            out[k] = v
    return out


def upstream_constraint(spec):  # ("phrase", [ids]) or ("disjunctive", [[ids], ...])
    kind, ids = spec
    return (transformers.PhrasalConstraint if kind == "phrase" else transformers.DisjunctiveConstraint)(ids)


def ours_constraint(spec):
    kind, ids = spec
    return (generation.PhrasalConstraint if kind == "phrase" else generation.DisjunctiveConstraint)(ids)


def run_upstream(model, family, dtype, kwargs):  # -> ({field: array}, multinomial calls)
    calls = []
    with upstream_in(model, family, dtype), recorded_multinomial(calls), torch.no_grad():
        out = model.generate(**to_torch_kwargs(kwargs, dtype))
    result = {}
    for name in FIELDS:
        flatten(name, getattr(out, name, None), result)
    return result, calls


def run_ours(model, dtype, kwargs, calls):
    kwargs = dict(kwargs)
    if "constraints" in kwargs:
        kwargs["constraints"] = [ours_constraint(c) for c in kwargs["constraints"]]
    replay = Replay(calls, dtype, compare)
    out = model.generate(generator=replay, **kwargs)
    return nested_fields(out, FIELDS), replay.problems + replay.leftover()


def differences(ours, expected, dtype, where):
    if sorted(ours) != sorted(expected):
        return [f"{where}: fields {sorted(set(ours) ^ set(expected))} present on one side only"]
    if not np.array_equal(ours["sequences"], expected["sequences"]):
        return [f"{where}: token ids differ\nours\n{ours['sequences']}\nupstream\n{expected['sequences']}"]
    return [p for key in sorted(expected) for p in compare(ours[key], expected[key], dtype, f"{where} {key}")]


def compare(ours, expected, dtype, where):
    """tests/golden.py compare_tensor (normwise relative error), with the scale floored at 1: log-probabilities
    near 0 (a beam's score after one confident token) are compared within the tolerance absolutely."""
    problems = compare_tensor(ours, expected, dtype, where)
    if problems and expected.dtype.kind == "f" and np.asarray(ours).shape == expected.shape:
        finite = np.isfinite(expected)
        if np.array_equal(np.isfinite(ours), finite) and np.abs(expected[finite]).max(initial=0) < 1:
            if np.abs(ours[finite].astype(np.float64) - expected[finite]).max(initial=0) <= TOL[dtype]:
                return []
    return problems


def check(models, family, vocab, seed, dtype, kwargs):
    upstream, ours = models(family, vocab, seed)
    try:
        expected, calls = run_upstream(upstream, family, dtype, kwargs)
    except ValueError as refusal:  # what upstream refuses, refimpl refuses
        with pytest.raises(ValueError):
            run_ours(ours[dtype], dtype, kwargs, [])
        return refusal
    except RuntimeError as crash:  # upstream's constrained finalize: some best hypotheses have no beam indices
        if "Could not infer dtype of NoneType" in str(crash):
            reject()
        raise
    got, problems = run_ours(ours[dtype], dtype, kwargs, calls)
    where = f"[{family} vocab={vocab} seed={seed} {dtype} {describe(kwargs)}]"
    got, expected = without_tied_beam_choice(got, kwargs), without_tied_beam_choice(expected, kwargs)
    problems = [f"{where} {p}" for p in problems] + differences(got, expected, dtype, where)
    assert not problems, "\n".join(problems)


def describe(kwargs):
    return {k: (v.tolist() if isinstance(v, np.ndarray) and v.size < 40 else v) for k, v in kwargs.items()}


# ---------------------------------------------------------------- drawing the request

def prompt(data, family, vocab, rng):  # -> generate() keyword arguments of the prompt
    batch, length = data.draw(st.integers(1, 3), "batch"), data.draw(st.integers(1, 6), "length")
    ids = rng.integers(3, vocab, size=(batch, length))
    if family == "led":  # right padding, global attention on the first token (LED's recipe)
        real = rng.integers(1, length + 1, size=batch)
        mask = (np.arange(length)[None, :] < real[:, None]).astype(np.int64)
        ids[mask == 0] = PAD
        kwargs = dict(input_ids=ids, attention_mask=mask)
        if data.draw(st.booleans(), "global attention"):
            glob = np.zeros_like(mask)
            glob[:, 0] = 1
            kwargs["global_attention_mask"] = glob
        return kwargs
    pads = rng.integers(0, length, size=batch)  # left padding, at least one real token per row
    mask = (np.arange(length)[None, :] >= pads[:, None]).astype(np.int64)
    ids[mask == 0] = PAD
    return dict(input_ids=ids, attention_mask=mask)


def strategy_options(data, strategy, vocab):
    one_of = lambda label, *values: data.draw(st.sampled_from(values), label)  # noqa: E731
    if strategy == "greedy":
        return {}
    if strategy == "contrastive":
        return dict(penalty_alpha=one_of("penalty_alpha", 0.3, 0.6, 1.0), top_k=one_of("top_k", 2, 3, 4))
    if strategy == "sample":
        return dict(do_sample=True, top_k=one_of("top_k", 0, 5), temperature=one_of("temperature", 1.0, 0.7),
                    num_return_sequences=one_of("num_return_sequences", 1, 2))
    beams = data.draw(st.integers(2, 4), "num_beams")
    options = dict(num_beams=beams, num_return_sequences=data.draw(st.integers(1, beams), "num_return_sequences"),
                   length_penalty=one_of("length_penalty", 1.0, 0.5, -0.5),
                   early_stopping=one_of("early_stopping", False, True, "never"))
    if strategy == "beam_sample":
        options.update(do_sample=True, top_k=one_of("top_k", 0, 8))
    elif strategy == "group_beam":
        options.update(num_beams=2 * beams, num_beam_groups=one_of("num_beam_groups", 2, beams),
                       diversity_penalty=one_of("diversity_penalty", 0.3, 1.5))
    elif strategy == "constrained":
        tokens = data.draw(st.lists(st.integers(3, vocab - 1), min_size=3, max_size=3, unique=True), "tokens")
        phrase = [tokens[0]] + data.draw(st.lists(st.integers(3, vocab - 1), max_size=2), "phrase")
        disjunctive = [[tokens[1]], [tokens[2], data.draw(st.integers(3, vocab - 1), "second")]]
        if data.draw(st.booleans(), "as constraint objects"):
            options["constraints"] = [("phrase", phrase)] + ([("disjunctive", disjunctive)]
                                                             if data.draw(st.booleans(), "two") else [])
        else:
            options["force_words_ids"] = [phrase] + ([disjunctive] if data.draw(st.booleans(), "two") else [])
    return options


STRATEGIES = ["greedy", "contrastive", "sample", "beam", "beam_sample", "group_beam", "constrained"]


@LIVE
@given(st.sampled_from(["opt", "xglm", "led"]), st.sampled_from(STRATEGIES), st.sampled_from(["float32", "float64"]),
       st.integers(0, 3), st.data())
def test_every_strategy_matches_live_upstream(models, family, strategy, dtype, seed, data):
    vocab = data.draw(st.sampled_from([24, 40]), "vocab")
    rng = np.random.default_rng(seed)
    kwargs = prompt(data, family, vocab, rng)
    kwargs.update(strategy_options(data, strategy, vocab))
    kwargs.update(max_new_tokens=data.draw(st.integers(1, 6), "max_new_tokens"), return_dict_in_generate=True,
                  output_scores=True, output_attentions=data.draw(st.booleans(), "attentions"),
                  output_hidden_states=data.draw(st.booleans(), "hidden states"),
                  no_repeat_ngram_size=data.draw(st.sampled_from([0, 2]), "ngram"),
                  repetition_penalty=data.draw(st.sampled_from([1.0, 1.3]), "repetition"))
    if data.draw(st.booleans(), "min_new_tokens"):
        kwargs["min_new_tokens"] = 2
    if data.draw(st.integers(0, 4), "use_cache") == 0:  # without a cache every step reruns the whole sequence
        kwargs["use_cache"] = False  # (contrastive search: refused by both)
    if family == "led":
        kwargs.update(led_options(data, strategy, kwargs, rng, vocab))
    check(models, family, vocab, seed, dtype, kwargs)


def led_options(data, strategy, kwargs, rng, vocab):
    """LED: a decoder prefix to continue from (with or without the start token), and head masks (upstream's
    test_generate_with_head_masking: zeros; here random 0/1 rows). Beams, sampled sequences and contrastive
    search repeat the masks' layer axis, and upstream then refuses the decoder's masks: refimpl must too."""
    options, batch = {}, kwargs["input_ids"].shape[0]
    if data.draw(st.booleans(), "decoder prefix"):
        prefix = rng.integers(3, vocab, size=(batch, data.draw(st.integers(1, 3), "prefix length")))
        if data.draw(st.booleans(), "prefix starts with the start token"):
            prefix[:, 0] = EOS
        options["decoder_input_ids"] = prefix
    if data.draw(st.booleans(), "head masks"):
        for name in ("head_mask", "decoder_head_mask", "cross_attn_head_mask"):
            options[name] = (rng.random((2, 4)) < 0.7).astype(np.float64)
    return options


@LIVE
@given(st.sampled_from(["opt", "xglm", "led"]), st.sampled_from(["float32", "float64"]), st.integers(0, 3), st.data())
def test_continuing_from_past_key_values_matches_live_upstream(models, family, dtype, seed, data):
    """GenerationTesterMixin.test_generate_continue_from_past_key_values: generate, then generate again from the
    returned cache with the sequences so far as input (LED: as decoder_input_ids); the second call equals
    upstream's (which continues from upstream's cache) and equals generating in one go."""
    vocab = 40
    upstream, ours = models(family, vocab, seed)
    kwargs = prompt(data, family, vocab, np.random.default_rng(seed))
    first = data.draw(st.integers(1, 4), "first")
    common = dict(return_dict_in_generate=True, output_scores=True, eos_token_id=None)
    with upstream_in(upstream, family, dtype), torch.no_grad():
        up = upstream.generate(**to_torch_kwargs(kwargs, dtype), max_new_tokens=first, **common)
        up_next = upstream.generate(**to_torch_kwargs(continued(kwargs, up.sequences.numpy(), family), dtype),
                                    past_key_values=up.past_key_values, max_new_tokens=2, **common)
    model = ours[dtype]
    out = model.generate(**kwargs, max_new_tokens=first, **common)
    ours_next = model.generate(**continued(kwargs, out.sequences, family), past_key_values=out.past_key_values,
                               max_new_tokens=2, **common)
    in_one_go = model.generate(**kwargs, max_new_tokens=first + 2, **common)
    where = f"[{family} seed={seed} {dtype} first={first}]"
    expected = {}
    flatten("sequences", up_next.sequences, expected), flatten("scores", up_next.scores, expected)
    got = nested_fields(ours_next, ("sequences", "scores"))
    problems = differences(got, expected, dtype, where)
    assert not problems, "\n".join(problems)
    np.testing.assert_array_equal(ours_next.sequences, in_one_go.sequences)


@LIVE
@given(st.sampled_from(["opt", "xglm", "led"]), st.sampled_from(["float32", "float64"]), st.integers(0, 3),
       st.sampled_from([-1, -7]), st.data())
def test_upstream_continue_recipe_with_pad_and_eos_minus_one(models, family, dtype, seed, never, data):
    """test_generate_continue_from_past_key_values as upstream writes it (tests/generation/test_utils.py):
    generation_config.pad_token_id = eos_token_id = -1 ("generate to max length": an id never generated),
    forced_eos_token_id = None; 4 new tokens in one go against 3, then 1 more from the returned cache. Sequences
    and every past_key_values tensor equal upstream's, and the two ways agree with each other (upstream's
    assertions); -7 stands for any other negative id upstream accepts."""
    vocab = 40
    upstream, ours = models(family, vocab, seed)
    kwargs = prompt(data, family, vocab, np.random.default_rng(seed))
    common = dict(do_sample=False, return_dict_in_generate=True, pad_token_id=never, eos_token_id=never,
                  forced_eos_token_id=None)
    with upstream_in(upstream, family, dtype), torch.no_grad():
        up = upstream.generate(**to_torch_kwargs(kwargs, dtype), max_new_tokens=4, **common)
        up_3 = upstream.generate(**to_torch_kwargs(kwargs, dtype), max_new_tokens=3, **common)
        up_1 = upstream.generate(**to_torch_kwargs(continued(kwargs, up_3.sequences.numpy(), family), dtype),
                                 past_key_values=up_3.past_key_values, max_new_tokens=1, **common)
    model = ours[dtype]
    out = model.generate(**kwargs, max_new_tokens=4, **common)
    out_3 = model.generate(**kwargs, max_new_tokens=3, **common)
    out_1 = model.generate(**continued(kwargs, out_3.sequences, family), past_key_values=out_3.past_key_values,
                           max_new_tokens=1, **common)
    where = f"[{family} seed={seed} {dtype} pad=eos={never}]"
    problems = []
    for name, ours_out, up_out in (("in one go", out, up), ("continued", out_1, up_1)):
        expected = {}
        flatten("sequences", up_out.sequences, expected), flatten("past_key_values", up_out.past_key_values, expected)
        problems += differences(nested_fields(ours_out, ("sequences", "past_key_values")), expected, dtype,
                                f"{where} {name}")
    assert not problems, "\n".join(problems)
    np.testing.assert_array_equal(out.sequences, out_1.sequences, err_msg=where)
    for layer, (a, b) in enumerate(zip(out.past_key_values, out_1.past_key_values)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert compare_tensor(x, y, dtype, f"{where} past_key_values.{layer}.{i}") == []


@LIVE
@given(st.sampled_from(["opt", "xglm", "led"]), st.integers(0, 3), st.data())
def test_any_pad_and_eos_upstream_accepts_behave_as_upstream(models, family, seed, data):
    """pad_token_id and eos_token_id drawn from every kind of int (negative, inside the vocabulary, beyond it),
    with and without the processors that index the scores with eos (min_new_tokens): where upstream generates,
    refimpl gives the same sequences; where upstream fails (torch's IndexError: a pad fed back to the
    embedding, an eos index outside the scores), refimpl raises its ValueError."""
    vocab = 40
    upstream, ours = models(family, vocab, seed)
    kwargs = prompt(data, family, vocab, np.random.default_rng(seed))
    token = st.one_of(st.integers(-2 * vocab, 2 * vocab), st.sampled_from([-1, -(2 ** 63), 2 ** 63 - 1]))
    pad = data.draw(token, "pad_token_id")
    eos = data.draw(st.one_of(token, st.lists(token, min_size=1, max_size=3), st.sampled_from([EOS, [EOS, 3]])),
                    "eos_token_id")
    options = dict(max_new_tokens=data.draw(st.integers(1, 4), "max_new_tokens"), pad_token_id=pad, eos_token_id=eos,
                   num_beams=data.draw(st.sampled_from([1, 2]), "num_beams"),
                   min_new_tokens=data.draw(st.sampled_from([None, 2]), "min_new_tokens"))
    try:
        with upstream_in(upstream, family, "float64"), torch.no_grad():
            expected = upstream.generate(**to_torch_kwargs(kwargs, "float64"), **options).numpy()
    except (IndexError, RuntimeError, ValueError, OverflowError) as err:
        event(f"upstream refuses: {type(err).__name__}")
        with pytest.raises(ValueError):
            ours["float64"].generate(**kwargs, **options)
        return
    event("upstream generates")
    got = ours["float64"].generate(**kwargs, **options)
    np.testing.assert_array_equal(got, expected, err_msg=f"[{family} seed={seed}] {options}")


def continued(kwargs, sequences, family):  # the inputs of the second call: everything generated so far
    kwargs = dict(kwargs)
    if family == "led":
        kwargs["decoder_input_ids"] = sequences
    else:
        extra = sequences.shape[1] - kwargs["input_ids"].shape[1]
        kwargs["input_ids"] = sequences
        kwargs["attention_mask"] = np.concatenate(
            [kwargs["attention_mask"], np.ones((sequences.shape[0], extra), np.int64)], axis=1)
    return kwargs


@LIVE
@given(st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=3), min_size=1, max_size=3),
       st.lists(st.integers(0, 6), max_size=12), st.booleans())
def test_constraint_states_match_upstream(phrases, tokens, disjunctive):
    """constraints.py against beam_constraints.py: the state after each token (bank, completion, the tokens
    that advance it) of ConstraintListState over phrasal and disjunctive constraints."""
    def build(module):
        made = []
        if disjunctive and len({tuple(p) for p in phrases}) == len(phrases):
            try:
                made.append(module.DisjunctiveConstraint([list(p) for p in phrases]))
            except ValueError:  # one option is a prefix of another: both refuse it
                pass
        made += [module.PhrasalConstraint(list(p)) for p in phrases]
        return made
    upstream_state = transformers.generation.beam_constraints.ConstraintListState(build(transformers))
    ours_state = generation.ConstraintListState(build(generation))
    for i in range(len(tokens) + 1):
        upstream_state.reset(tokens[:i])
        ours_state.reset(tokens[:i])
        for a, b in ((upstream_state, ours_state), (upstream_state.copy(), ours_state.copy())):
            assert (a.get_bank(), a.completed, a.advance()) == (b.get_bank(), b.completed, b.advance()), tokens[:i]
