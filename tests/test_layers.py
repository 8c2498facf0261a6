"""refimpl.layers.sub keeps the parameter views it makes of a Params (a decoding step would otherwise scan
every key of the model once per layer); a change to the Params must make it forget them."""
import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl.layers import Params, sub


def params():
    return Params({"a.x": np.zeros(2), "a.y": np.ones(2), "b.x": np.full(2, 5.0)})


def test_a_view_is_made_once():
    p = params()
    assert sub(p, "a") is sub(p, "a")
    assert sorted(sub(p, "a")) == ["x", "y"] and sub(p, "a").path == "a"
    assert sub(sub(p, "a"), "x") == {}  # a view of a view: nothing below a leaf


CHANGES = {
    "set a new key": lambda p: p.__setitem__("a.z", np.full(2, 7.0)),
    "replace a value": lambda p: p.__setitem__("a.x", np.full(2, 7.0)),
    "delete": lambda p: p.__delitem__("a.y"),
    "pop": lambda p: p.pop("a.y"),
    "popitem": lambda p: p.popitem(),
    "clear": lambda p: p.clear(),
    "update": lambda p: p.update({"a.x": np.full(2, 7.0)}),
    "setdefault": lambda p: p.setdefault("a.z", np.full(2, 7.0)),
    "|=": lambda p: p.__ior__({"a.z": np.full(2, 7.0)}),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_to_the_params_is_seen_by_the_next_view(change):
    p = params()
    before = sub(p, "a")
    CHANGES[change](p)
    after = sub(p, "a")
    expected = {k[2:]: v for k, v in p.items() if k.startswith("a.")}  # the view, made from scratch
    assert sorted(after) == sorted(expected), change
    for key, value in expected.items():
        assert after[key] is value, f"{change}: view holds a stale {key}"
    assert after is not before, f"{change}: the old view was kept"


def test_a_model_uses_a_weight_replaced_after_a_forward():
    """Replace a weight of a loaded model between two calls: the second call must run the new weight (the
    same result as the functional forward on a plain dict, which keeps no views)."""
    model = refimpl.from_pretrained(GOLDEN / "opt" / "nobias-noaffine-OPTModel", dtype="float64")
    ids = np.array([[0, 5, 9, 2]])
    first = model(input_ids=ids).last_hidden_state
    key = "decoder.layers.0.fc1.weight"
    model.params[key] = model.params[key] * 2
    second = model(input_ids=ids).last_hidden_state
    plain = model.forward_fn(dict(model.params), model.config, input_ids=ids).last_hidden_state
    assert not np.array_equal(first, second), "the replaced weight changed nothing"
    assert np.array_equal(second, plain), f"max |diff| {np.abs(second - plain).max():.3e}"
