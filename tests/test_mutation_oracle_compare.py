"""refimpl.compare's arithmetic and rules on hand-made tensors, each expected value worked out by hand from the
module's docstring: the normwise relative error (NaN, infinities, a zero or small reference), the tolerance
max(margin * noise, floor) with its boundary (an error equal to it is no divergence), masked attention scores
(below MASKED = -1e30), which elements are padded in each layout, mask errors naming the shape and dtype, and
the report's words (the root module shown as <root>)."""
import json

import numpy as np
import pytest

from refimpl.compare import Rows, compare, mask_rows, padded_elements, relative_error


# ------------------------------------------------------------------ the relative error


@pytest.mark.parametrize("candidate, reference, expected", [
    ([1.0, 2.0], [0.5, 0.25], (1.75, 3.5)),               # a reference below 1: its own max |.| is the scale
    ([0.5, -0.25], [0.5, -0.125], (0.125, 0.25)),
    ([-3.0, 1.0], [-4.0, 1.0], (1.0, 0.25)),              # the scale is max |reference|, a negative value
    ([0.0, 0.0], [0.0, 0.0], (0.0, 0.0)),                 # nothing to scale by, nothing different
    ([0.0, 1.0], [0.0, 0.0], (1.0, float("inf"))),        # a difference against an all-zero reference
    ([np.nan, 1.0], [np.nan, 1.25], (0.25, 0.2)),         # NaN where the reference has NaN: not an error
    ([np.nan, 1.0], [3.0, 1.0], (float("inf"), float("inf"))),   # NaN where the reference has a number
    ([3.0, 1.0], [np.nan, 1.0], (float("inf"), float("inf"))),
    ([np.inf, -np.inf, 0.25], [np.inf, -np.inf, 0.5], (0.25, 0.5)),  # equal infinities: no error; scale ignores them
    ([np.inf, 1.0], [-np.inf, 2.0], (float("inf"), float("inf"))),
    ([np.inf, 1.0], [4.0, 2.0], (float("inf"), float("inf"))),
    ([], [], (0.0, 0.0)),
])
def test_relative_error_by_hand(candidate, reference, expected):
    assert relative_error(np.array(candidate), np.array(reference)) == expected


# ------------------------------------------------------------------ the tolerance and its boundary


def one(error, noise=None, **kwargs):  # a root tensor [1, 2] whose relative error is exactly `error`
    reference = {"": np.array([[1.0, -0.5]])}
    candidate = {"": np.array([[1.0 + error, -0.5]])}
    return compare(reference, candidate, None if noise is None else {"": noise}, **kwargs)


def test_an_error_equal_to_the_tolerance_is_no_divergence():
    # margin 8 times noise 2**-20 = 2**-17: exact in binary
    assert one(2.0 ** -17, 2.0 ** -20, margin=8.0).verdict == "agree"
    assert one(2.0 ** -16, 2.0 ** -20, margin=8.0).verdict == "diverge"
    assert one(2.0 ** -17, None, floor=2.0 ** -17).verdict == "agree"   # the floor alone
    assert one(2.0 ** -16, None, floor=2.0 ** -17).verdict == "diverge"
    assert one(2.0 ** -18, 2.0 ** -30, floor=2.0 ** -17).verdict == "agree"  # the larger of the two
    assert one(2.0 ** -16, 2.0 ** -14, floor=2.0 ** -20).verdict == "agree"  # default margin 10: 10 * 2**-14


def test_default_margin_and_floor():
    assert one(9e-6, 1e-6).verdict == "agree" and one(1.1e-5, 1e-6).verdict == "diverge"   # MARGIN 10
    assert one(9e-7).verdict == "agree" and one(2e-6).verdict == "diverge"                  # FLOOR 1e-6
    report = one(2e-6, 1e-7)
    t = report.tensors[0]
    assert (t.name, t.shape, t.noise, t.diverges) == ("", (1, 2), 1e-7, True)
    assert t.max_abs == pytest.approx(2e-6) and t.max_rel == pytest.approx(2e-6)


