"""refimpl.dump's adapters in this environment, on small models whose every output is known by construction:
dump_torch on a two-layer torch module; dump_onnx on a hand-built ONNX graph with exporter-style node scopes;
dump_flax and dump_tf on stand-ins for a transformers Flax/Keras model (the frameworks' own objects need
numpy<2: the real twins are checked in test_dump_twins_live.py) -- the argument checks, the positions, the
capture (first call, first output), the names and the restored Keras calls; and common's helpers."""
import sys
import types

import numpy as np
import pytest

from refimpl.dump import common, dump_flax, dump_onnx, dump_tf, save_dump
from refimpl.dump.flax_dump import flax_arguments, opt_positions, xglm_positions
from refimpl.dump.onnx_dump import base_of, module_outputs, node_scope, upstream_name
from refimpl.dump.tables import FLAX, TF, NameMap
from refimpl.dump.tf_dump import named_layers, wrap_call

IDS = np.array([[1, 5, 6], [7, 8, 9]])
MASK = np.array([[0, 1, 1], [1, 1, 1]])


class Config:
    def __init__(self, **fields):
        vars(self).update(fields)


# ------------------------------------------------------------------ common


def test_first_array_of_each_kind_of_output():
    class Output:  # a ModelOutput: to_tuple() skips None fields
        def to_tuple(self):
            return (np.array([1.5], np.float32), np.array([2.0]))
    assert common.first_array(Output()).tolist() == [1.5] and common.first_array(Output()).dtype == np.float64
    assert common.first_array([np.array([[3]], np.float16)]).dtype == np.float64
    assert common.first_array(()) is None and common.first_array([]) is None and common.first_array(None) is None
    source = np.array([1.0, 2.0])
    copy = common.first_array(source)
    copy[0] = 9.0
    assert source[0] == 1.0  # a copy
    assert common.first_array(np.array([True])) is None and common.first_array((np.array([1]),)) is None


def test_to_upstream_rules_in_order():
    table = NameMap(drop=(r"dropout$",), rename=((r"^a\.", "", "base"), (r"x", "y", None), (r"^y", "z", "flag")),
                    layout=((r"rows$", "rows", None), (r"tbd$", "TBD", "flag")), alias=(("lm", "", "head"),))
    raw = {"a.x": np.ones(1), "a.dropout": np.ones(1), "a.rows": np.ones((2, 3, 4)), "a.tbd": np.ones((2, 3, 4)),
           "none": None, "x": np.zeros(1), "": np.full(1, 5.0)}
    base = common.to_upstream(raw, table, common.model_context("TFXModel", Config(flag=False)))
    assert list(base) == ["y", "rows", "tbd", ""]   # renamed; a name seen twice keeps its first value
    assert base["y"].tolist() == [1.0] and base["rows"].shape == (6, 4) and base["tbd"].shape == (2, 3, 4)
    head = common.to_upstream(raw, table, common.model_context("TFXForCausalLM", Config(flag=True)))
    assert list(head) == ["a.y", "a.rows", "a.tbd", "z", "", "lm"]  # "^y" meets no "a.y"
    assert head["a.tbd"].shape == (3, 2, 4) and head["lm"] is head[""]
    assert head["z"].tolist() == [0.0]
    assert common.to_upstream({"lm": np.ones(1), "": np.zeros(1)}, table,
                              common.model_context("XForCausalLM", None))["lm"].tolist() == [1.0]  # captured: kept
    assert common.model_context("XModel", None) == {"head": False, "base": True}
    assert common.holds(None, {}) and not common.holds("flag", {}) and common.holds("flag", {"flag": 1})


def test_change_layout_keeps_what_is_already_upstreams():
    value = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(common.change_layout(value, "rows", "n"), value.reshape(6, 4))
    np.testing.assert_array_equal(common.change_layout(value, "TBD", "n"), value.transpose(1, 0, 2))
    assert common.change_layout(value, "TBD", "n").flags["C_CONTIGUOUS"]
    flat = value.reshape(6, 4)
    assert common.change_layout(flat, "rows", "n") is flat and common.change_layout(flat, "TBD", "n") is flat
    with pytest.raises(ValueError, match=r"layer\.x: unknown layout change 'rowz' \(expected 'rows' or 'TBD'\)"):
        common.change_layout(flat, "rowz", "layer.x")


