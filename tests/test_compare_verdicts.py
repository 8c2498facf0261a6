"""Verdicts that cannot mislead (refimpl.compare, `refimpl diff`), without torch: coverage (exit 3 when the
final output or most modules were not compared), layouts (axis permutations, never a reshape) and errors
split at padded positions. References are refimpl's own traces of the shipped OPT model and golden
checkpoints; candidates are derived from them by explicit, independent constructions (transposed copies,
perturbations planted by loops over (row, position)), so every expected verdict follows from the
construction. Live candidates from upstream: tests/test_compare_verdicts_live.py."""
import itertools
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import refimpl
from golden import GOLDEN
from refimpl.cli import SHIPPED_MODEL, main
from refimpl.compare import compare, trace_model
from refimpl.trace import tracing

DELTA = 0.5  # a planted error, far beyond any noise floor


def opt_inputs(mask):  # token ids for the shipped OPT model under a 0/1 mask [B, T]
    B, T = mask.shape
    ids = (np.arange(B * T).reshape(B, T) * 7 % 30 + 4).astype(np.int64)
    return {"input_ids": np.where(mask == 1, ids, 1), "attention_mask": mask.astype(np.int64)}


def left_padded(lengths, T):  # rows with their tokens at the end
    return np.array([[0] * (T - n) + [1] * n for n in lengths], np.int64)


def right_padded(lengths, T):
    return np.array([[1] * n + [0] * (T - n) for n in lengths], np.int64)


_cache = {}


def traced(directory, inputs, internals=False, architecture=None):  # -> refimpl's float64 trace
    key = (str(directory), architecture, internals, tuple((k, v.tobytes(), v.shape) for k, v in inputs.items()))
    if key not in _cache:
        model = refimpl.from_pretrained(directory, architecture=architecture, dtype="float64")
        with tracing(internals=internals) as trace:
            model(**inputs)
        _cache[key] = dict(trace)
    return _cache[key]


def copy(trace):
    return {k: v.copy() for k, v in trace.items()}


# ---------------------------------------------------------------- coverage

MASK = left_padded([5, 3], 5)


def test_an_exact_copy_agrees_with_full_coverage():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK))
    report = compare(reference, copy(reference), attention_mask=MASK)
    assert (report.verdict, report.exit_code) == ("agree", 0), report.table()
    assert report.coverage == {"compared": len(reference), "expected": len(reference), "fraction": 1.0,
                               "final_output": "", "final_output_compared": True}
    assert "verdict: agree (exit 0)" in report.table() and "no divergence beyond noise" in report.table()


def test_names_matching_nothing_are_incomplete_never_agreement():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK))
    renamed = {f"model.{k}" if k else "output": v for k, v in reference.items()}  # another naming scheme
    report = compare(reference, renamed)
    assert (report.verdict, report.exit_code, report.first_divergence) == ("incomplete", 3, None)
    assert report.coverage["compared"] == 0 and not report.coverage["final_output_compared"]
    assert report.missing["only_in_reference"] == list(reference)
    assert sorted(report.missing["only_in_candidate"]) == sorted(renamed)
    assert "no divergence" not in report.table() and "verdict: incomplete (exit 3)" in report.table()


def test_half_the_names_is_the_boundary():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK))
    names = list(reference)
    n = len(names)
    others = [k for k in names if k != ""][::-1]
    for kept, verdict in (((n + 1) // 2, "agree"), ((n - 1) // 2, "incomplete")):  # half or more vs fewer
        candidate = {k: reference[k] for k in [""] + others[:kept - 1]}
        assert len(candidate) == kept
        report = compare(reference, candidate)
        assert report.verdict == verdict, (kept, n, report.coverage)
        assert report.coverage["compared"] == kept and report.coverage["fraction"] == kept / n


def test_without_the_final_output_nothing_is_agreed_and_a_divergence_is_still_named():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK))
    candidate = copy(reference)
    del candidate[""]
    report = compare(reference, candidate)
    assert (report.verdict, report.exit_code) == ("incomplete", 3)
    assert report.coverage["compared"] == len(reference) - 1 and report.missing["only_in_reference"] == [""]
    candidate["model.decoder.layers.0.fc1"] = candidate["model.decoder.layers.0.fc1"] + DELTA
    report = compare(reference, candidate)
    assert report.exit_code == 3 and report.first_divergence.name == "model.decoder.layers.0.fc1"
    assert "first divergence: model.decoder.layers.0.fc1" in report.table()
    # another final output, when the caller names one
    named = compare(reference, {k: v for k, v in reference.items() if k != ""}, final="lm_head")
    assert named.verdict == "agree" and named.coverage["final_output"] == "lm_head"