# ------------------------------------------------------------------ masked attention scores


def test_scores_below_masked_are_padded_elements():
    """A `#scores` tensor [B, H, T, S]: a score the reference masks out (below -1e30) is counted with the padded
    elements, whatever value the candidate puts there; a score of -0.9e30 is an attended score."""
    mask = np.ones((1, 2), np.int64)
    scores = np.array([[[[0.5, -1.5e30], [0.25, 0.75]]]])  # the causal mask's future key
    reference = {"": np.ones((1, 2, 3)), "layer#scores": scores}
    candidate = {"": np.ones((1, 2, 3)), "layer#scores": np.where(scores < -1e29, -3.0e38, scores)}
    report = compare(reference, candidate, attention_mask=mask)
    t = report.tensors[1]
    assert (report.verdict, t.diverges, t.padding_only) == ("agree", False, True), report.table()
    assert t.max_rel_attended == 0.0 and t.max_abs_padded > 1e38
    near = scores.copy()
    near[0, 0, 0, 1] = -0.9e30  # not masked: compared as any score
    reference["layer#scores"] = near
    candidate["layer#scores"] = np.where(near < -1e29, -3.0e38, near)
    report = compare(reference, candidate, attention_mask=mask)
    assert report.tensors[1].diverges and report.verdict == "diverge"


# ------------------------------------------------------------------ which elements are padded


def rows(mask, length=None):
    m = np.asarray(mask, bool)
    return Rows(~m, m.shape[1] if length is None else length)


MASK = [[0, 1, 1], [1, 1, 1]]  # B=2, T=3; row 0 has its first position padded


def test_padded_positions_in_each_layout():
    q = rows(MASK)
    bt = padded_elements((2, 3, 4), q)  # [B, T, D]
    assert bt.shape == (2, 3, 4) and bt[0, 0].all() and not bt[0, 1:].any() and not bt[1].any()
    tb = padded_elements((3, 2, 4), q)  # [T, B, D]
    assert tb[0, 0].all() and not tb[0, 1].any() and not tb[1:].any()
    flat = padded_elements((6, 4), q)   # [B*T, D]
    assert flat[:, 0].tolist() == [True, False, False, False, False, False]
    assert padded_elements((2, 4), q) is None                        # pooled [B, D]: whole
    assert padded_elements((2, 3), q) is None                        # [B, labels] of size T: still whole
    assert padded_elements((2, 3), q, per_position_2d=True)[0].tolist() == [True, False, False]
    assert padded_elements((5,), q) is None and padded_elements((2, 3), None) is None


def test_padded_positions_of_attention_probabilities():
    q = rows(MASK)
    probs = padded_elements((2, 4, 3, 3), q, q)  # [B, H, T, S]: a padded query row or key column
    assert probs[0, 0].tolist() == [[True, True, True], [True, False, False], [True, False, False]]
    assert not probs[1].any()
    local = padded_elements((2, 4, 3, 5), q, q, kind="local_probs")    # [B, H, T, band]: the query only
    assert local[0, 0, :, 0].tolist() == [True, False, False] and local[0, 0, 0].all()
    glob = padded_elements((2, 4, 1, 3), q, q, kind="global_probs")   # [B, H, X, T]: the key only
    assert glob[0, 0, 0].tolist() == [True, False, False]
    keys_only = padded_elements((2, 4, 5, 3), None, q)  # cross-attention: queries of their own length
    assert keys_only[0, 0, :, 0].all() and not keys_only[0, 0, :, 1:].any()


