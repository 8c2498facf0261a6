"""The forward interface without upstream: return_dict=False tuples against the output objects' field order
(and the few documented departures of upstream's), config.json's return_dict / torchscript, the refusals
(unknown keywords, bad return_dict, pruned_heads where upstream cannot prune, malformed pruned_heads, head
masks a pruned NEZHA cannot take) and the pruned NEZHA parameter shapes. tests/test_forward_interface_live.py
compares all of it with upstream."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.numpy import load_file

from golden import DTYPES, GOLDEN, GoldenCase, run_case

from refimpl.modeling import Model
from refimpl.models import config_from_dict, family
from refimpl.models.nezha import layer_heads
from refimpl.outputs import ModelOutput, use_return_dict

CONFIGS = {  # small configs, config.json style
    "opt": dict(vocab_size=20, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, ffn_dim=8,
                max_position_embeddings=16, word_embed_proj_dim=6, num_labels=3),
    "xglm": dict(vocab_size=20, d_model=8, attention_heads=2, num_layers=2, ffn_dim=8, max_position_embeddings=16),
    "nezha": dict(vocab_size=20, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, intermediate_size=8,
                  max_position_embeddings=16, max_relative_position=3, num_labels=2),
    "led": dict(vocab_size=20, d_model=8, encoder_attention_heads=2, decoder_attention_heads=2, encoder_layers=2,
                decoder_layers=2, encoder_ffn_dim=8, decoder_ffn_dim=8, attention_window=4, num_labels=3,
                max_encoder_position_embeddings=16, max_decoder_position_embeddings=16),
}
CLASSES = [(fam, name) for fam in CONFIGS for name in family(fam).architectures]
IDS = np.array([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])  # LED: "<s> ... </s>", one </s> per row
LABELS = {"labels", "next_sentence_label", "start_positions", "end_positions"}


def model(fam, architecture, dtype="float64", seed=0, **changes):
    """A refimpl model with random weights of the declared shapes (no checkpoint needed)."""
    cfg = config_from_dict({"model_type": fam, **CONFIGS[fam], **changes})
    rng = np.random.default_rng(seed)
    shapes = family(fam).param_shapes(cfg, architecture)
    params = {name: (rng.normal(size=shape) * 0.5).astype(dtype) for name, shape in shapes.items()}
    return Model(cfg, params, architecture, dtype)


def inputs(m, labels=True):
    ids = IDS[:, None, :].repeat(2, axis=1) if m.architecture == "NezhaForMultipleChoice" else IDS
    args = {"input_ids": ids, "output_attentions": True, "output_hidden_states": True}
    if not labels:
        return args
    names = set(m.forward_fn.__code__.co_varnames[:m.forward_fn.__code__.co_argcount])
    if "labels" in names:
        if m.architecture.endswith(("CausalLM", "MaskedLM", "ConditionalGeneration", "PreTraining",
                                    "TokenClassification")):
            args["labels"] = np.where(IDS == 1, -100, IDS % 2)
        else:
            args["labels"] = np.array([0, 1])
    if "next_sentence_label" in names and m.architecture == "NezhaForPreTraining":
        args["next_sentence_label"] = np.array([1, 0])
    if "start_positions" in names:
        args.update(start_positions=np.array([1, 2]), end_positions=np.array([3, 9]))
    return args


def same(a, b):  # nested tuples of arrays, equal element by element, None slots included
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


# ---------------------------------------------------------------- tuples


@pytest.mark.parametrize("fam, architecture", CLASSES)
@pytest.mark.parametrize("labels", [True, False])
def test_tuple_is_the_object_fields_in_order(fam, architecture, labels):
    """return_dict=False: the object's non-None fields in declaration order (loss first when computed), except
    where upstream builds its tuple otherwise (NEZHA, OPTForQuestionAnswering without a cache: checked below)."""
    m = model(fam, architecture)
    args = inputs(m, labels)
    obj, tup = m(**args), m(**args, return_dict=False)
    assert isinstance(obj, ModelOutput) and isinstance(tup, tuple)
    assert same(m(**args, return_dict=True).to_tuple(), obj.to_tuple())
    loss = getattr(obj, "loss", None)
    assert (loss is not None) == any(k in args for k in LABELS)
    if loss is not None:
        assert tup[0] == loss
    if fam != "nezha":
        assert same(tup, obj.to_tuple()), [type(v).__name__ for v in tup]


@pytest.mark.parametrize("architecture", [a for f, a in CLASSES if f == "nezha"])
@pytest.mark.parametrize("is_decoder", [False, True])
def test_nezha_tuple_keeps_the_pooler_slot_and_the_cache(architecture, is_decoder):
    """NezhaModel: (sequence, pooled) + NezhaEncoder's (cache, hidden, attentions); heads: their own values +
    that[2:]. A decoder config's heads cache (use_cache from the config): the tuple keeps the cache, the object
    has no field for it."""
    m = model("nezha", architecture, is_decoder=is_decoder)
    obj, tup = m(**inputs(m)), m(**inputs(m), return_dict=False)
    fields = obj.to_tuple()  # loss?, the head's values..., hidden_states, attentions
    cache = (obj.past_key_values,) if architecture == "NezhaModel" and is_decoder else ()
    if architecture == "NezhaModel":
        assert same(tup, (obj.last_hidden_state, obj.pooler_output) + cache + (obj.hidden_states, obj.attentions))
        return
    own, rest = tup[:len(fields) - 2], tup[len(fields) - 2:]
    assert same(own, fields[:-2]) and same(rest[-2:], fields[-2:])
    assert len(rest) == 2 + is_decoder
    if is_decoder:  # the layers' (key, value) of NezhaModel's run
        assert len(rest[0]) == m.config.num_hidden_layers and all(len(layer) == 2 for layer in rest[0])
        assert rest[0][0][0].shape[:2] == (tup[-1][0].shape[0], m.config.num_attention_heads)


def test_nezha_model_without_pooler_keeps_a_none_slot():
    m = model("nezha", "NezhaModel")
    tup = m.forward_fn(m.params, m.config, IDS, output_hidden_states=True, return_dict=False, add_pooling_layer=False)
    assert tup[1] is None and len(tup) == 3


def test_opt_question_answering_tuple_skips_the_cache_slot():
    """upstream: (start, end) + OPTModel's tuple[2:]; without a cache that slot is the hidden states."""
    m = model("opt", "OPTForQuestionAnswering")
    args = inputs(m, labels=False)
    with_cache = m(**args, use_cache=True, return_dict=False)
    obj = m(**args, use_cache=False)
    no_cache = m(**args, use_cache=False, return_dict=False)
    assert same(with_cache[2:], (obj.hidden_states, obj.attentions))
    assert same(no_cache, (obj.start_logits, obj.end_logits, obj.attentions))