def test_internals_are_compared_but_never_expected():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK), internals=True)
    modules = {k: v for k, v in reference.items() if "#" not in k}
    report = compare(reference, modules)
    assert report.verdict == "agree" and report.coverage["expected"] == len(modules)
    assert not report.missing["only_in_reference"]
    both = compare(reference, copy(reference))
    assert len(both.tensors) == len(reference) and both.coverage["compared"] == len(modules)


def test_a_planted_perturbation_is_named_first():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK))
    names = list(reference)
    for name in (names[1], names[len(names) // 2], ""):
        candidate = copy(reference)
        candidate[name] = candidate[name] * (1 + 1e-3)
        report = compare(reference, candidate)
        assert (report.verdict, report.first_divergence.name) == ("diverge", name), report.table()


# ---------------------------------------------------------------- layout

def inverse(perm):
    return tuple(int(i) for i in np.argsort(perm))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=5), st.randoms(use_true_random=False), st.booleans())
def test_a_transposed_copy_is_compared_in_its_axis_order(dims, rnd, perturb):
    """cand = ref.transpose(q): compared in an axis order p with cand.transpose(p) == ref; with distinct
    sizes p is q's inverse, with equal sizes the smallest error is taken (0 here) and the note says so."""
    rng = np.random.default_rng(rnd.randint(0, 2 ** 32 - 1))
    shape = tuple(dims)
    ref = rng.normal(size=shape)
    q = tuple(rnd.sample(range(len(shape)), len(shape)))
    cand = np.transpose(ref, q).copy()
    if perturb:
        cand.flat[rnd.randrange(cand.size)] += DELTA * (1 + np.abs(ref).max())
    report = compare({"": ref}, {"": cand})
    t = report.tensors[0]
    fits = [p for p in itertools.permutations(range(len(shape)))
            if tuple(cand.shape[i] for i in p) == shape]
    if cand.shape == shape:  # equal shapes (q only swaps equal sizes): compared as they are
        assert t.layout == "" and t.diverges == (perturb or not np.array_equal(cand, ref)), t
        return
    assert t.diverges == perturb and report.exit_code == (1 if perturb else 0), t
    if not perturb:
        perm = tuple(int(axis) for axis in re.findall(r"\d+", t.layout))
        assert t.max_abs == 0.0 and np.array_equal(np.transpose(cand, perm), ref)
    if len(fits) == 1:
        assert t.layout == f"transposed {inverse(q)}" and t.note == ""
    else:
        assert t.layout.startswith("transposed (") and f"{len(fits)} axis orders fit the shape" in t.note


def test_equal_shapes_are_compared_as_they_are_and_a_fitting_order_is_mentioned():
    ref = np.random.default_rng(1).normal(size=(3, 3, 2))
    report = compare({"": ref}, {"": ref.transpose(1, 0, 2)})
    t = report.tensors[0]
    assert t.diverges and t.layout == "" and "would agree transposed (1, 0, 2)" in t.note


def test_a_reshape_is_never_applied():
    reference = traced(SHIPPED_MODEL, opt_inputs(MASK))
    name = "model.decoder.layers.0.self_attn.q_proj"  # [B, T, D]
    B, T, D = reference[name].shape
    for other in (reference[name].reshape(B * T, D), reference[name].reshape(T, B, D)):
        candidate = copy(reference)
        candidate[name] = other
        report = compare(reference, candidate)
        t = next(t for t in report.tensors if t.name == name)
        if other.shape == (T, B, D):  # a permutation of the shape, but the values were reshaped
            assert t.layout == "transposed (1, 0, 2)" and t.diverges
        else:
            assert t.diverges and t.layout == "" and "shape" in t.note and str(other.shape) in t.note
        assert report.first_divergence.name == name and report.exit_code == 1