def test_family_of_names_the_model_type():
    assert common.family_of(Config(model_type="opt"), FLAX, "dump_flax") == "opt"
    with pytest.raises(ValueError, match="dump_flax knows the families opt, xglm; this model's config has "
                                         "model_type 'led'"):
        common.family_of(Config(model_type="led"), FLAX, "dump_flax")
    with pytest.raises(ValueError, match="model_type None"):
        common.family_of(None, TF, "dump_tf")


def test_save_dump_as_safetensors_and_npz(tmp_path):
    from safetensors.numpy import load_file
    dump = {"": np.arange(6.0).reshape(2, 3).T, "a": np.ones(2)}  # a transposed (non-contiguous) array too
    save_dump(dump, tmp_path / "d.safetensors")
    loaded = load_file(str(tmp_path / "d.safetensors"))
    assert set(loaded) == {"", "a"} and np.array_equal(loaded[""], dump[""])
    save_dump(dump, tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as npz:
        assert np.array_equal(npz[""], dump[""]) and np.array_equal(npz["a"], dump["a"])
    assert common.finish(dump, None) is dump and not (tmp_path / "none").exists()


# ------------------------------------------------------------------ Flax: arguments and positions


def test_flax_positions_as_transformers_builds_them():
    # FlaxOPTForCausalLM: (cumsum(mask) * mask) - 1 (its module adds 2); FlaxXGLM: arange, padding ignored
    assert opt_positions(MASK).tolist() == [[-1, 0, 1], [0, 1, 2]]
    assert opt_positions(np.array([[1, 1, 0, 0]])).tolist() == [[0, 1, -1, -1]]
    assert xglm_positions(MASK).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_flax_arguments():
    args = flax_arguments({"input_ids": IDS, "attention_mask": MASK}, "opt")
    assert list(args) == ["input_ids", "attention_mask", "position_ids"]
    assert args["position_ids"].tolist() == [[-1, 0, 1], [0, 1, 2]]
    assert flax_arguments({"input_ids": IDS}, "opt")["attention_mask"].tolist() == np.ones_like(IDS).tolist()
    assert flax_arguments({"input_ids": IDS}, "opt")["position_ids"].tolist() == [[0, 1, 2]] * 2
    xglm = flax_arguments({"input_ids": IDS, "attention_mask": MASK}, "xglm")
    assert xglm["position_ids"].tolist() == [[0, 1, 2]] * 2
    given = flax_arguments({"input_ids": IDS, "position_ids": [[4, 5, 6], [7, 8, 9]]}, "opt")["position_ids"]
    assert given.tolist() == [[4, 5, 6], [7, 8, 9]]
    assert flax_arguments({"input_ids": IDS.astype(np.uint8)}, "xglm")["input_ids"].dtype == np.uint8


@pytest.mark.parametrize("inputs, message", [
    ([IDS], "inputs must be a mapping with 'input_ids'"),
    ({"attention_mask": MASK}, "inputs must be a mapping with 'input_ids'"),
    ({"input_ids": IDS, "head_mask": 1, "labels": 2}, r"unsupported argument\(s\) head_mask, labels \(expected "
                                                      r"input_ids, attention_mask, position_ids\)"),
    ({"input_ids": IDS[0]}, r"input_ids must be integer \[B, T\], got int64 \(3,\)"),
    ({"input_ids": IDS.astype(float)}, r"input_ids must be integer \[B, T\], got float64 \(2, 3\)"),
    ({"input_ids": IDS, "attention_mask": MASK[:, :2]}, r"attention_mask \(2, 2\) must have input_ids' shape "
                                                          r"\(2, 3\)"),
])
def test_flax_arguments_refused(inputs, message):
    with pytest.raises(ValueError, match="dump_flax: " + message):
        flax_arguments(inputs, "opt")


# ------------------------------------------------------------------ Flax and Keras stand-ins


def flatten_dict(tree, prefix=()):  # flax.traverse_util.flatten_dict: nested dicts -> {path tuple: leaf}
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_dict(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


@pytest.fixture
def fake_flax(monkeypatch):
    jax, jnp = types.ModuleType("jax"), types.ModuleType("jax.numpy")
    jnp.asarray = lambda value, dtype=None: np.asarray(value, dtype={"i4": np.int32}.get(dtype, dtype))
    flax, traverse = types.ModuleType("flax"), types.ModuleType("flax.traverse_util")
    traverse.flatten_dict = flatten_dict
    for name, module in {"jax": jax, "jax.numpy": jnp, "flax": flax, "flax.traverse_util": traverse}.items():
        monkeypatch.setitem(sys.modules, name, module)


class FlaxModule:
    """What model.module.apply(..., capture_intermediates=True) returns: (output, {"intermediates": {path...:
    {"__call__": (one output per call)}}}); records its arguments."""

    def __init__(self):
        self.seen = None

    def apply(self, variables, **kwargs):
        self.seen = (variables, kwargs)
        ids = kwargs["input_ids"].astype(np.float64)
        logits = ids[..., None] * np.ones(4)
        inter = {"model": {"decoder": {"layers": {"0": {
            "fc1": {"__call__": ((ids + 1, "cache"), (ids + 100,))},                # first call, first output
            "dropout": {"__call__": (ids,)}}},
            "embed_tokens": {"__call__": (ids + 2,), "other": (ids,)}}},              # only __call__ counts
            "__call__": (logits,)}
        return logits, {"intermediates": inter}


class FlaxOPTForCausalLM:
    def __init__(self):
        self.module, self.params, self.config = FlaxModule(), {"w": 1}, Config(model_type="opt")


def test_dump_flax_on_a_stand_in(fake_flax, tmp_path):
    model = FlaxOPTForCausalLM()
    dump = dump_flax(model, {"input_ids": IDS, "attention_mask": MASK}, tmp_path / "d.npz")
    assert list(dump) == ["model.decoder.layers.0.fc1", "model.decoder.embed_tokens", "", "lm_head"]
    np.testing.assert_array_equal(dump["model.decoder.layers.0.fc1"], IDS + 1)
    np.testing.assert_array_equal(dump["model.decoder.embed_tokens"], IDS + 2)
    assert dump["lm_head"] is dump[""] and dump[""].shape == (2, 3, 4)
    variables, kwargs = model.module.seen
    assert variables == {"params": {"w": 1}}
    assert kwargs["position_ids"].tolist() == [[-1, 0, 1], [0, 1, 2]] and kwargs["input_ids"].dtype == np.int32
    assert kwargs["attention_mask"].tolist() == MASK.tolist()
    assert (kwargs["output_attentions"], kwargs["output_hidden_states"], kwargs["return_dict"],
            kwargs["deterministic"], kwargs["capture_intermediates"], kwargs["mutable"]) == \
        (False, False, True, True, True, ["intermediates"])
    with np.load(tmp_path / "d.npz") as saved:
        assert sorted(saved.files) == sorted(dump)
    dump_flax(model, {"input_ids": IDS}, params={"w": 2})
    assert model.module.seen[0] == {"params": {"w": 2}}
    with pytest.raises(TypeError, match="dump_flax needs a transformers Flax model .* got dict"):
        dump_flax({}, {"input_ids": IDS})
    bare = FlaxOPTForCausalLM()
    del bare.params
    with pytest.raises(TypeError, match="got FlaxOPTForCausalLM"):
        dump_flax(bare, {"input_ids": IDS})
    bare = FlaxOPTForCausalLM()
    bare.config = Config(model_type="bert")
    with pytest.raises(ValueError, match="model_type 'bert'"):
        dump_flax(bare, {"input_ids": IDS})


class Layer:
    """A Keras layer's surface that dump_tf uses: name, call, _flatten_layers (direct children, in order)."""

    def __init__(self, name, children=(), add=0.0):
        self.name, self.children, self.add = name, list(children), add

    def _flatten_layers(self, recursive=True, include_self=True):  # Keras 2's defaults
        if include_self:
            yield self
        for child in self.children:
            if recursive:
                yield from child._flatten_layers(recursive=True, include_self=True)
            else:
                yield child

    def call(self, x, **_):
        for child in self.children:
            x = child.call(x)[0]
        return (x + self.add, "second output")


class TFOPTForCausalLM(Layer):
    def __init__(self):
        self.shared = Layer("drop_me_dropout")
        fc1 = Layer("fc1", add=1.0)
        layer = Layer("layers.0", [fc1, self.shared, Layer("fc1_again", [fc1], add=10.0)])
        super().__init__("root", [Layer("model", [Layer("decoder", [layer])])])
        self.config = Config(model_type="opt", do_layer_norm_before=True)

    def __call__(self, input_ids, attention_mask=None, training=None):
        assert training is False and isinstance(input_ids, np.ndarray)
        return self.call(input_ids.astype(np.float64))[0] * np.ones(2)


@pytest.fixture
def fake_tf(monkeypatch):
    tf = types.ModuleType("tensorflow")
    tf.keras = types.SimpleNamespace(layers=types.SimpleNamespace(Layer=Layer))
    monkeypatch.setitem(sys.modules, "tensorflow", tf)


def test_named_layers_each_layer_once_under_its_first_path():
    model = TFOPTForCausalLM()
    names = [name for name, _ in named_layers(model)]
    assert names == ["", "model", "model.decoder", "model.decoder.layers.0", "model.decoder.layers.0.fc1",
                     "model.decoder.layers.0.drop_me_dropout", "model.decoder.layers.0.fc1_again"]
    assert named_layers(model)[0][1] is model


def test_wrap_call_records_the_first_call_and_an_input():
    layer, raw = Layer("x", add=1.0), {}
    wrap_call(layer, "x", raw, "before_x")
    assert layer.call(np.array([1.0]))[0].tolist() == [2.0]
    layer.call(np.array([5.0]))
    assert raw["x"].tolist() == [2.0] and raw["before_x"].tolist() == [1.0]
    other, raw = Layer("y", add=1.0), {}
    wrap_call(other, "y", raw, None)
    other.call(x=np.array([3.0]))  # no positional argument: no input to record
    assert list(raw) == ["y"] and raw["y"].tolist() == [4.0]


def test_dump_tf_on_a_stand_in(fake_tf, tmp_path):
    model = TFOPTForCausalLM()
    dump = dump_tf(model, {"input_ids": [[[1], [2], [3]]]}, tmp_path / "d.safetensors")  # [B, T, X]
    assert list(dump) == ["model.decoder.layers.0.fc1", "model.decoder.layers.0.fc1_again", "model.decoder.layers.0",
                          "model.decoder", "", "lm_head"]
    assert dump["model.decoder.layers.0.fc1"].tolist() == [[2.0], [3.0], [4.0]]  # upstream's [B*T, X] rows
    assert dump["model.decoder.layers.0.fc1_again"].tolist() == [[[13.0], [14.0], [15.0]]]
    assert dump[""].tolist() == [[[13.0], [14.0], [15.0]]] and dump["lm_head"] is dump[""]  # the root call's output
    assert (tmp_path / "d.safetensors").is_file()
    assert not [name for name, layer in named_layers(model) if "call" in vars(layer)], "a wrapped call left behind"
    with pytest.raises(TypeError, match="dump_tf needs a transformers TF \\(Keras\\) model, got dict"):
        dump_tf({}, {"input_ids": IDS})
    with pytest.raises(TypeError, match="inputs must be a mapping of the call's keyword arguments, got list"):
        dump_tf(model, [IDS])
    model.config = Config(model_type="nezha")
    with pytest.raises(ValueError, match="dump_tf knows the families led, opt, xglm; .* 'nezha'"):
        dump_tf(model, {"input_ids": IDS})


def test_dump_tf_restores_the_calls_when_the_forward_fails(fake_tf):
    model = TFOPTForCausalLM()
    with pytest.raises(TypeError):
        dump_tf(model, {"input_ids": IDS, "nonsense": 1})
    assert not [name for name, layer in named_layers(model) if "call" in vars(layer)]


# ------------------------------------------------------------------ torch


def test_dump_torch_first_call_first_tensor_and_conversions(tmp_path):
    torch = pytest.importorskip("torch")
    from refimpl.dump import dump_torch
    from refimpl.dump.torch_dump import first_tensor

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(2, 2, bias=False).double()
            torch.nn.init.eye_(self.inner.weight)
            self.seen = None

        def forward(self, x, ids, flags, scale=2):
            self.seen = (x.dtype, ids.dtype, flags.dtype, scale)
            first = self.inner(x)
            self.inner(x * 10)  # a second call: not kept
            return (first * scale, None)

    net = Net()
    x = np.array([[1.0, 2.0]], np.float32)
    dump = dump_torch(net, {"x": x, "ids": np.array([1], np.int32), "flags": np.array([True]), "scale": 3},
                      tmp_path / "t.npz")
    assert net.seen == (torch.float64, torch.int64, torch.bool, 3)
    assert list(dump) == ["inner", ""]
    assert dump["inner"].tolist() == [[1.0, 2.0]] and dump[""].tolist() == [[3.0, 6.0]]
    assert dump[""].dtype == np.float64 and (tmp_path / "t.npz").is_file()
    assert not net.inner._forward_hooks and not net._forward_hooks  # the hooks are removed
    dump = dump_torch(net, {"x": torch.ones(1, 2, dtype=torch.float64), "ids": torch.ones(1, dtype=torch.int32),
                            "flags": torch.ones(1, dtype=torch.bool)})
    assert net.seen[1] == torch.int32 and dump[""].tolist() == [[2.0, 2.0]]  # tensors are passed as they are
    assert first_tensor([]) is None and first_tensor(("a",)) is None and first_tensor(None) is None
    t = torch.ones(1)
    assert first_tensor([t, 2]) is t and first_tensor(t) is t

    class Output:  # a ModelOutput: to_tuple() skips None fields
        def to_tuple(self):
            return (t, None)
    assert first_tensor(Output()) is t
    with pytest.raises(TypeError, match="dump_torch needs a torch.nn.Module, got dict"):
        dump_torch({}, {})
    with pytest.raises(TypeError, match="inputs must be a mapping of the forward's keyword arguments, got list"):
        dump_torch(net, [x])


# ------------------------------------------------------------------ ONNX


def opt_graph(with_prefix=True):
    """x [1, 2] -> /decoder/layers.0/self_attn/Mul -> /decoder/layers.0/fc1/Add -> /lm_head/Mul -> logits;
    an int64 shape tensor made inside fc1 and used outside (not a module output: not a float)."""
    onnx = pytest.importorskip("onnx")
    helper, T = onnx.helper, onnx.TensorProto
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"], name="/decoder/layers.0/self_attn/Mul"),
             helper.make_node("Add", ["a", "one"], ["b"], name="/decoder/layers.0/fc1/Add"),
             helper.make_node("Shape", ["b"], ["shape"], name="/decoder/layers.0/fc1/Shape"),
             helper.make_node("Reshape", ["b", "shape"], ["c"], name="/decoder/Reshape"),
             helper.make_node("Mul", ["c", "two"], ["logits"], name="/lm_head/Mul")]
    prefix = "model.decoder." if with_prefix else ""
    inits = [helper.make_tensor("two", T.FLOAT, [], [2.0]), helper.make_tensor("one", T.FLOAT, [], [1.0]),
             helper.make_tensor(prefix + "w", T.FLOAT, [], [0.0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("logits", T.FLOAT, [1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dump_onnx_on_a_hand_built_graph(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    onnx.save(opt_graph(), tmp_path / "m.onnx")
    x = np.array([[1.0, 3.0]])
    for level in ("none", "all"):
        dump = dump_onnx(tmp_path / "m.onnx", {"x": x}, tmp_path / "d.safetensors", optimization=level)
        assert dump[""].tolist() == [[6.0, 14.0]] and dump["lm_head"].tolist() == [[6.0, 14.0]]
        assert dump["model.decoder.layers.0.self_attn"].tolist() == [[2.0, 6.0]]
        assert dump["model.decoder.layers.0.fc1"].tolist() == [[3.0, 7.0]]
        assert dump["model.decoder.layers.0"].tolist() == [[3.0, 7.0]]
        assert dump["model.decoder"].tolist() == [[3.0, 7.0]] and dump[""].dtype == np.float64
    assert set(dump) == {"", "model.decoder.layers.0.self_attn", "model.decoder.layers.0.fc1",
                         "model.decoder.layers.0", "model.decoder", "lm_head"}
    onnx.save(opt_graph(with_prefix=False), tmp_path / "bare.onnx")
    assert "decoder.layers.0.fc1" in dump_onnx(tmp_path / "bare.onnx", {"x": x})
    with pytest.raises(ValueError, match="optimization must be one of none, all, got 'some'"):
        dump_onnx(tmp_path / "m.onnx", {"x": x}, optimization="some")
    with pytest.raises(ValueError, match="missing.onnx is not a file"):
        dump_onnx(tmp_path / "missing.onnx", {"x": x})
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not onnx")
    with pytest.raises(ValueError, match="junk.onnx is not a readable ONNX model"):
        dump_onnx(tmp_path / "junk.onnx", {"x": x})
    with pytest.raises(ValueError, match="the ONNX graph's inputs are x; missing: x; not inputs of this graph: y"):
        dump_onnx(tmp_path / "m.onnx", {"y": x})
    with pytest.raises(TypeError, match="inputs must be a mapping of the graph's input arrays, got list"):
        dump_onnx(tmp_path / "m.onnx", [x])
    with pytest.raises(ValueError, match="ONNX Runtime could not run the graph on these inputs"):
        dump_onnx(tmp_path / "m.onnx", {"x": np.ones((2, 3, 4))})


def test_onnx_scopes_and_names():
    assert node_scope("/decoder/layers.0/fc1/Gemm") == ["decoder", "layers.0", "fc1"]
    assert node_scope("Gemm_12") == [] and node_scope("/Add") == []
    assert upstream_name("decoder.layers.0", "opt", "model") == "model.decoder.layers.0"
    assert upstream_name("lm_head", "opt", "model") == "lm_head"
    assert upstream_name("decoder.layers.0", "opt", "") == "decoder.layers.0"
    assert upstream_name("layers.1", "xglm", "model") == "model.layers.1"
    graph = opt_graph().graph
    assert base_of(graph) == ("opt", "model")
    assert base_of(opt_graph(with_prefix=False).graph) == ("opt", "")
    for node in graph.node:  # scopes that already carry the prefix get none added
        node.name = node.name.replace("/decoder", "/model/decoder", 1)
    assert base_of(graph) == ("opt", "")
    for i, node in enumerate(graph.node):
        node.name = f"/block{i}/Op"
    with pytest.raises(ValueError, match="no module scopes of OPT, XGLM, LED or NEZHA"):
        base_of(graph)


def test_module_outputs_the_last_float_tensor_used_outside():
    onnx = pytest.importorskip("onnx")
    model = opt_graph()
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    found = module_outputs(model.graph, inferred)
    assert found == {"decoder.layers.0.self_attn": "a", "decoder.layers.0.fc1": "b", "decoder.layers.0": "b",
                     "decoder": "c", "lm_head": "logits"}


@pytest.mark.parametrize("to", ["DOUBLE", "FLOAT16", "BFLOAT16", "FLOAT"])
def test_module_outputs_of_every_float_type_and_not_integers(to):
    onnx = pytest.importorskip("onnx")
    helper, T = onnx.helper, onnx.TensorProto
    nodes = [helper.make_node("Cast", ["x"], ["made"], to=getattr(T, to), name="/decoder/layers.0/fc1/Cast"),
             helper.make_node("Cast", ["x"], ["ints"], to=T.INT64, name="/decoder/layers.0/fc2/Cast"),
             helper.make_node("Cast", ["made"], ["y"], to=T.FLOAT, name="/lm_head/Cast"),
             helper.make_node("Cast", ["ints"], ["z"], to=T.FLOAT, name="/other/Cast")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2]),
                               helper.make_tensor_value_info("z", T.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    found = module_outputs(model.graph, inferred)
    assert found["decoder.layers.0.fc1"] == "made" and "decoder.layers.0.fc2" not in found
    assert found["lm_head"] == "y" and found["other"] == "z"


def names_after(table, names, model_class="XForCausalLM", **config):
    raw = {name: np.ones((1, 2, 3)) for name in names}
    return list(common.to_upstream(raw, table, common.model_context(model_class, Config(**config))))


def test_every_table_drops_renames_and_aliases_as_documented():
    from refimpl.dump.tables import ONNX
    for family in ("opt", "xglm", "led", "nezha"):  # dropout layers and layer collections are no modules upstream
        assert names_after(ONNX[family], ["a.dropout", "a.attn_dropout_1", "a.layers", "layers", "a.layers.0",
                                          "dropout"]) == ["a.layers.0"], family
    assert names_after(ONNX["led"], ["led.encoder.shared", "decoder.shared_1", "led.decoder.shared_2", "encoder.x"]) \
        == ["led.shared", "shared", "encoder.x"]
    assert names_after(FLAX["opt"], ["model", "model.decoder", "model.decoder.dropout", ""]) == \
        ["model.decoder", "", "lm_head"]
    assert names_after(FLAX["xglm"], ["model", "model.layers", ""]) == ["model", "", "lm_head"]
    assert names_after(FLAX["xglm"], ["model", ""], "FlaxXGLMModel") == ["model", ""]
    assert names_after(TF["xglm"], ["model", "model.layers.0", "model.dropout", ""], "TFXGLMModel") == \
        ["", "layers.0"]
    assert names_after(TF["xglm"], ["model", "model.layers.0", ""], "TFXGLMForCausalLM") == \
        ["model", "model.layers.0", "", "lm_head"]
    assert names_after(TF["opt"], ["model", "model.decoder", ""], "TFOPTForCausalLM") == ["model.decoder", "",
                                                                                          "lm_head"]
    assert names_after(TF["led"], ["led", "led.led.shared", "led.encoder", "final_logits_bias", ""],
                       "TFLEDModel") == ["", "shared", "encoder"]  # LEDModel's own names
    assert names_after(TF["led"], ["led", "led.led.shared", "led.encoder", "final_logits_bias", ""],
                       "TFLEDForConditionalGeneration") == ["led", "led.shared", "led.encoder", ""]
    assert dict(TF["led"].inputs) == {"final_logits_bias": "lm_head"}
    rows = common.to_upstream({"model.decoder.layers.1.fc2": np.ones((2, 3, 4)),
                               "model.decoder.layers.1.final_layer_norm": np.ones((2, 3, 4))}, TF["opt"],
                              common.model_context("TFOPTForCausalLM", Config(do_layer_norm_before=True)))
    assert [v.shape for v in rows.values()] == [(6, 4), (6, 4)]  # pre-LN OPT: the final_layer_norm on rows too
    led = common.to_upstream({"led.encoder.layers.0.self_attn.longformer_self_attn.query": np.ones((2, 3, 4)),
                              "led.encoder.layers.0.self_attn.longformer_self_attn.value_global": np.ones((2, 3, 4)),
                              "led.encoder.layers.0.self_attn.longformer_self_attn.output": np.ones((2, 3, 4))},
                             TF["led"], common.model_context("TFLEDForConditionalGeneration", Config()))
    assert [v.shape for v in led.values()] == [(3, 2, 4), (3, 2, 4), (2, 3, 4)]


def test_onnx_families_are_told_apart_by_their_scopes():
    import re
    from refimpl.dump.tables import ONNX_BASE
    scopes = {"led": "led.encoder.layers.0.self_attn.longformer_self_attn", "nezha": "nezha.embeddings.word_embeddings",
              "opt": "decoder.layers.3.self_attn", "xglm": "layers.0.self_attn"}
    for family, scope in scopes.items():
        first = next(f for f, (signature, _, _) in ONNX_BASE.items() if re.search(signature, scope))
        assert first == family, (scope, first)
    # upstream's base models' attribute names (LEDModel, NezhaModel, OPTModel, XGLMModel) and children
    assert {f: (p, c) for f, (_, p, c) in ONNX_BASE.items()} == {
        "led": ("led", ("shared", "encoder", "decoder")), "nezha": ("nezha", ("embeddings", "encoder", "pooler")),
        "opt": ("model", ("decoder",)), "xglm": ("model", ("embed_tokens", "embed_positions", "layers", "layer_norm"))}


def test_a_tensor_used_only_deeper_inside_its_own_scope_is_no_output():
    """decoder's output is p (used by lm_head); r is made in decoder and used only inside decoder.layers.0."""
    onnx = pytest.importorskip("onnx")
    helper, T = onnx.helper, onnx.TensorProto
    nodes = [helper.make_node("Mul", ["x", "x"], ["p"], name="/decoder/Mul"),
             helper.make_node("Neg", ["p"], ["y"], name="/lm_head/Neg"),
             helper.make_node("Neg", ["x"], ["r"], name="/decoder/Neg"),
             helper.make_node("Add", ["r", "x"], ["q"], name="/decoder/layers.0/Add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    assert module_outputs(model.graph, inferred) == {"decoder": "p", "lm_head": "y"}


def test_a_tensor_of_unknown_type_is_taken_for_a_float():
    """Shape inference cannot type the output of an op it does not know: such a tensor still counts."""
    onnx = pytest.importorskip("onnx")
    helper, T = onnx.helper, onnx.TensorProto
    nodes = [helper.make_node("Mystery", ["x"], ["t"], name="/decoder/Mystery", domain="custom"),
             helper.make_node("Mystery", ["t"], ["y"], name="/lm_head/Mystery", domain="custom")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    assert "t" not in inferred
    assert module_outputs(model.graph, inferred) == {"decoder": "t", "lm_head": "y"}
