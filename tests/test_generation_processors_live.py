"""Logits processors and warpers against live upstream (skipped without torch).

Upstream's lists are built by upstream's own GenerationMixin._get_logits_processor / _get_logits_warper
from a transformers.GenerationConfig holding the same options, so the order is checked with the
arithmetic; both are applied to the same random scores, float32 and float64, at several lengths.
Then generate() end to end on tiny random OPT, XGLM and LED with these options (greedy and beam search,
output_scores=True): token ids identical, scores within 1e-5 (float32) / 1e-10 (float64).
"""
import contextlib
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from live import randomize_  # noqa: E402
from common import float64_default_dtype, running_in, to_torch  # noqa: E402  (golden/common.py, on the path through live)
from capture_xglm import correctly_rounded_sinusoid  # noqa: E402

import refimpl  # noqa: E402
from refimpl.generation import GenerationConfig  # noqa: E402
from refimpl.generation.processors import apply_all, build_processors, build_warpers, hamming_diversity  # noqa: E402
from refimpl.generation.torch_sort import torch_sort_order  # noqa: E402

LIVE = settings(max_examples=int(os.environ.get("PROC_EXAMPLES", 30)), deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
TOL = {np.float32: 1e-5, np.float64: 1e-10}
TORCH = {np.float32: torch.float32, np.float64: torch.float64}


class ModelConfig:  # what GenerationConfig.validate reads of a model's config
    def __init__(self, vocab_size):
        self.vocab_size, self.max_position_embeddings = vocab_size, 10 ** 6


def problems(ours, theirs, where):
    """Elementwise: the same dtype, inf/NaN pattern and, elsewhere, |ours - theirs| <= tol * max(1, |theirs|)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return [f"{where}: shape/dtype {ours.shape} {ours.dtype}, upstream {theirs.shape} {theirs.dtype}"]
    finite = np.isfinite(theirs)
    if not np.array_equal(ours[~finite], theirs[~finite], equal_nan=True) or not np.isfinite(ours[finite]).all():
        bad = np.argwhere((np.isfinite(ours) != finite) | (~finite & (ours != theirs) & ~np.isnan(theirs)))
        return [f"{where}: inf/NaN pattern differs, first at {bad[:3].tolist()}"]
    rel = np.where(finite, np.abs(ours.astype(np.float64) - theirs) / np.maximum(1.0, np.abs(theirs)), 0)
    worst = np.unravel_index(np.argmax(rel), rel.shape) if rel.size else ()
    if rel.size and rel[worst] > TOL[ours.dtype.type]:
        return [f"{where}: relative diff {rel[worst]:.2e} at {worst} "
                f"(ours {ours[worst]!r}, upstream {theirs[worst]!r})"]
    return []


_HOST = []


def host():  # a tiny upstream model whose GenerationMixin builds the lists
    if not _HOST:
        cfg = transformers.OPTConfig(vocab_size=10, hidden_size=4, num_hidden_layers=1, ffn_dim=4,
                                     num_attention_heads=1, max_position_embeddings=8)
        _HOST.append(transformers.OPTForCausalLM(cfg).eval())
    return _HOST[0]


def upstream_lists(opts, prompt_length, encoder_ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc = transformers.GenerationConfig(**opts)
    model = host()
    processors = model._get_logits_processor(
        generation_config=gc, input_ids_seq_length=prompt_length, encoder_input_ids=torch.from_numpy(encoder_ids),
        prefix_allowed_tokens_fn=None, logits_processor=transformers.LogitsProcessorList(),
        model_kwargs={"use_cache": True})
    return processors, model._get_logits_warper(gc)


def ours_lists(opts, prompt_length, encoder_ids, vocab):
    cfg = GenerationConfig(**opts)
    cfg.validate(ModelConfig(vocab))
    return build_processors(cfg, prompt_length, encoder_ids), build_warpers(cfg)


@st.composite
def processor_options(draw, vocab):
    token = st.integers(0, vocab - 1)
    tokens = st.lists(token, min_size=1, max_size=3)
    opts = {"do_sample": True, "num_beams": draw(st.sampled_from([1, 1, 2, 3]))}
    eos = draw(st.one_of(st.none(), token, tokens))
    if eos is not None:
        opts["eos_token_id"] = eos

    def maybe(name, strategy):
        if draw(st.booleans()):
            opts[name] = draw(strategy)

    bias = st.one_of(st.floats(-4, 4), st.just(-math.inf))
    maybe("sequence_bias", st.dictionaries(tokens.map(tuple), bias, min_size=1, max_size=4))
    maybe("encoder_repetition_penalty", st.floats(0.3, 3.0))
    maybe("repetition_penalty", st.floats(0.3, 3.0))
    maybe("no_repeat_ngram_size", st.integers(1, 4))
    maybe("encoder_no_repeat_ngram_size", st.integers(1, 3))
    eos_list = [] if eos is None else [eos] if isinstance(eos, int) else eos
    maybe("bad_words_ids", st.lists(tokens, min_size=1, max_size=4).filter(
        lambda words: any(all(w != [e] for e in eos_list) for w in words)))
    maybe("min_length", st.integers(0, 12))
    maybe("min_new_tokens", st.integers(0, 6))
    maybe("forced_bos_token_id", token)
    maybe("forced_eos_token_id", st.one_of(token, tokens))
    maybe("max_length", st.integers(2, 14))
    maybe("remove_invalid_values", st.booleans())
    if eos is not None:
        maybe("exponential_decay_length_penalty", st.tuples(st.integers(0, 4), st.floats(0.5, 2.0)))
    maybe("suppress_tokens", st.lists(token, max_size=3))
    maybe("begin_suppress_tokens", st.lists(token, max_size=3))
    maybe("forced_decoder_ids", st.lists(st.tuples(st.integers(1, 12), token).map(list), min_size=1, max_size=3))
    maybe("renormalize_logits", st.booleans())
    maybe("temperature", st.floats(0.2, 3.0))
    maybe("top_k", st.integers(0, vocab + 2))
    maybe("top_p", st.floats(0.05, 1.0))
    maybe("typical_p", st.floats(0.05, 1.0))
    maybe("epsilon_cutoff", st.floats(0.0, 0.3))
    maybe("eta_cutoff", st.floats(0.0, 0.3))
    return opts


def random_scores(rng, rows, vocab, with_invalid):
    scores = rng.normal(0.0, 3.0, size=(rows, vocab))
    if rng.random() < 0.3:  # runs of equal scores: torch.sort's order of equal keys decides top_p / typical_p
        scores = np.round(scores)
    scores[rng.random((rows, vocab)) < 0.05] = -np.inf
    if with_invalid:
        scores[rng.random((rows, vocab)) < 0.05] = np.inf
        scores[rng.random((rows, vocab)) < 0.05] = np.nan
    return scores


@LIVE
@given(st.integers(0, 2 ** 32 - 1), st.data())
def test_processor_and_warper_lists_match_upstreams(seed, data):
    rng = np.random.default_rng(seed)
    vocab = data.draw(st.integers(6, 40), label="vocab")
    opts = data.draw(processor_options(vocab), label="options")
    batch, beams = data.draw(st.integers(1, 3), label="batch"), opts["num_beams"]
    prompt_length = data.draw(st.integers(1, 4), label="prompt_length")
    encoder_ids = rng.integers(0, vocab, size=(batch, data.draw(st.integers(1, 6), label="encoder length")))
    ids = rng.integers(0, vocab, size=(batch * beams, prompt_length + 6))
    ids[:, :3] = rng.integers(0, 3, size=3)  # repeated n-grams
    for dtype in (np.float32, np.float64):
        ours_p, ours_w = ours_lists(opts, prompt_length, encoder_ids, vocab)
        theirs_p, theirs_w = upstream_lists(opts, prompt_length, encoder_ids)
        assert len(ours_p) == len(theirs_p) and len(ours_w) == len(theirs_w), (
            f"{opts}: {len(ours_p)} processors / {len(ours_w)} warpers, upstream {theirs_p} {theirs_w}")
        for length in range(prompt_length, ids.shape[1] + 1):
            step_ids = ids[:, :length]
            scores = random_scores(rng, batch * beams, vocab, opts.get("remove_invalid_values", False)).astype(dtype)
            t_ids, t_scores = torch.from_numpy(step_ids), torch.from_numpy(scores.copy())
            processed = apply_all(ours_p, step_ids, scores.copy())
            expected = theirs_p(t_ids, t_scores)
            where = f"{opts} {dtype.__name__} length {length}"
            found = problems(processed, expected.numpy(), f"{where} processors")
            assert not found, found
            warped = apply_all(ours_w, step_ids, processed)
            try:
                expected_w = theirs_w(t_ids, expected).numpy()
            except ValueError as err:  # every token of a row banned: upstream's eta warper fails on the NaNs
                assert "Categorical" in str(err), err
                continue
            found = problems(warped, expected_w, f"{where} warpers")
            assert not found, found


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.integers(2, 4), st.integers(1, 3), st.floats(0.1, 3.0))
def test_hamming_diversity_matches_upstream(seed, batch, groups, sub_beams, penalty):
    rng = np.random.default_rng(seed)
    vocab, beams = 7, groups * sub_beams
    current = rng.integers(0, vocab, size=batch * beams)
    theirs = transformers.HammingDiversityLogitsProcessor(penalty, beams, groups)
    ours = hamming_diversity(penalty, beams, groups)
    for dtype in (np.float32, np.float64):
        for group in range(groups):
            scores = rng.normal(size=(batch * sub_beams, vocab)).astype(dtype)
            ids = rng.integers(0, vocab, size=(batch * sub_beams, 3))
            got = apply_all([ours], ids, scores.copy(), current_tokens=current, beam_group_idx=group)
            # upstream's penalty * bincount is in torch's default dtype: float64 runs use a float64 default, as
            # refimpl's float64 policy (and the golden capture) does
            with float64_default_dtype() if dtype == np.float64 else contextlib.nullcontext():
                want = theirs(torch.from_numpy(ids), torch.from_numpy(scores.copy()),
                              current_tokens=torch.from_numpy(current), beam_group_idx=group).numpy()
            assert not problems(got, want, f"group {group} {dtype.__name__}")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 400), st.sampled_from(["ties", "inf", "nan", "sorted"]))
def test_torch_sort_order_is_torchs(seed, n, kind):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 4, size=n).astype(np.float32)
    if kind == "inf":
        keys[rng.random(n) < 0.5] = -np.inf
    elif kind == "nan":
        keys[rng.random(n) < 0.3] = np.nan
    elif kind == "sorted":  # the heapsort fallback of deep introsort
        keys = np.sort(keys)[::-1].copy()
    assert torch_sort_order(keys.tolist()) == torch.sort(torch.from_numpy(keys)).indices.tolist()


def test_beam_sampling_keeps_the_tied_token_torch_keeps():
    """Upstream's own recipe shape: forced eos with remove_invalid_values leaves 98 tokens tied at the float
    minimum; top_p with min_tokens_to_keep=2 keeps the eos and the one tied token torch.sort puts last."""
    opts = dict(do_sample=True, num_beams=2, eos_token_id=2, forced_eos_token_id=2, max_length=6,
                remove_invalid_values=True, top_k=10, top_p=0.7, temperature=1.3)
    vocab, ids = 99, np.random.default_rng(0).integers(0, 99, size=(2, 5))
    scores = np.random.default_rng(1).normal(size=(2, vocab)).astype(np.float32)
    ours_p, ours_w = ours_lists(opts, 1, ids[:1], vocab)
    theirs_p, theirs_w = upstream_lists(opts, 1, ids[:1])
    ours = apply_all(ours_w, ids, apply_all(ours_p, ids, scores.copy()))
    t_ids = torch.from_numpy(ids)
    theirs = theirs_w(t_ids, theirs_p(t_ids, torch.from_numpy(scores.copy()))).numpy()
    assert np.isfinite(theirs).sum() == 4, "upstream keeps eos and one tied token per row"
    assert not problems(ours, theirs, "forced eos + top_p")


# --------------------------------------------------------------------------- generate() end to end

def tiny(family, vocab=24, seed=0):
    torch.manual_seed(seed)
    if family == "opt":
        model = transformers.OPTForCausalLM(transformers.OPTConfig(
            vocab_size=vocab, hidden_size=12, num_hidden_layers=2, ffn_dim=20, num_attention_heads=3,
            max_position_embeddings=48, dropout=0.0))
    elif family == "xglm":
        model = transformers.XGLMForCausalLM(transformers.XGLMConfig(
            vocab_size=vocab, d_model=12, num_layers=2, ffn_dim=20, attention_heads=3, max_position_embeddings=48,
            dropout=0.0, attention_dropout=0.0))
    else:
        model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(
            vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_encoder_position_embeddings=32,
            max_decoder_position_embeddings=32, attention_window=4, dropout=0.0, attention_dropout=0.0))
    randomize_(model, seed)
    return model.eval()


E2E = {
    "greedy_bias_invalid_decay": dict(max_new_tokens=6, sequence_bias={(5,): -2.0, (3, 4): 1.5, (9, 9): -math.inf},
                                      remove_invalid_values=True, exponential_decay_length_penalty=(2, 1.6),
                                      suppress_tokens=[6], begin_suppress_tokens=[7], renormalize_logits=True),
    "greedy_encoder_penalties": dict(max_new_tokens=6, encoder_repetition_penalty=1.8, encoder_no_repeat_ngram_size=2,
                                     forced_decoder_ids=[[3, 8]], remove_invalid_values=True),
    "greedy_forced": dict(max_new_tokens=5, forced_bos_token_id=4, forced_eos_token_id=[2, 3], min_new_tokens=2,
                          bad_words_ids=[[5, 6], [7]], repetition_penalty=1.3, remove_invalid_values=True),
    "beam_encoder_penalties": dict(num_beams=3, max_new_tokens=5, num_return_sequences=2,
                                   encoder_repetition_penalty=0.6, encoder_no_repeat_ngram_size=2,
                                   sequence_bias={(4,): 1.0, (2,): -1.0}, renormalize_logits=True,
                                   remove_invalid_values=True),
    "beam_suppress_decay": dict(num_beams=2, max_new_tokens=6, exponential_decay_length_penalty=(1, 2.5),
                                suppress_tokens=[5, 6], begin_suppress_tokens=[2], no_repeat_ngram_size=2),
}


def prompt(family, rng, vocab):
    ids = rng.integers(3, vocab, size=(2, 6))
    mask = np.ones_like(ids)
    if family != "led":  # decoder-only: left padding
        ids[1, :2], mask[1, :2] = 1, 0
    return ids, mask


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for seed, family in enumerate(("opt", "xglm", "led")):
        model = tiny(family, seed=seed)
        directory = tmp_path_factory.mktemp(family)
        model.save_pretrained(directory, safe_serialization=True)
        out[family] = (model, directory)
    return out


@pytest.mark.parametrize("case", sorted(E2E))
@pytest.mark.parametrize("family", ["opt", "xglm", "led"])
def test_generate_with_processors_matches_upstream(checkpoints, load_model, family, case):
    model, directory = checkpoints[family]
    ids, mask = prompt(family, np.random.default_rng(len(case)), model.config.vocab_size)
    kwargs = dict(E2E[case], return_dict_in_generate=True, output_scores=True)
    for dtype in ("float32", "float64"):
        torch_dtype = getattr(torch, dtype)
        with correctly_rounded_sinusoid(), running_in(model, torch_dtype), torch.no_grad():
            expected = model.generate(to_torch(ids, torch_dtype), attention_mask=to_torch(mask, torch_dtype), **kwargs)
        ours = load_model(directory, None, dtype).generate(ids, attention_mask=mask, **kwargs)
        where = f"{family}/{case} {dtype}"
        assert np.array_equal(ours.sequences, expected.sequences.numpy()), (
            f"{where}: token ids\nours\n{ours.sequences}\nupstream\n{expected.sequences.numpy()}")
        assert len(ours.scores) == len(expected.scores), f"{where}: {len(ours.scores)} steps of scores"
        found = [p for i, (a, b) in enumerate(zip(ours.scores, expected.scores))
                 for p in problems(a, b.numpy(), f"{where} scores.{i}")]
        assert not found, "\n".join(found)


# ------------------------------------------------- every GenerationConfig field: implemented or refused

BASE = dict(max_new_tokens=4, return_dict_in_generate=True, output_scores=True)
SAMPLE_ONE = dict(do_sample=True, top_k=1)  # sampling that can only draw the argmax: comparable token for token
PROBES = {  # field -> generate() kwargs that use it (with a value that changes the output, where one can)
    "max_length": dict(max_length=8, max_new_tokens=None), "max_new_tokens": dict(max_new_tokens=2),
    "min_length": dict(min_length=9), "min_new_tokens": dict(min_new_tokens=3),
    "early_stopping": dict(num_beams=2, early_stopping=True), "do_sample": SAMPLE_ONE, "num_beams": dict(num_beams=2),
    "num_beam_groups": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    "penalty_alpha": dict(penalty_alpha=0.9, top_k=4), "use_cache": dict(use_cache=False),
    "low_memory": dict(penalty_alpha=0.9, top_k=4, low_memory=True),
    "temperature": dict(SAMPLE_ONE, temperature=0.7), "top_k": dict(SAMPLE_ONE),
    "top_p": dict(do_sample=True, top_k=0, top_p=1e-6), "typical_p": dict(do_sample=True, top_k=0, typical_p=1e-6),
    "epsilon_cutoff": dict(do_sample=True, top_k=0, epsilon_cutoff=0.99),
    "eta_cutoff": dict(do_sample=True, top_k=1, eta_cutoff=0.5),
    "diversity_penalty": dict(num_beams=4, num_beam_groups=2, diversity_penalty=2.0),
    "repetition_penalty": dict(repetition_penalty=1.5),
    "encoder_repetition_penalty": dict(encoder_repetition_penalty=1.5),
    "length_penalty": dict(num_beams=2, length_penalty=0.5), "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
    "bad_words_ids": dict(bad_words_ids=[[5], [6, 7]]), "force_words_ids": dict(num_beams=2, force_words_ids=[[5]]),
    "renormalize_logits": dict(renormalize_logits=True), "forced_bos_token_id": dict(forced_bos_token_id=4),
    "forced_eos_token_id": dict(forced_eos_token_id=3),
    "remove_invalid_values": dict(remove_invalid_values=True, bad_words_ids=[[5]]),
    "exponential_decay_length_penalty": dict(exponential_decay_length_penalty=(1, 1.5)),
    "suppress_tokens": dict(suppress_tokens=[5]), "begin_suppress_tokens": dict(begin_suppress_tokens=[5]),
    "forced_decoder_ids": dict(forced_decoder_ids=[[7, 4]]), "sequence_bias": dict(sequence_bias={(5,): 2.0}),
    "num_return_sequences": dict(num_beams=3, num_return_sequences=2),
    "output_attentions": dict(output_attentions=True), "output_hidden_states": dict(output_hidden_states=True),
    "output_scores": dict(output_scores=False), "return_dict_in_generate": dict(return_dict_in_generate=False),
    "pad_token_id": dict(pad_token_id=0), "bos_token_id": dict(bos_token_id=0), "eos_token_id": dict(eos_token_id=7),
    "encoder_no_repeat_ngram_size": dict(encoder_no_repeat_ngram_size=2),
    "decoder_start_token_id": dict(decoder_start_token_id=0),
    "_from_model_config": dict(_from_model_config=True), "_commit_hash": dict(_commit_hash="abc"),
    "transformers_version": dict(transformers_version="4.37.2"),
}
REFUSAL_PROBES = {"max_time": 5.0, "guidance_scale": 1.5, "num_assistant_tokens": 3,
                  "num_assistant_tokens_schedule": "constant", "prompt_lookup_num_tokens": 2,
                  "generation_kwargs": {"a": 1}}
# constraints: Constraint objects (PhrasalConstraint, ...); tests/test_generation_strategies_live.py walks them
# Where upstream itself fails, the probe runs where it does not: its group beam search crashes in float64 ("Index
# put requires the source and destination dtypes match": float32 beam scores; test_generation_strategies_live.py
# compares float64 with that one tensor patched), and its low_memory contrastive path fails for batches > 1.
FLOAT32_ONLY = {"num_beam_groups", "diversity_penalty"}
ONE_ROW = {"low_memory"}


def compare_outputs(ours, theirs, where):
    """Every field upstream returns (nested tuples of tensors), ours the same."""
    if isinstance(theirs, torch.Tensor):
        expected = theirs.numpy()
        if expected.dtype.kind != "f":
            return [] if np.array_equal(np.asarray(ours), expected) else [f"{where}: {np.asarray(ours)} != {expected}"]
        return problems(np.asarray(ours), expected, where)
    if isinstance(theirs, (tuple, list)):
        if not isinstance(ours, (tuple, list)) or len(ours) != len(theirs):
            return [f"{where}: {type(ours).__name__} of {len(ours) if hasattr(ours, '__len__') else '?'}, "
                    f"upstream {len(theirs)}"]
        return [p for i, (a, b) in enumerate(zip(ours, theirs)) for p in compare_outputs(a, b, f"{where}[{i}]")]
    if theirs is None:
        return [] if ours is None else [f"{where}: upstream None, ours {type(ours).__name__}"]
    if isinstance(theirs, transformers.utils.ModelOutput):
        return [p for key in theirs.keys() for p in compare_outputs(getattr(ours, key, None), theirs[key],
                                                                      f"{where}.{key}")]
    return [f"{where}: cannot compare {type(theirs).__name__}"]


def upstream_fields():
    return sorted(k for k in transformers.GenerationConfig().__dict__ if k != "_original_object_hash")


def test_every_upstream_field_is_a_refimpl_field_and_is_probed():
    import dataclasses
    ours = {f.name for f in dataclasses.fields(GenerationConfig)}
    theirs = set(upstream_fields())
    assert theirs == ours, f"missing {theirs - ours}, extra {ours - theirs}"
    unprobed = set(upstream_fields()) - set(PROBES) - set(REFUSAL_PROBES) - {"constraints"}
    assert not unprobed, f"fields without a probe: {unprobed}"


def field_params():
    for name in upstream_fields():
        if name in PROBES or name in REFUSAL_PROBES:
            yield pytest.param(name, id=name)


@pytest.mark.parametrize("name", list(field_params()))
def test_every_generation_field_is_implemented_as_upstream_or_refused_by_name(checkpoints, load_model, name):
    model, directory = checkpoints["opt"]
    ids, mask = prompt("opt", np.random.default_rng(7), model.config.vocab_size)
    if name in REFUSAL_PROBES:
        with pytest.raises(ValueError, match=name):
            load_model(directory, None, "float32").generate(ids, attention_mask=mask, **BASE,
                                                        **{name: REFUSAL_PROBES[name]})
        return
    kwargs = {**BASE, **PROBES[name]}
    if name in ONE_ROW:
        ids, mask = ids[-1:], mask[-1:]
    for dtype in ("float32",) if name in FLOAT32_ONLY else ("float32", "float64"):
        torch_dtype = getattr(torch, dtype)
        with running_in(model, torch_dtype), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = model.generate(to_torch(ids, torch_dtype), attention_mask=to_torch(mask, torch_dtype), **kwargs)
        ours = load_model(directory, None, dtype).generate(ids, attention_mask=mask, **kwargs)
        found = compare_outputs(ours, expected, f"{name} {dtype}")
        assert not found, "\n".join(found[:10])