def test_a_stack_padded_to_a_window_pads_the_positions_past_the_mask():
    q = rows(MASK, length=5)  # the encoder pads T=3 to 5
    wide = padded_elements((2, 5, 4), q)
    assert wide[1, :, 0].tolist() == [False, False, False, True, True]
    assert wide[0, :, 0].tolist() == [True, False, False, True, True]
    assert padded_elements((2, 4, 4), q) is None  # neither T nor the padded length: no positions
    assert rows(MASK, length=2).at(2) is None


@pytest.mark.parametrize("mask, shape", [(np.ones(3), r"\(3,\)"), (np.ones((1, 1, 2, 2)), r"\(1, 1, 2, 2\)"),
                                         (np.ones((0, 3)), r"\(0, 3\)"), (np.full((1, 3), 2), r"\(1, 3\)"),
                                         (np.full((1, 2), -1), r"\(1, 2\)")])
def test_a_bad_mask_is_named_with_its_shape(mask, shape):
    with pytest.raises(ValueError, match=rf"attention_mask must be a \[batch, length\] array of 0/1 .*{shape}"):
        mask_rows(mask, "attention_mask")


def test_good_masks_of_every_numeric_kind_and_multiple_choice():
    for mask in (np.array([[0, 1]], bool), np.array([[0, 1]], np.uint8), np.array([[0.0, 1.0]])):
        assert mask_rows(mask, "m").padded.tolist() == [[True, False]]
    choice = mask_rows(np.array([[[1, 0], [1, 1]], [[0, 1], [1, 1]]]), "m")  # [B, C, T] -> B*C rows
    assert choice.padded.tolist() == [[False, True], [False, False], [True, False], [False, False]]
    assert choice.length == 2
    with pytest.raises(ValueError, match="decoder_attention_mask must be .* int64 of shape \\(3,\\)"):
        compare({"": np.ones((1, 2, 3))}, {"": np.ones((1, 2, 3))}, attention_mask=np.ones((1, 2)),
                decoder_attention_mask=np.ones(3, np.int64))


# ------------------------------------------------------------------ the words


def test_the_root_is_shown_as_root_in_every_sentence():
    mask = np.array([[1, 0]])
    reference = {"": np.ones((1, 2, 2)), "a": np.ones((1, 2, 2))}
    padded_only = {"": reference[""] + np.array([[[0, 0], [1, 1]]]), "a": reference["a"]}
    report = compare(reference, padded_only, attention_mask=mask)
    assert report.verdict == "agree"
    text = report.summary()
    assert "1 tensor(s) differ beyond noise only at padded positions" in text
    assert "the first <root>, the largest 1.00e+00 relative" in text
    strict = compare(reference, padded_only, attention_mask=mask, padding="strict")
    assert strict.summary().splitlines()[0] == ("verdict: diverge (exit 1): first divergence: <root> (at padded "
                                                 "positions only: counted under padding 'strict')")
    lines = strict.table().splitlines()
    assert lines[1].startswith("<root>") and "<-- first divergence" in lines[1] and "padding only" in lines[1]
    assert lines[0].split()[-4:] == ["rel", "attend", "rel", "padded"]  # the attended/padded columns with a mask
    missing = compare({"": np.ones(2), "b": np.ones(2), "c": np.ones(2)}, {"b": np.ones(2), "x": np.ones(1)})
    assert missing.summary().startswith("verdict: incomplete (exit 3): the final output was not compared")
    assert "coverage: compared 1 of 3 traced modules (33%), final output <root> NOT compared" in missing.summary()
    assert "2 name(s) only in reference: <root>, c" in missing.table()
    assert "1 name(s) only in candidate: x" in missing.table()
    assert missing.missing == {"only_in_reference": ["", "c"], "only_in_candidate": ["x"]}
    few = compare({"": np.ones(2), "b": np.ones(2), "c": np.ones(2), "d": np.ones(2)},
                  {"": 2 * np.ones(2)})
    assert few.summary().startswith("verdict: incomplete (exit 3): fewer than half of the traced modules were "
                                    "compared; nothing is claimed about the rest; among what was compared, first "
                                    "divergence: <root>")
    assert few.exit_code == 3 and few.coverage["fraction"] == 0.25
    named = compare({"x": np.ones(2)}, {"x": np.ones(2)}, final="x")
    assert named.verdict == "agree" and "final output x compared" in named.summary()
    data = json.loads(json.dumps(strict.to_json()))
    assert data["verdict"] == "diverge" and data["exit_code"] == 1 and data["first_divergence"]["name"] == ""
    assert data["first_divergence"]["padding_only"] is True and data["coverage"]["compared"] == 2


