"""Paths no other test reaches, each checked against mathematics or an independent formulation:

- every scoring path under a config.json that sets `return_dict: false` or `torchscript: true` (the
  forwards then return tuples; scoring asks for output objects and must give the same numbers, here
  recomputed from the full logits with a log-softmax written in the test);
- the scoring summary's elapsed time and rates (a fake clock);
- masked-LM batch scoring of a line with only special tokens; an empty LED target;
- the reference relative attention with mask=None (the formula, written with einsum);
- a too-large label: the error names the offending value.
"""
import json
import shutil

import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl.scoring import classify, pseudo_log_likelihood, seq2seq_token_logprobs, token_logprobs

VARIANTS = {"return_dict-false": {"return_dict": False}, "torchscript": {"torchscript": True},
            "both": {"return_dict": True, "torchscript": True}}


def log_softmax(x):  # the test's own: x [..., V]
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def checkpoint_with(tmp_path, checkpoint, **keys):
    """A copy of a golden checkpoint whose config.json also sets `keys`."""
    src, dst = GOLDEN / checkpoint, tmp_path / checkpoint.replace("/", "-")
    dst.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, dst / name)
    config = json.loads((src / "config.json").read_text())
    config.update(keys)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def load_variant(tmp_path, checkpoint, variant, architecture=None):
    """(model with the plain config, the same weights with the variant's config.json)"""
    plain = refimpl.from_pretrained(GOLDEN / checkpoint, architecture=architecture, dtype="float64")
    other = refimpl.from_pretrained(checkpoint_with(tmp_path, checkpoint, **VARIANTS[variant]),
                                    architecture=architecture, dtype="float64")
    return plain, other


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("checkpoint", ["opt/preln-OPTForCausalLM", "xglm/gelu-scaled-XGLMForCausalLM"])
def test_causal_scoring_under_tuple_configs(tmp_path, checkpoint, variant):
    plain, model = load_variant(tmp_path, checkpoint, variant)
    ids = np.random.default_rng(1).integers(3, 37, size=(2, 7))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    assert isinstance(model(input_ids=ids), tuple)  # the variant is in force
    logits = plain(input_ids=ids, attention_mask=mask, return_dict=True).logits  # [B, T, V]
    expected = np.take_along_axis(log_softmax(logits[:, :-1]), ids[:, 1:, None], -1)[..., 0]
    expected[1, 4:] = 0.0  # a padded target or context
    np.testing.assert_allclose(token_logprobs(model, ids, mask), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_seq2seq_scoring_under_tuple_configs(tmp_path, variant):
    plain, model = load_variant(tmp_path, "led/windows-8-4-8-LEDForConditionalGeneration", variant)
    rng = np.random.default_rng(2)
    source, labels = rng.integers(3, 41, size=(2, 9)), rng.integers(3, 41, size=(2, 5))
    labels[1, 3:] = -100
    assert isinstance(model(input_ids=source, labels=np.where(labels < 0, 1, labels)), tuple)
    logits = plain(input_ids=source, labels=labels, return_dict=True).logits  # [B, T, V]
    expected = np.take_along_axis(log_softmax(logits), np.where(labels < 0, 0, labels)[..., None], -1)[..., 0]
    expected[labels < 0] = 0.0
    np.testing.assert_allclose(seq2seq_token_logprobs(model, source, labels), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("architecture, field", [("NezhaForMaskedLM", "logits"),
                                                 ("NezhaForPreTraining", "prediction_logits")])
def test_pseudo_log_likelihood_under_tuple_configs(tmp_path, variant, architecture, field):
    plain, model = load_variant(tmp_path, f"nezha/k2-{architecture}", variant)
    ids = np.array([2, 9, 17, 23, 11, 3])
    scored = np.array([False, True, True, True, True, False])
    expected = np.zeros(len(ids))
    for i in np.flatnonzero(scored):
        masked = ids.copy()
        masked[i] = 4
        expected[i] = log_softmax(getattr(plain(input_ids=masked[None], return_dict=True), field)[0, i])[ids[i]]
    for batch_size in (1, 3, 32):
        got = pseudo_log_likelihood(model, ids, 4, scored=scored, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("checkpoint", ["opt/preln-OPTForSequenceClassification",
                                        "led/window-6-LEDForSequenceClassification",
                                        "nezha/k2-NezhaForSequenceClassification"])
def test_classify_under_tuple_configs(tmp_path, checkpoint, variant):
    plain, model = load_variant(tmp_path, checkpoint, variant)
    ids = np.array([[0, 9, 17, 23, 11, 2]])
    logits = plain(input_ids=ids, return_dict=True).logits  # [1, C]
    got_logits, probs = classify(model, ids)
    np.testing.assert_allclose(got_logits, logits, rtol=1e-12)
    np.testing.assert_allclose(probs, np.exp(log_softmax(logits)), rtol=1e-10)


def test_classify_multi_label_uses_sigmoid(tmp_path):
    model = refimpl.from_pretrained(checkpoint_with(tmp_path, "opt/preln-OPTForSequenceClassification",
                                                    problem_type="multi_label_classification", return_dict=False),
                                    dtype="float64")
    plain = refimpl.from_pretrained(GOLDEN / "opt/preln-OPTForSequenceClassification", dtype="float64")
    ids = np.array([[0, 9, 17, 23, 11, 2]])
    logits = plain(input_ids=ids, return_dict=True).logits
    got_logits, probs = classify(model, ids)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-12)
    assert not np.isclose(probs.sum(), 1.0)


# ---------------------------------------------------------------- the batch job's summary and odd lines


class FakeClock:
    def __init__(self, *readings):
        self.readings = list(readings)

    def perf_counter(self):
        return self.readings.pop(0)


def test_summary_elapsed_time_comes_from_the_clock(tmp_path, monkeypatch, capsys):
    from refimpl.batch import ScoreJob, run as batch_run
    from refimpl.batch.run import run_and_report, run_score
    from refimpl.cli import SHIPPED_MODEL

    (tmp_path / "in.txt").write_text("the cat sat on the mat\na dog ran\nhello there world again\n")
    clock = FakeClock(100.0, 104.0)
    monkeypatch.setattr(batch_run, "time", clock)
    job = ScoreJob(model=str(SHIPPED_MODEL), architecture=None, dtype="float32", format="text", batch_size=8,
                   stride=None, cache_dir=None)
    summary = run_score(job, str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"))
    assert clock.readings == []
    assert summary.seconds == 4.0
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    tokens = sum(r["num_tokens"] + 1 for r in records)  # + the first token, context only
    assert (summary.scored_now, summary.tokens, summary.records, summary.errors) == (3, tokens, 3, 0)
    assert summary.rate_line().startswith(f"refimpl: 3 lines, {tokens} tokens in 4.0 s: 0.8 lines/s, "
                                          f"{tokens / 4:.0f} tokens/s; padding ")
    assert run_and_report(lambda: summary, None) == 0
    assert capsys.readouterr().err == summary.rate_line() + "\n"


def nezha_dir_with_vocab(tmp_path):
    directory = tmp_path / "nezha"
    directory.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(GOLDEN / "nezha" / "k2-NezhaForMaskedLM" / f, directory / f)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + [str(i) for i in range(10)]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return directory


def test_masked_lm_line_of_only_special_tokens(tmp_path):
    from refimpl.cli import main

    directory = nezha_dir_with_vocab(tmp_path)
    (tmp_path / "in.txt").write_text("[SEP]\na b\n[CLS] [MASK]\n")
    status = main(["score", str(tmp_path / "in.txt"), "--model", str(directory), "--dtype", "float64",
                   "-o", str(tmp_path / "o")])
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert status == 3
    assert rows[0] == {"index": 0, "error": "line 1: no token to score besides special tokens"}
    assert rows[2] == {"index": 2, "error": "line 3: no token to score besides special tokens"}
    # line 2: [CLS] a b [SEP], the two letters masked in turn (the formula, written here)
    model = refimpl.from_pretrained(directory, dtype="float64")
    ids = np.array([2, 5, 6, 3])
    expected = 0.0
    for i in (1, 2):
        masked = ids.copy()
        masked[i] = 4
        expected += log_softmax(model(input_ids=masked[None], return_dict=True).logits[0, i])[ids[i]]
    assert rows[1]["num_tokens"] == 2
    np.testing.assert_allclose(rows[1]["pseudo_log_likelihood"], expected, rtol=1e-10)
    np.testing.assert_allclose(rows[1]["pseudo_perplexity"], np.exp(-expected / 2), rtol=1e-10)


def test_led_empty_target_is_an_error_record(tmp_path):
    from refimpl.cli import main

    directory = tmp_path / "led"
    shutil.copytree(GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration", directory)
    lines = [{"source_ids": [0, 7, 9, 2], "target_ids": []}, {"source_ids": [0, 7, 9, 2], "target_ids": [5, 6]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    status = main(["score", str(tmp_path / "in.jsonl"), "--format", "jsonl", "--model", str(directory),
                   "--dtype", "float64", "-o", str(tmp_path / "o")])
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert status == 3
    assert rows[0] == {"index": 0, "error": "line 1: target: 0 token(s): scoring needs at least 1"}
    model = refimpl.from_pretrained(directory, dtype="float64")
    glob = np.array([[1, 0, 0, 0]])
    logits = model(input_ids=np.array([[0, 7, 9, 2]]), labels=np.array([[5, 6]]), global_attention_mask=glob,
                   return_dict=True).logits[0]  # [2, V]
    expected = log_softmax(logits)[[0, 1], [5, 6]]
    np.testing.assert_allclose(rows[1]["token_logprobs"], expected, rtol=1e-10)
    assert rows[1]["num_tokens"] == 2


# ---------------------------------------------------------------- attention and losses


def test_reference_relative_attention_without_a_mask():
    from refimpl.relative_attention import relative_attention_reference

    rng = np.random.default_rng(3)
    B, H, T, d, K = 2, 3, 5, 4, 2
    q, k, v = (rng.standard_normal((B, H, T, d)) for _ in range(3))
    table = rng.standard_normal((2 * K + 1, d))
    R = table[np.clip(np.arange(T)[None, :] - np.arange(T)[:, None], -K, K) + K]  # [T, T, d]: R[i, j]
    scores = np.einsum("bhid,bhjd->bhij", q, k) + np.einsum("bhid,ijd->bhij", q, R)
    probs = np.exp(log_softmax(scores))
    context = np.einsum("bhij,bhjd->bhid", probs, v) + np.einsum("bhij,ijd->bhid", probs, R)
    context = context.transpose(0, 2, 1, 3).reshape(B, T, H * d)
    got_context, got_probs = relative_attention_reference(q, k, v, None, None, table)
    np.testing.assert_allclose(got_probs, probs, rtol=1e-12)
    np.testing.assert_allclose(got_context, context, rtol=1e-12, atol=1e-14)
    head_mask = np.array([1.0, 0.0, 0.5])
    got_context, got_probs = relative_attention_reference(q, k, v, None, head_mask, table, output_probs=False)
    assert got_probs is None
    masked = probs * head_mask[None, :, None, None]
    context = (np.einsum("bhij,bhjd->bhid", masked, v) + np.einsum("bhij,ijd->bhid", masked, R))
    np.testing.assert_allclose(got_context, context.transpose(0, 2, 1, 3).reshape(B, T, H * d), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("bad", [3, 7, -2])
def test_too_large_label_is_named(bad):
    from refimpl.ops import classification_loss, cross_entropy

    logits = np.zeros((3, 3))
    labels = np.array([0, bad, -100])
    with pytest.raises(ValueError, match=rf"^label {bad} is outside 0\.\.2 \(and is not ignore_index=-100\)$"):
        cross_entropy(logits, labels)
    with pytest.raises(ValueError, match=rf"^label {bad} is outside 0\.\.2"):
        classification_loss(logits, labels, 3)
    # the ignored label and the valid ones: -mean log(1/3)
    assert np.isclose(cross_entropy(logits, np.array([0, 2, -100])), np.log(3))


def test_too_large_label_in_a_model_forward_is_named():
    model = refimpl.from_pretrained(GOLDEN / "opt/preln-OPTForSequenceClassification", dtype="float64")
    C = model.config.num_labels
    with pytest.raises(ValueError, match=rf"label {C + 4} is outside 0\.\.{C - 1}"):
        model(input_ids=np.array([[0, 5, 6, 2]]), labels=np.array([C + 4]))


def test_relative_error_with_infinities():
    """Equal infinities agree (no NaN from inf - inf); opposite ones are infinitely apart; the scale is the
    largest finite magnitude of the reference."""
    from refimpl.compare import relative_error

    inf = np.inf
    assert relative_error(np.array([inf, 1.0]), np.array([inf, 1.0])) == (0.0, 0.0)
    assert relative_error(np.array([inf, 1.0]), np.array([inf, 2.0])) == (1.0, 0.5)
    assert relative_error(np.array([-inf, 2.0]), np.array([inf, 2.0])) == (inf, inf)
    assert relative_error(np.array([np.nan, 2.0]), np.array([np.nan, 4.0])) == (2.0, 0.5)
    assert relative_error(np.array([np.nan, 2.0]), np.array([1.0, 2.0])) == (inf, inf)
    assert relative_error(np.array([0.0]), np.array([0.0])) == (0.0, 0.0)
    assert relative_error(np.array([1e-3]), np.array([0.0])) == (1e-3, inf)
    # a non-finite reference entry adds nothing to the scale, however small the finite ones
    assert relative_error(np.array([inf, 0.25]), np.array([inf, 0.5])) == (0.25, 0.5)
    assert relative_error(np.array([np.nan, 0.25]), np.array([np.nan, 0.5])) == (0.25, 0.5)


@pytest.mark.parametrize("V, chunk", [(41, None), (1000, None), (3000, None), (100, 7)])
def test_numba_target_logprobs_for_any_vocabulary(V, chunk):
    """The Numba LM-head twin on a vocabulary smaller than one chunk, several chunks, and odd chunks:
    log-softmax at the target, written here in float64."""
    pytest.importorskip("numba")
    from refimpl.lm_head import target_logprobs_numba

    rng = np.random.default_rng(V)
    hidden, head = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((V, 8)).astype(np.float32)
    bias, targets = rng.standard_normal(V).astype(np.float32), rng.integers(0, V, 5)
    for b in (None, bias):
        logits = hidden.astype(np.float64) @ head.astype(np.float64).T + (0 if b is None else b.astype(np.float64))
        expected = log_softmax(logits)[np.arange(5), targets]
        got = target_logprobs_numba(hidden, head, targets, b, vocab_chunk=chunk)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("extra", [1, 8, 9])
def test_unexpected_weights_are_listed_in_one_warning(tmp_path, extra):
    """One warning naming the unexpected weights: all of them up to 8, then the first 8 and ' ...'."""
    from safetensors.numpy import load_file, save_file

    src = GOLDEN / "opt" / "preln-OPTForCausalLM"
    dst = tmp_path / "ckpt"
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    names = [f"extra.w{i}" for i in range(extra)]
    tensors.update({name: np.zeros(2, np.float32) for name in names})
    save_file(tensors, str(dst / "model.safetensors"))
    with pytest.warns(UserWarning) as caught:
        refimpl.from_pretrained(dst)
    messages = [str(w.message) for w in caught if "unexpected weights" in str(w.message)]
    assert len(messages) == 1
    listed = sorted(names)[:8]
    assert messages[0].endswith(f"ignoring {extra} unexpected weights: {', '.join(listed)}" + (" ..." if extra > 8 else ""))