LED = GOLDEN / "led" / "window-6-LEDForConditionalGeneration"


def led_inputs(mask, decoder_length=4, decoder_mask=None):
    B, T = mask.shape
    ids = (np.arange(B * T).reshape(B, T) * 5 % 30 + 4).astype(np.int64)
    ids[:, 0] = 0
    inputs = {"input_ids": np.where(mask == 1, ids, 1), "attention_mask": mask.astype(np.int64),
              "decoder_input_ids": (np.arange(B * decoder_length).reshape(B, decoder_length) % 20 + 3).astype(np.int64)}
    if decoder_mask is not None:
        inputs["decoder_attention_mask"] = decoder_mask.astype(np.int64)
    return inputs


def test_leds_projections_in_batch_major_layout_agree_transposed():
    """A port that keeps LED's Longformer projections as [B, T, D] (upstream: [T, B, D])."""
    mask = left_padded([7, 4], 7)
    reference = traced(LED, led_inputs(mask))
    projections = [k for k in reference if k.split(".")[-1] in ("query", "key", "value")]
    assert projections
    candidate = copy(reference)
    for name in projections:
        candidate[name] = np.ascontiguousarray(reference[name].transpose(1, 0, 2))
    report = compare(reference, candidate, attention_mask=mask)
    assert report.verdict == "agree", report.table()
    assert {t.name for t in report.tensors if t.layout} == set(projections)
    assert all(t.layout == "transposed (1, 0, 2)" for t in report.tensors if t.layout)
    bug = projections[1]
    candidate[bug] = candidate[bug] * (1 + 1e-3)
    report = compare(reference, candidate, attention_mask=mask)
    assert report.first_divergence.name == bug and report.first_divergence.layout == "transposed (1, 0, 2)"


# ---------------------------------------------------------------- padding

def opt_layouts(reference):  # name -> "BT" ([B, T, ...]) or "rows" ([B*T, ...]), from OPT's module structure
    out = {}
    for name in reference:
        last = name.split(".")[-1]
        # the shipped model is pre-LN: its feed-forward block runs on [B*T, D] rows
        inside_a_layer = ".layers." in name
        out[name] = "rows" if inside_a_layer and last in ("final_layer_norm", "fc1", "fc2", "activation_fn") else "BT"
    return out


def plant(reference, mask, where, layouts, delta=DELTA):
    """Add `delta` at every (row b, position t) with where(b, t) true, tensor by tensor, by explicit loops."""
    candidate = copy(reference)
    B, T = mask.shape
    for name, value in candidate.items():
        for b in range(B):
            for t in range(T):
                if where(b, t):
                    if layouts[name] == "rows":
                        value[b * T + t] += delta
                    else:
                        value[b, t] += delta
    return candidate


masks = st.integers(1, 3).flatmap(lambda B: st.integers(2, 6).flatmap(lambda T: st.one_of(
    st.lists(st.integers(1, T), min_size=B, max_size=B).map(lambda n: left_padded(n, T)),
    st.lists(st.integers(1, T), min_size=B, max_size=B).map(lambda n: right_padded(n, T)),
    st.lists(st.lists(st.integers(0, 1), min_size=T, max_size=T), min_size=B, max_size=B).map(np.array))))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks, st.sampled_from(["left", "right", "random"]))
