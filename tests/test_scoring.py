"""Scoring (refimpl.scoring and `refimpl score`) against upstream's loss and an independent formulation."""
import json

import numpy as np
import pytest

import refimpl
from golden import GOLDEN, cases, compare_tensor
from refimpl.cli import main
from refimpl.ops import log_softmax
from refimpl.scoring import token_logprobs

LM_CASES = [c for c in cases("opt") if c.architecture == "OPTForCausalLM" and c.name == "labels"]


@pytest.mark.parametrize("case", LM_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mean_token_logprob_is_upstream_loss(case, dtype):
    """-mean(log p) over the scored tokens equals upstream's causal-LM loss on the same right-padded batch."""
    model = refimpl.from_pretrained(case.directory, dtype=dtype)
    args = case.step_inputs(0, dtype)
    logprobs = token_logprobs(model, args["input_ids"], args["attention_mask"])
    scored = (args["labels"][:, 1:] != -100)
    ours = -logprobs[scored].sum() / scored.sum()
    problems = compare_tensor(np.asarray(ours, dtype=dtype), case.expected(0, dtype)["loss"], dtype, case.id)
    assert not problems, problems


@pytest.mark.parametrize("checkpoint", ["opt/postln-proj-OPTForCausalLM", "xglm/gelu-scaled-XGLMForCausalLM"])
def test_chunked_equals_full_log_softmax(monkeypatch, checkpoint):
    """The chunked logsumexp equals log_softmax over the full logits (an independent path)."""
    import refimpl.lm_head as lm_head

    monkeypatch.setattr(lm_head, "ROWS", 3)  # several blocks of positions (float64 runs the numpy twin)
    model = refimpl.from_pretrained(GOLDEN / checkpoint, dtype="float64")
    ids = np.random.default_rng(0).integers(3, 37, size=(2, 9))
    logits = model(input_ids=ids).logits
    expected = np.take_along_axis(log_softmax(logits[:, :-1]), ids[:, 1:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(token_logprobs(model, ids), expected, rtol=1e-12, atol=1e-12)


def test_base_checkpoint_scores_with_tied_head():
    """A base checkpoint loaded as the causal LM scores with lm_head tied to the embeddings: log-softmax of
    hidden @ embed_tokens^T, computed here from the base model's own output."""
    base = refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTModel", dtype="float64")
    lm = refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTModel", architecture="OPTForCausalLM", dtype="float64")
    ids = np.array([[4, 5, 6, 7]])
    logits = base(input_ids=ids).last_hidden_state @ base.params["decoder.embed_tokens.weight"].T  # [1, 4, V]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    expected = np.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(token_logprobs(lm, ids), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("checkpoint, architecture", [
    ("opt/preln-OPTModel", "OPTModel"), ("opt/preln-OPTForSequenceClassification", "OPTForSequenceClassification"),
    ("led/window-6-LEDForConditionalGeneration", "LEDForConditionalGeneration"),
    ("nezha/k2-NezhaForMaskedLM", "NezhaForMaskedLM")])
def test_token_logprobs_refuses_what_is_not_a_causal_lm(checkpoint, architecture):
    # an LED decoder's position t is not the next-token prediction of ids[t + 1]: no numbers, an error
    model = refimpl.from_pretrained(GOLDEN / checkpoint, architecture=architecture)
    with pytest.raises(ValueError, match=f"needs a causal language model; {architecture} is not one"):
        token_logprobs(model, np.array([[0, 5, 6, 2]]))


def test_cli_scores_ids_and_reports_bad_lines(tmp_path, capsys):
    model_dir = GOLDEN / "opt" / "preln-OPTForCausalLM"
    lines = ["5 6 7 8", "not ids", "9 10 11", "4", "4 99"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    assert main(["score", str(tmp_path / "in.txt"), "--format", "ids", "--model", str(model_dir),
                 "-o", str(tmp_path / "out.jsonl")]) == 3  # 3: some lines got error records
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(5))
    assert "integer token ids" in rows[1]["error"] and "at least 2" in rows[3]["error"]
    assert "outside the vocabulary of 37" in rows[4]["error"]
    model = refimpl.from_pretrained(model_dir)
    for r, ids in ((0, [5, 6, 7, 8]), (2, [9, 10, 11])):
        expected = float(token_logprobs(model, np.array([ids])).sum())
        assert rows[r]["num_tokens"] == len(ids) - 1
        assert rows[r]["log_likelihood"] == pytest.approx(expected, rel=1e-6)
        assert rows[r]["perplexity"] == pytest.approx(np.exp(-expected / (len(ids) - 1)), rel=1e-6)
    assert "3 of 5 lines" in capsys.readouterr().err


def test_cli_jsonl_input(tmp_path):
    model_dir = GOLDEN / "opt" / "preln-OPTForCausalLM"
    (tmp_path / "in.jsonl").write_text('{"input_ids": [5, 6, 7]}\n{"ids": 3}\n[1, 2\n')
    main(["score", str(tmp_path / "in.jsonl"), "--format", "jsonl", "--model", str(model_dir), "-o", str(tmp_path / "o")])
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert "log_likelihood" in rows[0] and "input_ids" in rows[1]["error"] and "not valid JSON" in rows[2]["error"]


def test_sliding_window_equals_explicit_windows():
    """Each token's log-prob comes from the window the definition names (an explicit re-computation)."""
    from refimpl.scoring import sliding_token_logprobs

    model = refimpl.from_pretrained(GOLDEN / "opt" / "preln-OPTForCausalLM", dtype="float64")  # 24 positions
    ids = np.random.default_rng(1).integers(3, 37, size=60)
    got = sliding_token_logprobs(model, ids, window=24, stride=10)
    starts = [0, 10, 20, 30, 40]  # windows [s, s + 24); token t is scored by the first window reaching it
    for t in range(1, 60):
        s = next(s for s in starts if t < s + 24 and (s == 0 or t >= s - 10 + 24))
        logits = model(input_ids=ids[None, s:t]).logits[0, -1]
        np.testing.assert_allclose(got[t - 1], log_softmax(logits)[ids[t]], rtol=1e-12, atol=1e-12)
    short = ids[:20]
    np.testing.assert_allclose(sliding_token_logprobs(model, short), token_logprobs(model, short[None])[0], rtol=1e-12)


def test_cli_scores_a_text_longer_than_the_table(tmp_path):
    model_dir = GOLDEN / "opt" / "preln-OPTForCausalLM"
    (tmp_path / "in.txt").write_text(" ".join(["5", "6", "7"] * 20) + "\n")
    main(["score", str(tmp_path / "in.txt"), "--format", "ids", "--model", str(model_dir), "-o", str(tmp_path / "o")])
    row = json.loads((tmp_path / "o").read_text())
    assert row["num_tokens"] == 59 and np.isfinite(row["log_likelihood"])


def nezha_dir_with_vocab(tmp_path, architecture):
    """A golden NEZHA checkpoint plus a WordPiece vocabulary of its size (41 entries)."""
    import shutil

    src = GOLDEN / "nezha" / f"k2-{architecture}"
    for f in ("config.json", "model.safetensors"):
        shutil.copy(src / f, tmp_path / f)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + [str(i) for i in range(10)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return tmp_path


def test_cli_masked_lm_pseudo_log_likelihood(tmp_path):
    """Each non-special token masked alone, log-softmax at its position: summed, as the CLI reports."""
    directory = nezha_dir_with_vocab(tmp_path, "NezhaForMaskedLM")
    (tmp_path / "in.txt").write_text("a b c d\nh e l l o\n")
    main(["score", str(tmp_path / "in.txt"), "--model", str(directory), "--dtype", "float64", "-o", str(tmp_path / "o")])
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    model = refimpl.from_pretrained(directory, dtype="float64")
    tok = refimpl.load_tokenizer(directory)
    for row, text in zip(rows, ["a b c d", "h e l l o"]):
        ids = tok(text)["input_ids"]
        total = 0.0
        for i in range(1, len(ids) - 1):  # [CLS] and [SEP] are not scored
            masked = list(ids)
            masked[i] = tok.mask_token_id
            total += log_softmax(model(input_ids=np.array([masked])).logits[0, i])[ids[i]]
        assert row["num_tokens"] == len(ids) - 2
        assert row["pseudo_log_likelihood"] == pytest.approx(total, rel=1e-12)


def test_cli_sequence_classifier_probabilities(tmp_path):
    directory = nezha_dir_with_vocab(tmp_path, "NezhaForSequenceClassification")
    (tmp_path / "in.txt").write_text("a b c\n")
    main(["score", str(tmp_path / "in.txt"), "--model", str(directory), "--dtype", "float64", "-o", str(tmp_path / "o")])
    row = json.loads((tmp_path / "o").read_text())
    model = refimpl.from_pretrained(directory, dtype="float64")
    logits = model(input_ids=np.array([refimpl.load_tokenizer(directory)("a b c")["input_ids"]])).logits[0]
    np.testing.assert_allclose(row["logits"], logits, rtol=1e-12)
    probs = np.exp(log_softmax(logits))
    assert row["label"] == f"LABEL_{int(np.argmax(probs))}"
    np.testing.assert_allclose(list(row["probabilities"].values()), probs, rtol=1e-12)


def test_cli_refuses_heads_it_cannot_score(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("5 6\n")
    code = main(["score", str(tmp_path / "in.txt"), "--format", "ids",
                 "--model", str(GOLDEN / "opt" / "preln-OPTForQuestionAnswering")])
    assert code == 2 and "a causal LM, a seq2seq LM, a masked LM or a sequence classifier" in capsys.readouterr().err


LED_DIR = GOLDEN / "led" / "windows-8-4-8-LEDForConditionalGeneration"


def led_pairs(rng, n, vocab):  # -> [(source ids, target ids)] as "<s> w .. </s>" of varied lengths
    return [([0, *rng.integers(3, vocab, rng.integers(1, 14)), 2], [0, *rng.integers(3, vocab, rng.integers(0, 9)), 2])
            for _ in range(n)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seq2seq_logprobs_are_the_heads_loss_per_pair(dtype):
    """-mean of seq2seq_token_logprobs over each pair's target equals LEDForConditionalGeneration's loss with
    labels (full logits + cross-entropy: an independent path, itself checked against upstream's golden loss),
    each pair alone; the batched, padded call gives the same per-token numbers."""
    from refimpl.scoring import seq2seq_token_logprobs

    model = refimpl.from_pretrained(LED_DIR, dtype=dtype)
    pairs = led_pairs(np.random.default_rng(4), 5, model.config.vocab_size)
    from refimpl.batch.jobs import padded

    source, mask = padded((s for s, _ in pairs), model.config.pad_token_id)
    labels, _ = padded((t for _, t in pairs), -100)
    glob = np.zeros_like(mask)
    glob[:, 0] = 1
    batched = seq2seq_token_logprobs(model, source, labels, mask, glob)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for r, (s, t) in enumerate(pairs):
        alone = model(input_ids=np.array([s]), global_attention_mask=np.eye(1, len(s), dtype=np.int64),
                      labels=np.array([t]))
        logp = log_softmax(alone.logits[0])[np.arange(len(t)), t]  # [T]
        np.testing.assert_allclose(batched[r, :len(t)], logp, rtol=tol, atol=tol, err_msg=f"pair {r}")
        np.testing.assert_allclose(-batched[r, :len(t)].mean(), alone.loss, rtol=tol, err_msg=f"pair {r} loss")
        assert np.all(batched[r, len(t):] == 0)


def test_seq2seq_logprobs_refuse_other_heads():
    from refimpl.scoring import seq2seq_token_logprobs

    model = refimpl.from_pretrained(GOLDEN / "led" / "window-6-LEDModel")
    with pytest.raises(ValueError, match="needs an encoder-decoder language model; LEDModel"):
        seq2seq_token_logprobs(model, np.array([[0, 5, 2]]), np.array([[0, 2]]))


def test_cli_scores_led_pairs(tmp_path):
    """`refimpl score --format jsonl` on an LED checkpoint: log p(target | source) per target token and in total."""
    model = refimpl.from_pretrained(LED_DIR, dtype="float64")
    pairs = led_pairs(np.random.default_rng(5), 12, model.config.vocab_size)
    lines = [json.dumps({"source_ids": [int(v) for v in s], "target_ids": [int(v) for v in t]}) for s, t in pairs]
    lines.insert(3, json.dumps({"source": "no tokenizer here", "target_ids": [0, 2]}))
    lines.insert(5, json.dumps({"source_ids": [0, 5, 2]}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["score", str(tmp_path / "in.jsonl"), "--format", "jsonl", "--model", str(LED_DIR), "--dtype",
                 "float64", "--batch-size", "4", "-o", str(tmp_path / "o")]) == 3
    rows = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert "no tokenizer" in rows[3]["error"] and '"target"' in rows[5]["error"]
    rows = [r for i, r in enumerate(rows) if i not in (3, 5)]
    for row, (s, t) in zip(rows, pairs):
        alone = model(input_ids=np.array([s]), global_attention_mask=np.eye(1, len(s), dtype=np.int64),
                      labels=np.array([t]))
        logp = log_softmax(alone.logits[0])[np.arange(len(t)), t]
        np.testing.assert_allclose(row["token_logprobs"], logp, rtol=1e-12, atol=1e-12)
        assert row["num_tokens"] == len(t) and row["log_likelihood"] == pytest.approx(logp.sum(), rel=1e-12)
        assert row["perplexity"] == pytest.approx(np.exp(-logp.mean()), rel=1e-12)


def test_cli_led_needs_jsonl_pairs(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("0 5 2\n")
    assert main(["score", str(tmp_path / "in.txt"), "--format", "ids", "--model", str(LED_DIR)]) == 2
    assert "source/target pairs" in capsys.readouterr().err


def test_scoring_and_generation_ignore_a_config_that_asks_for_tuples():
    """A config.json with "return_dict": false makes forwards return tuples (as upstream); scoring and
    generate() ask for output objects explicitly, as upstream's generate() does, and give the same numbers."""
    model = refimpl.from_pretrained(GOLDEN / "opt/postln-proj-OPTForCausalLM", dtype="float64")
    ids = np.random.default_rng(0).integers(3, 37, size=(2, 9))
    scores, tokens = token_logprobs(model, ids), model.generate(ids[:, :4], max_new_tokens=3)
    model.config.extra["return_dict"] = False
    assert isinstance(model(input_ids=ids), tuple)
    np.testing.assert_array_equal(token_logprobs(model, ids), scores)
    np.testing.assert_array_equal(model.generate(ids[:, :4], max_new_tokens=3), tokens)