def test_led_tuple_appends_a_given_encoder_tuple_as_it_is():
    m = model("led", "LEDModel")
    states = np.random.default_rng(1).normal(size=(2, 5, 8))
    extra = np.arange(3.0)
    tup = m(decoder_input_ids=IDS[:, :3], encoder_outputs=(states, extra), use_cache=False, return_dict=False)
    assert len(tup) == 3 and tup[1] is states and tup[2] is extra
    encoder = m.forward_fn.__globals__["led_encoder"](m.params, m.config, IDS)
    with pytest.raises(TypeError, match="encoder_outputs"):
        m(decoder_input_ids=IDS[:, :3], encoder_outputs=encoder, return_dict=False)
    assert m(decoder_input_ids=IDS[:, :3], encoder_outputs=encoder).encoder_last_hidden_state is encoder.last_hidden_state


@pytest.mark.parametrize("fam, architecture", [("opt", "OPTForCausalLM"), ("nezha", "NezhaForMaskedLM"),
                                               ("led", "LEDForConditionalGeneration"), ("xglm", "XGLMModel")])
def test_config_return_dict_and_torchscript_give_tuples(fam, architecture):
    """PretrainedConfig.use_return_dict = return_dict and not torchscript; the call's return_dict wins."""
    for changes, tuples in [({}, False), ({"return_dict": False}, True), ({"torchscript": True}, True),
                            ({"return_dict": True, "torchscript": False}, False)]:
        m = model(fam, architecture, **changes)
        assert isinstance(m(IDS), tuple) == tuples, changes
        assert isinstance(m(IDS, return_dict=True), ModelOutput)
        assert isinstance(m(IDS, return_dict=False), tuple)
    with pytest.raises(ValueError, match="return_dict"):
        use_return_dict(model(fam, architecture, return_dict="no").config)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("fam, architecture", CLASSES)
def test_unknown_keywords_and_bad_return_dict_are_refused(fam, architecture):
    m = model(fam, architecture)
    with pytest.raises(TypeError, match="not_an_argument"):
        m(IDS, not_an_argument=1)
    with pytest.raises(TypeError, match="not_an_argument"):
        m.forward_fn(m.params, m.config, IDS, not_an_argument=1)
    for bad in ("False", 0.0, [False]):
        with pytest.raises(ValueError, match="return_dict"):
            m(inputs(m, labels=False)["input_ids"], return_dict=bad)


@pytest.mark.parametrize("fam", ["opt", "xglm", "led"])
def test_pruned_heads_refused_where_upstream_has_no_prune_heads(fam):
    with pytest.raises(ValueError, match="pruned_heads.*_prune_heads"):
        config_from_dict({"model_type": fam, **CONFIGS[fam], "pruned_heads": {"0": [1]}})
    assert config_from_dict({"model_type": fam, **CONFIGS[fam], "pruned_heads": {}})  # upstream: nothing to prune


@pytest.mark.parametrize("pruned, match", [({"2": [0]}, "layer '2'"), ({"-1": [0]}, "layer '-1'"),
                                           ({"x": [0]}, "layer 'x'"), ({"0": [2]}, r"heads among 0\.\.1"),
                                           ({"0": [-1]}, r"heads among"), ({"0": 1}, "heads among"),
                                           ({"0": [True]}, "heads among"), ([0], "layer -> list")])
