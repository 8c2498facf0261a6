"""`refimpl score` and `refimpl inspect` against live upstream (transformers 4.37.2 on torch): each record's
log-likelihood is the sum of log-softmax(upstream's logits) at the next tokens; each module line of
`inspect` has the parameters of upstream's module of that name, and the FLOPs of its matrix products
worked out from upstream's module (nn.Linear: 2 x rows x in x out; an attention block: QK^T and PV)."""
import json
import re

import numpy as np
import pytest

from golden import GOLDEN
from refimpl.cli import SHIPPED_MODEL, main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = GOLDEN / "opt" / "preln-OPTForCausalLM"


def upstream(directory):
    config = transformers.AutoConfig.from_pretrained(directory)
    cls = getattr(transformers, config.architectures[0])
    return cls.from_pretrained(directory).double().eval()


def logits64(model, ids):  # upstream's float64 logits for one row of ids
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # upstream's float64 causal mask needs it
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].double()
    finally:
        torch.set_default_dtype(previous)


def upstream_log_likelihood(model, ids):
    logits = logits64(model, ids)  # [T, V]
    logprobs = torch.log_softmax(logits.double(), -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return float(logprobs.sum())


@pytest.mark.parametrize("dtype, rel", [("float32", 2e-5), ("float64", 1e-10)])
def test_score_records_are_upstreams_log_likelihoods(tmp_path, capfd, dtype, rel):
    rng = np.random.default_rng(5)
    rows = [rng.integers(3, 37, n).tolist() for n in (2, 9, 4, 24, 7, 13)]
    source = tmp_path / "in.txt"
    source.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main(["score", str(source), "-o", str(out), "--model", str(TINY), "--format", "ids", "--dtype", dtype,
                 "--batch-tokens", "40", "--workers", "1"]) == 0, capfd.readouterr().err
    model = upstream(TINY)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for index, (record, ids) in enumerate(zip(records, rows)):
        expected = upstream_log_likelihood(model, ids)
        assert list(record) == ["index", "log_likelihood", "num_tokens", "perplexity"]
        assert record["index"] == index and record["num_tokens"] == len(ids) - 1
        assert record["log_likelihood"] == pytest.approx(expected, rel=rel), f"line {index} log_likelihood"
        assert record["perplexity"] == pytest.approx(np.exp(-expected / (len(ids) - 1)), rel=rel * 10)


def expected_flops(module, rows_of, batch, length):
    if isinstance(module, torch.nn.Linear):
        return 2 * rows_of * module.in_features * module.out_features
    name = type(module).__name__
    if name.endswith("Attention") and hasattr(module, "q_proj"):  # OPT / BART-style
        return 2 * 2 * batch * length * length * module.q_proj.out_features
    if name.endswith("SelfAttention") and hasattr(module, "query"):  # NEZHA
        return 2 * 2 * batch * length * length * module.query.out_features
    return 0


@pytest.mark.parametrize("directory", [TINY, SHIPPED_MODEL, GOLDEN / "nezha" / "k2-NezhaModel",
                                       GOLDEN / "opt" / "postln-proj-OPTForCausalLM"])
def test_inspect_parameters_and_flops_are_upstreams(capfd, directory):
    length = 7
    assert main(["inspect", "--model", str(directory), "--length", str(length)]) == 0
    lines = capfd.readouterr().out.splitlines()
    model = upstream(directory)
    modules = dict(model.named_modules())
    total_flops = 0
    seen = 0
    for line in lines[2:-1]:
        name, *_, params, flops = line.split()
        name = "" if name == "<root>" else name
        module = modules[name]
        assert int(params.replace(",", "")) == sum(p.numel() for p in module.parameters()), f"{name}: parameters"
        shape = tuple(int(v) for v in re.search(r"\(([\d, ]+)\)", line)[1].split(",") if v.strip())
        rows = int(np.prod(shape[:-1])) if isinstance(module, torch.nn.Linear) else 0
        expected = expected_flops(module, rows, 1, length)
        assert int(flops.replace(",", "")) == expected, f"{name}: FLOPs {flops} vs {expected}"
        total_flops += expected
        seen += isinstance(module, torch.nn.Linear)
    assert seen == sum(isinstance(m, torch.nn.Linear) for m in modules.values()), "every Linear module listed"
    name, params, flops = lines[-1].split()
    assert name == "total"
    assert int(params.replace(",", "")) == sum(p.numel() for p in model.parameters())  # a tied weight once
    assert int(flops.replace(",", "")) == total_flops
    assert lines[0] == f"{model.__class__.__name__}, {length} tokens"


def test_diff_tokenize_options_against_upstreams_slow_tokenizer(tmp_path, capfd):
    """The ids of upstream's slow tokenizer, with and without special tokens: the matching run agrees (0),
    the other differs on every line (1) and shows --show of them; --json keeps non-ASCII text as it is."""
    tokenizer = transformers.GPT2Tokenizer.from_pretrained(SHIPPED_MODEL)
    texts = ["Hello world", "café au lait", "numbers 1234 and spaces  here"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for special in (True, False):
        rows = [{"input_ids": tokenizer(t, add_special_tokens=special)["input_ids"]} for t in texts]
        (tmp_path / f"ids-{special}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["diff-tokenize", "--tokenizer", str(SHIPPED_MODEL), "--input", str(tmp_path / "in.txt"), "--against"]
    assert main(base + [str(tmp_path / "ids-True.jsonl")]) == 0
    assert capfd.readouterr().out.startswith("0 of 3 lines tokenize differently")
    assert main(base + [str(tmp_path / "ids-False.jsonl"), "--no-special-tokens"]) == 0
    capfd.readouterr()
    assert main(base + [str(tmp_path / "ids-False.jsonl"), "--show", "1"]) == 1
    out = capfd.readouterr().out
    assert out.startswith("3 of 3 lines tokenize differently") and out.count("first difference at position 0") == 1
    assert out.rstrip().endswith("... and 2 more")
    assert main(base + [str(tmp_path / "ids-False.jsonl"), "--json"]) == 1
    out = capfd.readouterr().out
    report = json.loads(out)
    assert (report["total"], report["differing"], len(report["lines"])) == (3, 3, 3)
    assert "café au lait" in out  # not \u00e9
    assert main(base + [str(tmp_path / "ids-True.jsonl"), "--model-type", "opt"]) == 0


@pytest.mark.parametrize("checkpoint", ["preln-OPTForSequenceClassification",
                                        "preln-regression-OPTForSequenceClassification"])
def test_classifier_records_are_upstreams(tmp_path, capfd, checkpoint):
    """Each line alone (no padding): the logits of upstream's classifier; with several labels, softmax
    probabilities under id2label's names and the most probable label; a regression head: the logits only."""
    directory = GOLDEN / "opt" / checkpoint
    rows = [[2, 5, 6, 7], [2, 9, 10, 11, 12, 13, 2], [2, 30]]
    source = tmp_path / "in.txt"
    source.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main(["score", str(source), "-o", str(out), "--model", str(directory), "--format", "ids",
                 "--dtype", "float64", "--workers", "1"]) == 0, capfd.readouterr().err
    err = capfd.readouterr().err
    assert "3 lines, 13 tokens" in err and "padding 0.0% of positions" in err  # one text per forward pass
    model = upstream(directory)
    regression = model.config.problem_type == "regression" or model.config.num_labels == 1
    for index, line in enumerate(out.read_text().splitlines()):
        record = json.loads(line)
        logits = logits64(model, rows[index])
        assert list(record) == (["index", "logits"] if regression else ["index", "logits", "label", "probabilities"])
        np.testing.assert_allclose(record["logits"], logits.numpy(), rtol=1e-6, err_msg=f"line {index}")
        if not regression:
            probs = torch.softmax(logits, -1).numpy()
            names = [model.config.id2label[i] for i in range(model.config.num_labels)]
            assert list(record["probabilities"]) == names
            np.testing.assert_allclose(list(record["probabilities"].values()), probs, rtol=1e-6)
            assert record["label"] == names[int(np.argmax(probs))]
