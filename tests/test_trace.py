"""refimpl.trace, refimpl.compare and the `diff` / `inspect` commands without torch (live checks against
upstream's module outputs: tests/test_trace_live.py)."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import refimpl
from golden import GOLDEN, cases, output_fields
from refimpl.cli import main
from refimpl.compare import FLOOR, MARGIN, compare, trace_model
from refimpl.trace import record, tracing

CHECKPOINTS = {  # one golden checkpoint per class: all 18
    "opt": ["preln-OPTModel", "preln-OPTForCausalLM", "postln-proj-OPTForSequenceClassification",
            "preln-OPTForQuestionAnswering"],
    "xglm": ["gelu-scaled-XGLMModel", "cross-XGLMForCausalLM"],
    "nezha": ["k9-gelu_new-NezhaModel", "k2-NezhaForPreTraining", "k2-NezhaForMaskedLM",
              "k9-gelu_new-NezhaForNextSentencePrediction", "k9-gelu_new-NezhaForSequenceClassification",
              "k9-gelu_new-NezhaForMultipleChoice", "k2-NezhaForTokenClassification",
              "k9-gelu_new-NezhaForQuestionAnswering"],
    "led": ["window-6-LEDModel", "window-6-LEDForConditionalGeneration", "window-6-LEDForSequenceClassification",
            "window-6-LEDForQuestionAnswering"],
}
ALL = [(family, name) for family, names in CHECKPOINTS.items() for name in names]


def golden_inputs(family, checkpoint, dtype="float64"):  # the first golden case's first step
    case = next(c for c in cases(family) if c.checkpoint == checkpoint and not c.steps[0]["use_past"])
    return {k: v for k, v in case.step_inputs(0, dtype).items() if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("family, checkpoint", ALL, ids=[c for _, c in ALL])
def test_tracing_changes_nothing_and_agrees_with_the_outputs(family, checkpoint):
    model = refimpl.from_pretrained(GOLDEN / family / checkpoint, dtype="float64")
    inputs = golden_inputs(family, checkpoint)
    plain = output_fields(model(**inputs, output_hidden_states=True))
    with tracing() as trace:
        traced = output_fields(model(**inputs, output_hidden_states=True))
    for key, value in plain.items():
        assert np.array_equal(traced[key], value, equal_nan=True), f"{checkpoint}: tracing changed {key}"
    assert len(trace) > 10, f"{checkpoint}: only {list(trace)}"
    first = next(iter(model(**inputs).to_tuple()))  # the root module's output is the output's first field
    assert np.array_equal(trace[""], first), f"{checkpoint}: the root entry is not the first output"
    layer_outputs = [v for k, v in trace.items() if k.split(".")[-1].isdigit()]
    hidden = [v for k, v in plain.items() if "hidden_states." in k and "encoder" not in k]
    assert layer_outputs, f"{checkpoint}: no layer traced"
    # every layer's traced output but the last (a final LayerNorm may follow it) is a hidden state the model
    # returns (the LED encoder's are traced at the padded length and returned cut back)
    for value in layer_outputs[:-1]:
        assert any(h.shape == value.shape and np.array_equal(h, value) for h in hidden) or family == "led", checkpoint


def test_record_is_a_no_op_without_a_trace_and_traces_nest():
    x = np.ones(3)
    assert record({}, "a", x) is x
    with tracing() as outer:
        record({}, "a", x)
        with tracing() as inner:
            record({}, "b", x)
        record({}, "c", x)
        x[:] = 7  # the trace holds a copy
    assert list(outer) == ["a", "c"] and list(inner) == ["b"] and np.array_equal(outer["a"], np.ones(3))


def test_compare_finds_the_first_divergence_and_reports_everything():
    rng = np.random.default_rng(0)
    reference = {name: rng.normal(size=(2, 3)) for name in ("emb", "layer.0", "layer.1", "head")}
    noise = {name: 1e-7 for name in reference}
    same = compare(reference, {k: v.copy() for k, v in reference.items()}, noise)
    assert same.first_divergence is None and all(t.max_abs == 0 for t in same.tensors)
    candidate = {k: v.copy() for k, v in reference.items()}
    candidate["layer.1"] = candidate["layer.1"] * (1 + 1e-3)
    candidate["head"] = candidate["head"] + 1
    candidate["extra"] = np.zeros(1)
    del candidate["emb"]
    report = compare(reference, candidate, noise)
    assert report.first_divergence.name == "layer.1"
    assert [t.name for t in report.tensors if t.diverges] == ["layer.1", "head"]
    assert report.missing == {"only_in_reference": ["emb"], "only_in_candidate": ["extra"]}
    small = compare(reference, {"emb": reference["emb"] * (1 + 0.5 * FLOOR)}, {"emb": 0.0})
    assert small.first_divergence is None, "below FLOOR is never a divergence"
    noisy = compare(reference, {"emb": reference["emb"] * (1 + 5e-6)}, {"emb": 1e-5 / MARGIN})
    assert noisy.first_divergence is None, "within MARGIN noise floors"
    reshaped = compare(reference, {"emb": reference["emb"].reshape(3, 2)})  # a reshape is not a layout
    assert reshaped.first_divergence.name == "emb" and reshaped.tensors[0].layout == "transposed (1, 0)"
    transposed = compare(reference, {"emb": reference["emb"].T})
    assert transposed.first_divergence is None and transposed.tensors[0].layout == "transposed (1, 0)"
    wrong = compare(reference, {"emb": np.zeros(7)})
    assert wrong.first_divergence.name == "emb" and "shape" in wrong.first_divergence.note
    nan = compare(reference, {"emb": np.where(reference["emb"] > 0, np.nan, reference["emb"])})
    assert nan.first_divergence.name == "emb"
    assert json.loads(json.dumps(report.to_json(), default=str))["first_divergence"]["name"] == "layer.1"
    assert "first divergence: layer.1" in report.table()
    with pytest.raises(ValueError, match="candidate\\['emb'\\] is not a numeric array"):
        compare(reference, {"emb": [[1.0], [1.0, 2.0]]})


def test_diff_command_on_refimpls_own_trace(tmp_path, capsys):
    """The CLI's plumbing: a dump equal to refimpl's float64 trace is no divergence (exit 0); one tensor
    scaled by 1.01 is named first (exit 1, --json); unreadable arguments exit 2."""
    directory = GOLDEN / "opt" / "preln-OPTForCausalLM"
    inputs = golden_inputs("opt", "preln-OPTForCausalLM")
    np.savez(tmp_path / "inputs.npz", **inputs)
    trace, _ = trace_model(refimpl.from_pretrained(directory, dtype="float64"), inputs)
    save_file({k: np.ascontiguousarray(v) for k, v in trace.items()}, str(tmp_path / "same.safetensors"))
    args = ["diff", "--model", str(directory), "--inputs", str(tmp_path / "inputs.npz"), "--against"]
    assert main(args + [str(tmp_path / "same.safetensors")]) == 0
    assert "no divergence beyond noise" in capsys.readouterr().out
    trace["model.decoder.layers.1.self_attn.out_proj"] = trace["model.decoder.layers.1.self_attn.out_proj"] * 1.01
    np.savez(tmp_path / "bug.npz", **trace)
    assert main(args + [str(tmp_path / "bug.npz"), "--json", "--plot", str(tmp_path / "diff.png")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["first_divergence"]["name"] == "model.decoder.layers.1.self_attn.out_proj"
    assert (tmp_path / "diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "--plot wrote no PNG"
    (tmp_path / "pickled.npz").write_bytes(b"not a zip")
    assert main(args + [str(tmp_path / "pickled.npz")]) == 2
    assert main(args + [str(tmp_path / "nothing.npz")]) == 2
    np.savez(tmp_path / "wrong.npz", not_an_argument=np.zeros(2))
    bad = ["diff", "--model", str(directory), "--inputs", str(tmp_path / "wrong.npz"), "--against",
           str(tmp_path / "same.safetensors")]
    assert main(bad) == 2 and "not_an_argument" in capsys.readouterr().err


@pytest.mark.parametrize("family, checkpoint", ALL, ids=[c for _, c in ALL])
def test_inspect_lists_every_module_with_its_parameters(family, checkpoint, capsys):
    directory = GOLDEN / family / checkpoint
    assert main(["inspect", "--model", str(directory), "--length", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    model = refimpl.from_pretrained(directory)
    copies = {k for k, source in model.spec.tied.items() if source in model.params}  # a tied weight counts once
    total = sum(v.size for k, v in model.params.items() if k not in copies)
    assert out[-1].split()[0] == "total" and int(out[-1].split()[1].replace(",", "")) == total
    assert any(line.startswith("<root>") for line in out) and len(out) > 10


@pytest.mark.parametrize("family, checkpoint", [("opt", "preln-OPTForCausalLM"), ("xglm", "cross-XGLMForCausalLM"),
                                                ("nezha", "k9-gelu_new-NezhaModel"),
                                                ("led", "window-6-LEDForConditionalGeneration")])
def test_internals_are_the_attentions_and_their_scores(family, checkpoint):
    """tracing(internals=True): #probs are the attention probabilities the model returns, softmax(#scores)
    gives #probs; without internals=True no '#' name is traced."""
    model = refimpl.from_pretrained(GOLDEN / family / checkpoint, dtype="float64")
    inputs = golden_inputs(family, checkpoint)
    inputs.pop("head_mask", None)
    with tracing(internals=True) as trace:
        out = output_fields(model(**inputs, output_attentions=True))
    internals = [k for k in trace if "#" in k]
    assert internals, checkpoint
    probs = [trace[k] for k in internals if k.endswith("#probs") or k.endswith("#local_probs")]
    returned = [v for k, v in out.items() if k.split(".")[0] in ("attentions", "encoder_attentions",
                                                                  "decoder_attentions", "cross_attentions")]
    for p in probs:
        cut = p[:, :, :returned[0].shape[2]] if family == "led" else p  # LED: traced at the padded length
        assert any(r.shape == cut.shape and np.allclose(r, cut, rtol=0, atol=1e-15) for r in returned), checkpoint
    for name in (k for k in internals if k.endswith("#scores")):
        s = trace[name]
        e = np.exp(s - s.max(-1, keepdims=True))
        assert np.allclose(e / e.sum(-1, keepdims=True), trace[name.replace("#scores", "#probs")], atol=1e-14)
    with tracing() as plain:
        model(**inputs)
    assert not any("#" in k for k in plain)


def test_per_call_traces_follow_every_generate_step():
    """tracing(per_call=True) under generate(): one trace per step (the prompt, then one token per step); at
    each step the traced lm_head's last position picks the token greedy search generated."""
    model = refimpl.from_pretrained(GOLDEN / "generation" / "opt", dtype="float64")
    prompt = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
    with tracing(per_call=True) as trace:
        tokens = model.generate(prompt, max_new_tokens=4, eos_token_id=None)
    assert len(trace.calls) == 4 and not trace  # the steps' records are in `calls`, none at the top
    assert trace.calls[0]["lm_head"].shape[1] == 4 and all(t["lm_head"].shape[1] == 1 for t in trace.calls[1:])
    for step, call in enumerate(trace.calls):
        np.testing.assert_array_equal(call["lm_head"][:, -1].argmax(-1), tokens[:, 4 + step])
