"""Checks the mutation runs found untested: labels outside the vocabulary in seq2seq scoring, num_labels=1
(upstream's PretrainedConfig accepts it), the messages naming a wrong input's dimensions and a wrong
cross-attention cache array, and dump_torch's refusal of inputs that are not a mapping."""
import numpy as np
import pytest

import refimpl
from golden import GOLDEN
from refimpl import inputs
from refimpl.config import BaseConfig
from refimpl.scoring import seq2seq_token_logprobs


@pytest.mark.parametrize("label", [40, 41, 1000])
def test_seq2seq_scoring_refuses_labels_outside_the_vocabulary(label):
    """The checkpoint's vocabulary holds ids 0 .. 40: label 40 is scored, 41 and beyond are refused."""
    model = refimpl.from_pretrained(GOLDEN / "led/windows-8-4-8-LEDForConditionalGeneration", dtype="float64")
    assert model.config.vocab_size == 41
    source, labels = np.full((1, 6), 5), np.array([[4, 7, label, -100]])
    if label < 41:
        assert np.all(np.isfinite(seq2seq_token_logprobs(model, source, labels)))
    else:
        with pytest.raises(ValueError, match="labels"):
            seq2seq_token_logprobs(model, source, labels)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_num_labels_form_as_upstream(n):
    """PretrainedConfig(num_labels=n) gives id2label {i: 'LABEL_i'}, n = 1 (a regression head) included."""
    pytest.importorskip("torch")
    from transformers import PretrainedConfig

    expected = PretrainedConfig(num_labels=n).id2label
    cfg = BaseConfig.from_dict({"num_labels": n})
    assert cfg.num_labels == n
    assert {int(k): v for k, v in cfg.id2label.items()} == expected


def test_wrong_dimensions_message_names_batch_and_sequence_only_for_two():
    with pytest.raises(ValueError, match=r"must have 2 dimensions \(batch, sequence\), got shape \(3,\)"):
        inputs.ids(np.zeros(3, int))
    with pytest.raises(ValueError, match=r"must have 3 dimensions, got shape \(2, 2\)"):
        inputs.ids(np.zeros((2, 2), int), ndim=3)


@pytest.mark.parametrize("j, word", [(0, "self-attention key"), (1, "self-attention value"),
                                     (2, "cross-attention key"), (3, "cross-attention value")])
def test_wrong_cache_array_is_named(j, word):
    good = [np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 5, 4)), np.zeros((1, 2, 5, 4))]
    layer = list(good)
    layer[j] = np.zeros((1, 2, 3 if j < 2 else 5, 7))  # a wrong head size
    with pytest.raises(ValueError, match=rf"past_key_values\[0\]\[{j}\] \({word}\)"):
        inputs.past_length((tuple(layer),), 1, 1, 2, 4, arrays=(4,))


def test_dump_torch_refuses_inputs_that_are_not_a_mapping():
    torch = pytest.importorskip("torch")
    from refimpl.dump.torch_dump import dump_torch

    for bad in ([1, 2], np.zeros((1, 2)), "input_ids"):
        with pytest.raises(TypeError, match="inputs must be a mapping"):
            dump_torch(torch.nn.Linear(2, 2), bad)