def test_malformed_pruned_heads_are_refused(pruned, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict({"model_type": "nezha", **CONFIGS["nezha"], "pruned_heads": pruned})


# ---------------------------------------------------------------- pruned NEZHA


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 4), st.integers(1, 3), st.data())
def test_pruned_parameter_shapes(heads, layers, data):
    """Layer i keeps H - |pruned_i| heads of size D / H: q/k/v [(H - n) d, D], output.dense [D, (H - n) d]."""
    pruned = data.draw(st.dictionaries(st.integers(0, layers - 1), st.lists(st.integers(0, heads - 1)), max_size=layers))
    cfg = config_from_dict({"model_type": "nezha", **CONFIGS["nezha"], "hidden_size": 4 * heads,
                            "num_attention_heads": heads, "num_hidden_layers": layers, "add_cross_attention": True,
                            "is_decoder": True, "pruned_heads": {str(k): v for k, v in pruned.items()}})
    shapes = family("nezha").param_shapes(cfg, "NezhaModel")
    for i in range(layers):
        kept = 4 * (heads - len(set(pruned.get(i, []))))
        assert layer_heads(cfg)[i] == kept // 4
        for name in ("query", "key", "value"):
            assert shapes[f"encoder.layer.{i}.attention.self.{name}.weight"] == (kept, 4 * heads)
            assert shapes[f"encoder.layer.{i}.attention.self.{name}.bias"] == (kept,)
            assert shapes[f"encoder.layer.{i}.crossattention.self.{name}.weight"] == (4 * heads, 4 * heads)
        assert shapes[f"encoder.layer.{i}.attention.output.dense.weight"] == (4 * heads, kept)


def test_pruned_nezha_equals_the_unpruned_model_with_those_heads_masked():
    """Mathematics: pruning head h removes its rows of q/k/v and its columns of output.dense, which is what a
    head mask of 0 on h does (the head's context is zero either way)."""
    full = model("nezha", "NezhaModel", num_attention_heads=4)
    pruned_heads = {0: [1, 3], 1: [0]}
    pruned = model("nezha", "NezhaModel", num_attention_heads=4, pruned_heads={"0": [1, 3], "1": [0]})
    d = 2
    for name, value in full.params.items():
        layer = name.split(".")[2] if name.startswith("encoder.layer.") else None
        keep = [h for h in range(4) if h not in pruned_heads.get(int(layer), [])] if layer is not None else None
        rows = np.concatenate([np.arange(h * d, (h + 1) * d) for h in keep]) if keep else None
        if ".attention.self." in name:
            pruned.params[name] = value[rows]
        elif ".attention.output.dense.weight" in name:
            pruned.params[name] = value[:, rows]
        else:
            pruned.params[name] = value
    mask = np.ones((2, 4))
    for layer, heads in pruned_heads.items():
        mask[layer, heads] = 0
    ours = pruned(IDS, output_hidden_states=True)
    expected = full(IDS, head_mask=mask, output_hidden_states=True)
    for a, b in zip(ours.hidden_states, expected.hidden_states):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.pooler_output, expected.pooler_output, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="head_mask"):  # 2 and 3 heads left: no row broadcasts to both
        pruned(IDS, head_mask=np.ones((2, 4)))
    assert pruned(IDS, head_mask=np.ones((2, 1))).last_hidden_state.shape == (2, 5, 8)


def test_fully_pruned_layer_is_layer_norm_of_bias_plus_input():
    m = model("nezha", "NezhaModel", num_hidden_layers=1, pruned_heads={"0": [0, 1]})
    out = m(IDS, output_attentions=True)
    assert out.attentions[0].shape == (2, 0, 5, 5)


def pruned_golden_cases():  # golden/capture_pruned.py: NEZHA checkpoints saved by upstream after prune_heads
    for entry in json.loads((GOLDEN / "pruned" / "index.json").read_text()):
        directory = GOLDEN / "pruned" / entry["checkpoint"]
        spec = json.loads((directory / "cases.json").read_text())
        tensors = load_file(str(directory / "cases.safetensors"))
        for case in spec["cases"]:
            yield GoldenCase("pruned", entry["checkpoint"], spec["architecture"], case["name"], case["steps"],
                             case.get("note", ""), tensors)


PRUNED_GOLDEN = list(pruned_golden_cases())


def test_pruned_golden_present():
    assert len(PRUNED_GOLDEN) >= 19, "regenerate with python golden/capture_pruned.py"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PRUNED_GOLDEN, ids=lambda c: c.id)
def test_pruned_golden(case, dtype, load_model):
    """Upstream's outputs of its pruned checkpoints (one layer without any head), every field, float32 and float64."""
    problems = run_case(load_model, case, dtype)
    assert not problems, "\n".join(problems)