def test_table_without_a_mask_has_no_padding_columns_and_marks_later_divergences():
    reference = {"a": np.ones(2), "b": np.ones(2), "": np.ones(2)}
    candidate = {"a": np.ones(2) * 2, "b": np.ones(2) * 3, "": np.ones(2)}
    lines = compare(reference, candidate).table().splitlines()
    assert lines[0].split() == ["module", "shape", "max", "abs", "max", "rel", "noise"]
    assert lines[1].split() == ["a", "(2,)", "1.00e+00", "1.00e+00", "-", "<--", "first", "divergence"]
    assert lines[2].split() == ["b", "(2,)", "2.00e+00", "2.00e+00", "-", "diverges"]
    assert lines[3].split() == ["<root>", "(2,)", "0.00e+00", "0.00e+00", "-"]


# ------------------------------------------------------------------ which mask governs which tensor


def test_an_encoder_decoder_reference_splits_encoder_decoder_and_cross_attention():
    from refimpl.compare import Padding
    z = np.zeros
    reference = {"led.shared": z((2, 3, 5)), "led.encoder.layers.0": z((2, 4, 5)), "led.encoder.layers.1": z((2, 4, 5)),
                 "led.encoder.layers.2": z((2, 4, 5)), "led.decoder.layers.0": z((2, 2, 5)),
                 "led.decoder.layers.0.encoder_attn.k_proj": z((2, 3, 5)), "": z((2, 2, 7))}
    mask, decoder_mask = np.array([[1, 1, 0], [1, 1, 1]]), np.array([[1, 0], [1, 1]])
    p = Padding(reference, mask, decoder_mask)
    assert p.encoder_decoder and not p.question_answering and p.main.length == 4  # the encoder's padded length
    assert p.elements("led.encoder.layers.0", (2, 4, 5))[:, :, 0].tolist() == [[False, False, True, True],
                                                                               [False, False, False, True]]
    assert p.elements("led.shared", (2, 3, 5))[0, :, 0].tolist() == [False, False, True]
    assert p.elements("led.decoder.layers.0", (2, 2, 5))[0, :, 0].tolist() == [False, True]
    assert p.elements("", (2, 2, 7))[0, :, 0].tolist() == [False, True]
    assert p.elements("led.decoder.layers.0.encoder_attn.k_proj", (2, 3, 5))[0, :, 0].tolist() == [False, False, True]
    probs = p.elements("led.decoder.layers.0.encoder_attn#probs", (2, 1, 2, 3))  # decoder queries, encoder keys
    assert probs[0, 0].tolist() == [[False, False, True], [True, True, True]] and not probs[1].any()
    assert p.elements("led.decoder.layers.0.self_attn#probs", (2, 1, 2, 2))[0, 0].tolist() == [[False, True],
                                                                                               [True, True]]
    without = Padding(reference, mask)  # no decoder mask: the decoder's tensors are all attended
    assert without.elements("led.decoder.layers.0", (2, 2, 5)) is None
    assert without.elements("led.encoder.layers.0", (2, 4, 5)) is not None