def test_differences_at_padded_positions_only_are_reported_not_counted(mask, _):
    mask = np.asarray(mask, np.int64)
    if mask.all() or not mask.any(axis=1).all():
        mask[:, 0] = 1  # every row attends somewhere
    reference = traced(SHIPPED_MODEL, opt_inputs(mask))
    layouts = opt_layouts(reference)
    candidate = plant(reference, mask, lambda b, t: mask[b, t] == 0, layouts)
    lenient = compare(reference, candidate, attention_mask=mask)
    strict = compare(reference, candidate, attention_mask=mask, padding="strict")
    padded = (mask == 0).any()
    assert lenient.verdict == "agree", lenient.table()
    assert strict.verdict == ("diverge" if padded else "agree"), strict.table()
    for t in lenient.tensors:
        assert t.max_abs_attended == 0.0, t
        assert t.padding_only == bool(padded), t
        if padded:  # the planted size, |(r + delta) - r| == delta up to one rounding of r + delta
            assert abs(t.max_abs_padded - DELTA) <= 1e-12 * (1 + np.abs(reference[t.name]).max()), t
    if padded:
        assert strict.first_divergence.name == next(iter(reference)) and strict.first_divergence.padding_only
        assert "at padded positions only: counted under padding 'strict'" in strict.table()
        assert "differ beyond noise only at padded positions" in lenient.table()
    # one attended position more: a divergence again, named where it was planted
    b, t = map(int, np.argwhere(mask == 1)[-1])
    name = "model.decoder.layers.0.fc1"
    candidate[name][b * mask.shape[1] + t] += DELTA
    report = compare(reference, candidate, attention_mask=mask)
    assert report.first_divergence.name == name and not report.first_divergence.padding_only
    assert report.first_divergence.max_abs_attended == pytest.approx(DELTA, rel=1e-9)


def test_attention_scores_at_padded_keys_are_padded():
    """[B, H, T, S] internals: a padded query row or a padded key column is a padded element; a change at
    an attended query's attended key is not."""
    mask = left_padded([5, 3], 5)
    reference = traced(SHIPPED_MODEL, opt_inputs(mask), internals=True)
    name = "model.decoder.layers.0.self_attn#scores"
    B, H, T, S = reference[name].shape
    for (q, k), padding_only in (((4, 0), True), ((0, 4), True), ((4, 3), False)):
        candidate = copy(reference)
        candidate[name][1, :, q, k] = -1e8  # what TF masks with; row 1 attends positions 2..4
        report = compare(reference, candidate, attention_mask=mask)
        t = next(t for t in report.tensors if t.name == name)
        assert (t.padding_only, t.diverges) == (padding_only, not padding_only), (q, k, t)


def test_leds_window_padding_and_decoder_lengths():
    """LED pads its encoder to a multiple of the window: positions past the mask are padded too. The
    decoder has its own length: all attended without decoder_attention_mask, its zeros padded with one."""
    mask = right_padded([7, 5], 7)
    decoder_mask = left_padded([4, 2], 4)
    inputs = led_inputs(mask, 4, decoder_mask)
    reference = traced(LED, inputs)
    window_padded = [k for k, v in reference.items() if k.startswith("led.encoder.layers.") and v.shape[:2] == (2, 12)]
    assert window_padded  # [B, 12, D]: 7 tokens padded to 12
    candidate = copy(reference)
    for name in window_padded:
        candidate[name][:, 7:] += DELTA  # the window's padding, both rows
        candidate[name][1, 5:7] += DELTA  # row 1's own padding
    report = compare(reference, candidate, attention_mask=mask)
    assert report.verdict == "agree", report.table()
    assert {t.name for t in report.tensors if t.padding_only} == set(window_padded)
    decoder = "led.decoder.layers.0.fc1"  # [B, 4, F]
    candidate[decoder][1, 0] += DELTA  # a position decoder_attention_mask pads
    assert compare(reference, candidate, attention_mask=mask).first_divergence.name == decoder
    with_decoder_mask = compare(reference, candidate, attention_mask=mask, decoder_attention_mask=decoder_mask)
    assert with_decoder_mask.verdict == "agree"
    assert next(t for t in with_decoder_mask.tensors if t.name == decoder).padding_only
    cross = "led.decoder.layers.0.encoder_attn.k_proj"  # projected from the encoder's output: [B, 7, D]
    candidate[cross][1, 6] += DELTA
    assert compare(reference, candidate, attention_mask=mask, decoder_attention_mask=decoder_mask).verdict == "agree"
    candidate[cross][1, 2] += DELTA
    report = compare(reference, candidate, attention_mask=mask, decoder_attention_mask=decoder_mask)
    assert report.first_divergence.name == cross


