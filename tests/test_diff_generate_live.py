"""`refimpl diff-generate` on upstream's own generate() output (transformers 4.37.2), OPT, XGLM and LED, left-padded
(decoder-only) and right-padded (LED) batches, on hypothesis-drawn models, prompts and options (skipped without
torch): upstream's float32 greedy tokens agree with refimpl's float64 decoding or tie within float32 noise
(exit 0); upstream's beam search agrees or ties; upstream's samples have non-zero probability; a weight scaled
in the upstream model is a divergence at the first step where the unperturbed upstream model's float64 argmax
(one full forward over the sequence) differs from the generated token."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from test_generation_strategies_live import EOS, PAD, prompt, upstream_in, upstream_model  # noqa: E402

import refimpl  # noqa: E402
from refimpl.cli import main  # noqa: E402
from refimpl.diff_generate import diff_generate  # noqa: E402

LIVE = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
FAMILIES = ["opt", "xglm", "led"]


def upstream_generate(model, kwargs, **options):  # -> token ids [N, L] as upstream's generate() returns them
    with torch.no_grad():
        arrays = {k: torch.from_numpy(v) for k, v in kwargs.items()}
        return model.generate(**arrays, **options).numpy()


def saved(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("diffgen")
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@LIVE
@given(st.sampled_from(FAMILIES), st.integers(0, 2 ** 16), st.data())
def test_upstream_greedy_tokens_agree_or_tie(tmp_path_factory, family, seed, data):
    vocab = data.draw(st.sampled_from([24, 40]), "vocab")
    model = upstream_model(family, vocab, seed)
    kwargs = prompt(data, family, vocab, np.random.default_rng(seed))
    options = dict(max_new_tokens=data.draw(st.integers(1, 12), "max_new_tokens"),
                   repetition_penalty=data.draw(st.sampled_from([1.0, 1.3]), "repetition"),
                   no_repeat_ngram_size=data.draw(st.sampled_from([0, 2]), "ngram"))
    if data.draw(st.booleans(), "min_new_tokens"):
        options["min_new_tokens"] = 2
    tokens = upstream_generate(model, kwargs, **options)
    ours = refimpl.from_pretrained(saved(model, tmp_path_factory), dtype=data.draw(st.sampled_from(["float64",
                                                                                                    "float32"])))
    report = diff_generate(ours, kwargs, tokens, **options)
    assert report.verdict in ("agree", "tie"), f"{family} {options}\n{tokens}\n{report.text()}"


@LIVE
@given(st.sampled_from(FAMILIES), st.integers(0, 2 ** 16), st.data())
def test_a_weight_scaled_upstream_is_found_at_the_right_step(tmp_path_factory, family, seed, data):
    vocab = data.draw(st.sampled_from([24, 40]), "vocab")
    model = upstream_model(family, vocab, seed)
    directory = saved(model, tmp_path_factory)
    kwargs = prompt(data, family, vocab, np.random.default_rng(seed))
    layer = data.draw(st.integers(0, 1), "layer")
    name = {"opt": f"model.decoder.layers.{layer}.fc1.weight", "xglm": f"model.layers.{layer}.fc1.weight",
            "led": f"led.decoder.layers.{layer}.fc1.weight"}[family]
    factor = data.draw(st.sampled_from([1.2, 1.5, 2.0]), "factor")
    reference = upstream_model(family, vocab, seed)  # the unperturbed model, run in float64 below
    with torch.no_grad():
        model.get_parameter(name).mul_(factor)
    tokens = upstream_generate(model, kwargs, max_new_tokens=10)
    expected = first_disagreement(family, reference, kwargs, tokens)
    report = diff_generate(refimpl.from_pretrained(directory, dtype="float64"), kwargs, tokens)
    where = f"{family} {name} x{factor}\n{tokens}\n{report.text()}"
    if expected is None:
        assert report.verdict == "agree", where
    else:
        row = report.rows[expected[0]]
        assert report.verdict != "agree" and (row.ties[:1] or [row.step])[0] == expected[1], where


def first_disagreement(family, model, kwargs, sequences):  # -> (row, new token) or None, from one full forward
    arrays = {k: torch.from_numpy(v) for k, v in kwargs.items()}
    seq = torch.from_numpy(sequences)
    with torch.no_grad(), upstream_in(model, family, "float64"):
        if family == "led":
            logits = model(**arrays, decoder_input_ids=seq).logits.numpy()
            prefix = 1
        else:
            prefix = kwargs["input_ids"].shape[1]
            mask = torch.cat([arrays["attention_mask"], torch.ones(seq.shape[0], seq.shape[1] - prefix,
                                                                   dtype=torch.long)], dim=1)
            extra = {}
            if family == "xglm":  # generate()'s position ids (prepare_inputs_for_generation)
                extra["position_ids"] = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            logits = model(input_ids=seq, attention_mask=mask, **extra).logits.numpy()
    found = []
    for r, row in enumerate(sequences):
        for t in range(row.shape[0] - prefix):
            if np.argmax(logits[r, prefix + t - 1]) != row[prefix + t]:
                found.append((t, r))
                break
            if row[prefix + t] == EOS:
                break
    return min(found)[::-1] if found else None


@LIVE
@given(st.sampled_from(FAMILIES), st.integers(0, 2 ** 16), st.sampled_from(["beam", "sample"]), st.data())
def test_upstream_beam_search_and_samples(tmp_path_factory, family, seed, strategy, data):
    vocab = data.draw(st.sampled_from([24, 40]), "vocab")
    model = upstream_model(family, vocab, seed)
    kwargs = prompt(data, family, vocab, np.random.default_rng(seed))
    if strategy == "beam":
        beams = data.draw(st.integers(2, 4), "num_beams")
        options = dict(num_beams=beams, num_return_sequences=data.draw(st.integers(1, beams), "returned"),
                       length_penalty=data.draw(st.sampled_from([1.0, 0.5]), "length_penalty"))
        allowed = ("agree", "tie")
    else:
        torch.manual_seed(seed)
        options = dict(do_sample=True, top_k=data.draw(st.sampled_from([0, 3, 8]), "top_k"),
                       top_p=data.draw(st.sampled_from([1.0, 0.8]), "top_p"))
        allowed = ("possible", "tie")
    options["max_new_tokens"] = data.draw(st.integers(1, 8), "max_new_tokens")
    tokens = upstream_generate(model, kwargs, **options)
    report = diff_generate(refimpl.from_pretrained(saved(model, tmp_path_factory), dtype="float64"), kwargs,
                           tokens, **options)
    assert report.verdict in allowed, f"{family} {options}\n{tokens}\n{report.text()}"


def test_cli_on_upstream_output(tmp_path, capsys):
    """The command as a user runs it: a left-padded OPT batch, upstream's tokens (exit 0), one token changed
    to the least likely one (exit 1, at that step)."""
    model = upstream_model("opt", 40, 7)
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    ids = np.array([[PAD, PAD, 5, 9, 13], [4, 8, 15, 16, 23]])
    kwargs = {"input_ids": ids, "attention_mask": (ids != PAD).astype(np.int64)}
    np.savez(tmp_path / "in.npz", **kwargs)
    tokens = upstream_generate(model, kwargs, max_new_tokens=8)
    np.save(tmp_path / "tokens.npy", tokens)
    argv = ["diff-generate", "--model", str(tmp_path / "model"), "--inputs", str(tmp_path / "in.npz"), "--json"]
    assert main(argv + ["--tokens", str(tmp_path / "tokens.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] in ("agree", "tie")
    mask = np.concatenate([kwargs["attention_mask"], np.ones((2, 3), np.int64)], axis=1)  # prompt + 3 new tokens
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens[:, :8]), attention_mask=torch.from_numpy(mask)).logits
    bad = tokens.copy()
    bad[1, 8] = int(np.argmin(logits[1, -1].numpy()))  # new token 3 of row 1: the least likely token
    np.save(tmp_path / "bad.npy", bad)
    assert main(argv + ["--tokens", str(tmp_path / "bad.npy")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["verdict"], report["row"], report["step"]) == ("divergence", 1, 3)