def test_a_decoder_only_model_compares_its_cross_attention_keys_whole():
    from refimpl.compare import Padding
    reference = {"model.layers.0": np.zeros((2, 3, 4)), "model.layers.0.encoder_attn.v_proj": np.zeros((2, 5, 4)),
                 "": np.zeros((2, 3, 4))}
    p = Padding(reference, np.array([[0, 1, 1], [1, 1, 1]]))
    assert not p.encoder_decoder
    assert p.elements("model.layers.0.encoder_attn.v_proj", (2, 3, 4)) is None  # same T, still external
    probs = p.elements("model.layers.0.encoder_attn#probs", (2, 1, 3, 5))  # its own queries, external keys
    assert probs[0, 0, :, 0].tolist() == [True, False, False] and probs[0, 0, 1:].any() == False  # noqa: E712
    assert p.elements("model.layers.0", (2, 3, 4))[0, :, 0].tolist() == [True, False, False]
    assert p.elements("model.relative_positions_encoding", (3, 3, 4)) is None
    with pytest.raises(ValueError, match=r"attention_mask of shape \(4, 7\) fits no traced tensor's"):
        Padding(reference, np.ones((4, 7)))


def test_question_answering_start_logits_have_positions():
    from refimpl.compare import Padding
    reference = {"nezha.encoder": np.zeros((2, 3, 4)), "qa_outputs": np.zeros((2, 3, 2)), "": np.zeros((2, 3))}
    p = Padding(reference, np.array([[1, 1, 0], [1, 1, 1]]))
    assert p.question_answering
    assert p.elements("", (2, 3)).tolist() == [[False, False, True], [False, False, False]]
    plain = Padding({"nezha.encoder": np.zeros((2, 3, 4)), "": np.zeros((2, 3))}, np.array([[1, 1, 0], [1, 1, 1]]))
    assert not plain.question_answering and plain.elements("", (2, 3)) is None


def test_layouts_named_in_the_report():
    reference = {"": np.arange(6.0).reshape(2, 3)}
    transposed = compare(reference, {"": reference[""].T})
    t = transposed.tensors[0]
    assert (t.layout, t.note, t.diverges, t.max_abs) == ("transposed (1, 0)", "", False, 0.0)
    reshaped = compare(reference, {"": reference[""].reshape(6, 1)}).tensors[0]
    assert reshaped.diverges and reshaped.max_rel == float("inf")
    assert reshaped.note == "shape (6, 1), reference (2, 3) (same size: a reshape is never applied)"
    other = compare(reference, {"": np.zeros((4, 2))}).tensors[0]
    assert other.note == "shape (4, 2), reference (2, 3)" and other.layout == ""
    square = {"": np.arange(4.0).reshape(2, 2)}
    swapped = compare(square, {"": square[""].T}).tensors[0]
    assert swapped.diverges and swapped.layout == ""
    assert swapped.note == "would agree transposed (1, 0) (an axis order of the same shape)"
    cube = {"": np.arange(8.0).reshape(2, 2, 2)}
    several = compare(cube, {"": cube[""].transpose(1, 0, 2)}).tensors[0]
    assert several.diverges and several.note == "would agree transposed (1, 0, 2) (an axis order of the same shape)"
    wide = {"": np.arange(12.0).reshape(2, 2, 3)}
    fit = compare(wide, {"": wide[""].transpose(2, 1, 0)}).tensors[0]
    assert fit.layout == "transposed (2, 1, 0)" and not fit.diverges
    assert fit.note == "2 axis orders fit the shape; (2, 1, 0) has the smallest error"
    with pytest.raises(ValueError, match=r"candidate\['x'\] is not a numeric array \(got str\)"):
        compare({"x": np.ones(2)}, {"x": "text"})