def test_tensors_without_positions_are_compared_whole():
    directory = GOLDEN / "opt" / "postln-proj-OPTForSequenceClassification"
    mask = left_padded([5, 2], 5)
    reference = traced(directory, opt_inputs(mask))
    assert reference[""].shape == (2, refimpl.from_pretrained(directory).config.num_labels)
    candidate = copy(reference)
    candidate[""][0, 0] += DELTA  # pooled logits of row 0 (a row with padding elsewhere)
    report = compare(reference, candidate, attention_mask=mask)
    t = report.tensors[-1]
    assert t.name == "" and t.diverges and t.max_rel_attended is None and not t.padding_only


def test_multiple_choice_rows_and_attention_dropout():
    """NEZHA's multiple choice: a [B, C, T] mask runs B*C rows; its attention-probability dropout output
    [B*C, H, T, T] is padded where the query or the key is."""
    directory = GOLDEN / "nezha" / "k2-NezhaForMultipleChoice"
    mask = np.ones((2, 2, 6), np.int64)
    mask[0, 1, 4:] = 0
    mask[1, 0, 3:] = 0
    ids = np.where(mask == 1, np.arange(24).reshape(2, 2, 6) % 20 + 3, 0)
    reference = traced(directory, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    rows = mask.reshape(4, 6)
    candidate = copy(reference)
    planted = {}
    for name, value in candidate.items():
        if value.ndim == 3 and value.shape[:2] == (4, 6):  # [B*C, T, D]
            for r, t in zip(*np.nonzero(rows == 0)):
                value[r, t] += DELTA
            planted[name] = True
        elif value.ndim == 4 and value.shape[0] == 4 and value.shape[2:] == (6, 6):  # [B*C, H, T, S]
            for r, q, k in itertools.product(range(4), range(6), range(6)):
                if rows[r, q] == 0 or rows[r, k] == 0:
                    value[r, :, q, k] += DELTA
            planted[name] = True
    assert any(candidate[n].ndim == 4 for n in planted)
    report = compare(reference, candidate, attention_mask=mask)
    assert report.verdict == "agree", report.table()
    assert {t.name for t in report.tensors if t.padding_only} == set(planted)
    name = next(n for n in planted if candidate[n].ndim == 4)
    candidate[name][0, 1, 2, 3] += DELTA  # choice 0 of example 0: attended everywhere
    assert compare(reference, candidate, attention_mask=mask).first_divergence.name == name


def test_pooled_outputs_are_whole_whatever_their_size_and_start_logits_have_positions():
    """NEZHA's pooler [B, D] with D equal to the length T is still pooled (compared whole: a change in
    its last column diverges though position T-1 of row 1 is padded); OPT's question-answering start
    logits [B, T] have positions."""
    directory = GOLDEN / "nezha" / "k2-NezhaModel"
    D = refimpl.from_pretrained(directory).config.hidden_size
    mask = right_padded([D, D - 3], D)
    ids = np.where(mask == 1, np.arange(2 * D).reshape(2, D) % 30 + 5, 0)
    reference = traced(directory, {"input_ids": ids, "attention_mask": mask})
    pooler = "pooler"
    assert reference[""].shape == (2, D, D) and reference[pooler].shape == (2, D)
    candidate = copy(reference)
    candidate[pooler][1, D - 1] += DELTA
    t = next(t for t in compare(reference, candidate, attention_mask=mask).tensors if t.name == pooler)
    assert t.diverges and t.max_rel_attended is None and not t.padding_only
    directory = GOLDEN / "opt" / "preln-OPTForQuestionAnswering"
    mask = left_padded([6, 4], 6)
    reference = traced(directory, opt_inputs(mask))
    assert reference[""].shape == (2, 6)
    candidate = copy(reference)
    candidate[""][1, :2] += DELTA
    t = compare(reference, candidate, attention_mask=mask).tensors[-1]
    assert t.name == "" and t.padding_only and not t.diverges and t.max_abs_attended == 0.0


def test_padding_only_ever_excuses():
    """Small attended values beside large padded ones: an attended error that is large against the attended
    values but within tolerance against the whole tensor is no divergence under lenient (nor strict)."""
    mask = np.array([[1, 1, 0]])
    reference = {"": np.array([[[1e-3, 1e-3], [1e-3, 1e-3], [10.0, 10.0]]])}  # [B, T, D]
    candidate = {"": reference[""] + np.array([[[1e-8, 0], [0, 0], [0, 0]]])}  # 1e-5 of the attended, 1e-9 of all
    for padding in ("lenient", "strict"):
        t = compare(reference, candidate, attention_mask=mask, padding=padding).tensors[0]
        assert not t.diverges and not t.padding_only, (padding, t)
        assert t.max_rel_attended == pytest.approx(1e-5) and t.max_rel == pytest.approx(1e-9)


def test_bad_masks_and_padding_modes_are_refused():
    reference = {"": np.zeros((2, 3))}
    for mask, what in ((np.full((2, 3), 2), "0/1"), (np.zeros(3), "batch, length"), (np.array([["a"]]), "0/1")):
        with pytest.raises(ValueError, match="attention_mask must be"):
            compare(reference, reference, attention_mask=mask)
    with pytest.raises(ValueError, match="fits no traced tensor"):
        compare(reference, reference, attention_mask=np.ones((4, 5)))
    with pytest.raises(ValueError, match="padding must be one of"):
        compare(reference, reference, padding="loose")


# ---------------------------------------------------------------- the command

def test_diff_exit_codes_padding_and_help(tmp_path, capsys):
    mask = left_padded([6, 4], 6)
    inputs = opt_inputs(mask)
    np.savez(tmp_path / "inputs.npz", **inputs)
    reference, _ = trace_model(refimpl.from_pretrained(SHIPPED_MODEL, dtype="float64"), inputs)
    base = ["diff", "--model", str(SHIPPED_MODEL), "--inputs", str(tmp_path / "inputs.npz"), "--against"]

    def run(candidate, *extra):
        np.savez(tmp_path / "dump.npz", **candidate)
        code = main(base + [str(tmp_path / "dump.npz"), "--json", *extra])
        return code, json.loads(capsys.readouterr().out)

    code, out = run(reference)
    assert code == 0 and out["verdict"] == "agree" and out["coverage"]["fraction"] == 1.0
    padded = plant(reference, mask, lambda b, t: mask[b, t] == 0, opt_layouts(reference))
    code, out = run(padded)
    assert code == 0 and out["verdict"] == "agree" and all(t["padding_only"] for t in out["tensors"])
    code, out = run(padded, "--padding", "strict")
    assert code == 1 and out["verdict"] == "diverge"
    code, out = run({f"x.{k}": v for k, v in reference.items()})
    assert code == 3 and out["verdict"] == "incomplete" and out["coverage"]["compared"] == 0
    code, out = run({k: v for k, v in reference.items() if k})
    assert code == 3 and out["coverage"]["final_output_compared"] is False
    transposed = copy(reference)
    transposed[""] = np.ascontiguousarray(reference[""].transpose(1, 0, 2))
    code, out = run(transposed)
    assert code == 0 and out["tensors"][-1]["layout"] == "transposed (1, 0, 2)"
    assert set(out) >= {"verdict", "exit_code", "coverage", "first_divergence", "tensors", "missing"}
    np.savez(tmp_path / "dump.npz", **{k: v for k, v in reference.items() if k})
    assert main(base + [str(tmp_path / "dump.npz")]) == 3
    table = capsys.readouterr().out
    assert "verdict: incomplete (exit 3)" in table and "final output <root> NOT compared" in table
    with pytest.raises(SystemExit) as exit_:
        main(base + [str(tmp_path / "dump.npz"), "--padding", "loose"])
    assert exit_.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["diff", "--help"])
    help_text = capsys.readouterr().out
    assert "--padding {lenient,strict}" in help_text
    for line in ("0    agree", "1    diverge", "2    usage", "3    incomplete"):
        assert line in help_text
    bad = dict(inputs, attention_mask=np.full_like(mask, 3))
    np.savez(tmp_path / "inputs.npz", **bad)
    assert main(base + [str(tmp_path / "dump.npz")]) == 2