def test_trace_model_noise_is_the_relative_difference_per_tensor():
    from refimpl.compare import trace_model
    from refimpl.trace import record

    class Tiny:  # a model that records two tensors, the second of another shape in the noise run
        def __init__(self, scale, shape):
            self.scale, self.shape = scale, shape

        def __call__(self, x):
            record({}, "a", x * self.scale)
            record({}, "b", np.ones(self.shape))

    trace, noise = trace_model(Tiny(1.0, 2), {"x": np.array([2.0, -4.0])}, Tiny(1.5, 3))
    assert list(trace) == ["a", "b"] and trace["a"].tolist() == [2.0, -4.0]
    assert noise == {"a": 0.5}  # |(3, -6) - (2, -4)| / 4; b's shapes differ: no noise
    alone, none = trace_model(Tiny(1.0, 2), {"x": np.ones(1)})
    assert list(alone) == ["a", "b"] and none == {}


def test_a_tensor_of_padded_elements_only():
    """A row whose every position is padded: lenient excuses any error there (nothing attended); strict counts it."""
    mask = np.array([[1, 1], [0, 0]])
    reference = {"": np.ones((2, 2, 3)), "x": np.ones((1, 2, 3))}  # x: batch 1, a row that is not the mask's
    candidate = {"": reference[""] + np.array([0.0, 1.0])[:, None, None], "x": np.ones((1, 2, 3))}
    lenient = compare(reference, candidate, attention_mask=mask)
    t = lenient.tensors[0]
    assert (lenient.verdict, t.diverges, t.padding_only) == ("agree", False, True)
    assert (t.max_abs_attended, t.max_rel_attended, t.max_abs_padded, t.max_rel_padded) == (0.0, 0.0, 1.0, 1.0)
    assert lenient.tensors[1].max_rel_attended is None  # no (batch, position) axes of this mask: compared whole
    strict = compare(reference, candidate, attention_mask=mask, padding="strict")
    assert (strict.verdict, strict.tensors[0].diverges, strict.tensors[0].padding_only) == ("diverge", True, True)
    every = compare({"": np.ones((1, 2, 3))}, {"": np.full((1, 2, 3), 5.0)}, attention_mask=np.zeros((1, 2)))
    t = every.tensors[0]
    assert (every.verdict, t.max_abs_attended, t.max_rel_attended, t.max_rel_padded) == ("agree", 0.0, 0.0, 4.0)


def test_an_other_axis_order_within_tolerance_exactly_is_mentioned():
    reference = {"": np.array([[0.0, 1.0], [2.0, 4.0]])}
    candidate = {"": np.array([[0.0, 2.0], [1.0, 4.5]])}  # its transpose is off by 0.5 / 4 = 2**-3 exactly
    t = compare(reference, candidate, floor=2.0 ** -3).tensors[0]
    assert t.diverges and t.max_rel == 0.25
    assert t.note == "would agree transposed (1, 0) (an axis order of the same shape)"
    assert compare(reference, candidate, floor=2.0 ** -4).tensors[0].note == ""


def test_the_encoders_padded_length_is_its_most_common_length():
    from refimpl.compare import Padding
    z = np.zeros
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    unpadded = {"led.encoder.layers.0": z((2, 3, 5)), "led.encoder.layers.1": z((2, 3, 5)),
                "led.encoder.layers.2": z((2, 4, 5)), "led.decoder.layers.0": z((2, 2, 5)), "": z((2, 2, 7))}
    p = Padding(unpadded, mask)
    assert p.main.length == 3 and p.elements("led.encoder.layers.2", (2, 4, 5)) is None
    padded = dict(unpadded, **{"led.encoder.layers.1": z((2, 4, 5)), "led.encoder.layers.0#probs": z((2, 1, 3, 3)),
                               "led.encoder.layer_norm": z((2, 2, 5)), "led.decoder.layers.1": z((2, 3, 5))})
    assert Padding(padded, mask).main.length == 4  # internals, shorter and decoder tensors are not counted
    narrow = {"led.encoder.layers.0": z((2, 4, 2)), "led.encoder.layers.1": z((2, 4, 2)),
              "led.decoder.layers.0": z((2, 2, 2)), "": z((2, 2, 7))}  # a width below the length: no matter
    assert Padding(narrow, mask).main.length == 4
