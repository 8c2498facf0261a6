"""The model families' refusals (refimpl/models/*.py): every `raise` reached, its message naming the argument
and the offending value, and the accepted value at each bound. Models are built from their configs with
random weights (the checks run before any number matters); no torch needed."""
import re

import numpy as np
import pytest

from refimpl.modeling import Model
from refimpl.models import family
from refimpl.models.led import LEDConfig, layer_windows
from refimpl.models.nezha import NezhaConfig
from refimpl.models.opt import OPTConfig
from refimpl.models.xglm import XGLMConfig, sinusoid_rows


def build(cfg, architecture, dtype=np.float64, seed=0):
    """A model of `architecture` with random weights of the shapes param_shapes declares."""
    rng = np.random.default_rng(seed)
    shapes = family(cfg.model_type).param_shapes(cfg, architecture)
    params = {name: (rng.normal(size=shape) * 0.5).astype(dtype) for name, shape in shapes.items()}
    return Model(cfg, params, architecture, dtype)


def refused(match, fn, *args, error=ValueError, **kwargs):
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert re.search(match, str(info.value)), f"message {str(info.value)!r} does not match {match!r}"


def small_led(direct=False, **changes):  # direct: the dataclass itself, without config.json's field checks
    base = dict(vocab_size=20, d_model=8, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=6, decoder_ffn_dim=6, attention_window=4,
                max_encoder_position_embeddings=16, max_decoder_position_embeddings=8, pad_token_id=1,
                eos_token_id=2, decoder_start_token_id=2)
    return LEDConfig(**{**base, **changes}) if direct else LEDConfig.from_dict({**base, **changes})


def small_nezha(**changes):
    base = dict(vocab_size=20, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, intermediate_size=6,
                max_position_embeddings=6, max_relative_position=2, type_vocab_size=2)
    return NezhaConfig.from_dict({**base, **changes})


def small_opt(**changes):
    base = dict(vocab_size=20, hidden_size=8, num_attention_heads=2, num_hidden_layers=1, ffn_dim=6,
                max_position_embeddings=5)
    return OPTConfig.from_dict({**base, **changes})


def small_xglm(**changes):
    base = dict(vocab_size=20, d_model=8, attention_heads=2, num_layers=1, ffn_dim=6, max_position_embeddings=6)
    return XGLMConfig.from_dict({**base, **changes})


IDS = np.array([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])  # "<s> ... </s>" rows, one eos each


# ---------------------------------------------------------------- families


def test_family_spec_must_name_its_model_type(monkeypatch):
    import refimpl.models as models

    family.cache_clear()
    monkeypatch.setitem(models.FAMILIES, "opt", "refimpl.models.xglm")
    try:
        refused(r"refimpl\.models\.xglm\.SPEC must be the FamilySpec of 'opt'", family, "opt", error=TypeError)
    finally:
        family.cache_clear()
    monkeypatch.undo()
    assert family("opt").model_type == "opt"


# ---------------------------------------------------------------- LED


@pytest.mark.parametrize("windows, layers, message", [
    ([4], 2, r"one value per encoder layer \(2\), got 1: \[4\]"),
    ([4, 4, 4], 2, r"one value per encoder layer \(2\), got 3: \[4, 4, 4\]"),
    ([4, 5], 2, r"attention_window for layer 1 must be a positive even integer .*got 5"),
    ([0, 4], 2, r"attention_window for layer 0 must be a positive even integer .*got 0"),
    ([-2, 4], 2, r"layer 0 must be a positive even integer .*got -2"),
    ([4, 4.5], 2, r"layer 1 must be a positive even integer .*got 4.5"),
    (3, 2, r"layer 0 must be a positive even integer .*got 3"),
])
def test_led_attention_window_is_checked(windows, layers, message):
    """layer_windows checks a config built directly too (config.json's are checked as they load)."""
    refused(message, layer_windows, small_led(True, attention_window=windows, encoder_layers=layers))


@pytest.mark.parametrize("windows, expected", [(2, [2, 2]), ([8, 2], [8, 2]), ([4.0, 6], [4, 6])])
def test_led_attention_window_accepted(windows, expected):
    got = layer_windows(small_led(True, attention_window=windows))
    assert got == expected and all(type(w) is int for w in got)


def test_led_windows_that_do_not_divide_the_largest():
    model = build(small_led(attention_window=[6, 4]), "LEDModel")
    refused(r"padded to 6 tokens \(a multiple of the largest attention_window 6\), which is not a multiple of "
            r"layer 1's window 4", model, input_ids=IDS, decoder_input_ids=IDS[:, :2])
    # 12 tokens: a multiple of both, accepted
    model(input_ids=np.full((1, 12), 5), decoder_input_ids=np.full((1, 2), 5))


def test_led_encoder_positions_bound():
    model = build(small_led(), "LEDModel")
    model(input_ids=np.full((1, 16), 5), decoder_input_ids=np.full((1, 2), 5))  # 16 = the table: accepted
    refused(r"17 tokens \(padded to 20\) exceed max_encoder_position_embeddings=16", model,
            input_ids=np.full((1, 17), 5), decoder_input_ids=np.full((1, 2), 5))


@pytest.mark.parametrize("name", ["attention_mask", "global_attention_mask", "decoder_attention_mask"])
def test_led_masks_must_be_zero_one(name):
    model = build(small_led(), "LEDModel")
    mask = np.ones(IDS.shape, np.int64)
    mask[1, 2] = 2
    kwargs = {"input_ids": IDS, "decoder_input_ids": IDS, name: mask}
    refused(rf"{name}.* must hold 0/1 values \(1 = attend, 0 = padding\), got \[2\]", model, **kwargs)


def test_led_encoder_outputs_are_checked():
    model = build(small_led(), "LEDModel")
    refused(r"encoder_outputs must be an LEDEncoderBaseModelOutput or a tuple .*got int", model,
            decoder_input_ids=IDS, encoder_outputs=5)
    refused(r"encoder_outputs must be .*got tuple", model, decoder_input_ids=IDS, encoder_outputs=())
    refused(r"pass decoder_input_ids or decoder_inputs_embeds", model, inputs_embeds=np.zeros((2, 5, 8)))
    enc = model(input_ids=IDS, decoder_input_ids=IDS).encoder_last_hidden_state
    # as a tuple it is wrapped; with return_dict=False the tuple is appended to the decoder's as given
    out = model(decoder_input_ids=IDS, encoder_outputs=(enc,), return_dict=False)
    assert len(out) == 3 and out[-1] is enc  # last_hidden_state, past_key_values, the caller's encoder tuple
    from refimpl.models.led import LEDEncoderBaseModelOutput

    refused(r"return_dict=False with encoder_outputs given as LEDEncoderBaseModelOutput", model,
            decoder_input_ids=IDS, encoder_outputs=LEDEncoderBaseModelOutput(enc), return_dict=False, error=TypeError)


def test_led_classifier_pools_at_eos_of_the_same_length():
    model = build(small_led(num_labels=3), "LEDForSequenceClassification")
    refused(r"LEDForSequenceClassification needs input_ids", model, inputs_embeds=np.zeros((2, 5, 8)),
            decoder_input_ids=IDS)
    refused(r"eos positions of input_ids \(length 5\) index the decoder states, which have length 3", model,
            input_ids=IDS, decoder_input_ids=IDS[:, :3])
    refused(r"same number of <eos> tokens \(eos_token_id=2\); got \[1, 2\]", model,
            input_ids=np.array([[0, 5, 6, 7, 2], [0, 2, 9, 2, 1]]))
    refused(r"no <eos> token \(eos_token_id=2\)", model, input_ids=np.array([[0, 5, 6, 7, 8]]))


# ---------------------------------------------------------------- NEZHA


def test_nezha_pooler_needs_its_weights():
    from refimpl.layers import sub
    from refimpl.models.nezha import nezha_model

    model = build(small_nezha(), "NezhaForMaskedLM")
    refused(r"these parameters have no pooler .*pass add_pooling_layer=False", nezha_model,
            sub(model.params, "nezha"), model.config, IDS)
    assert nezha_model(sub(model.params, "nezha"), model.config, IDS, add_pooling_layer=False).pooler_output is None


def test_nezha_cross_attention_needs_a_decoder():
    model = build(small_nezha(add_cross_attention=True), "NezhaModel")
    refused(r"add_cross_attention=True needs is_decoder=True", model, input_ids=IDS)
    decoder = build(small_nezha(is_decoder=True), "NezhaModel")
    refused(r"encoder_hidden_states need cross-attention layers: set add_cross_attention=True", decoder,
            input_ids=IDS, encoder_hidden_states=np.zeros((2, 5, 8)))
    # an encoder ignores encoder states, as upstream's does
    encoder = build(small_nezha(), "NezhaModel")
    a = encoder(input_ids=IDS, encoder_hidden_states=np.zeros((2, 5, 8))).last_hidden_state
    np.testing.assert_array_equal(a, encoder(input_ids=IDS).last_hidden_state)


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 4), ()])
def test_nezha_head_mask_width(shape):
    model = build(small_nezha(), "NezhaModel")
    refused(r"head_mask must have shape \(num_layers=2, heads\) or \(heads,\) with heads = 1 or the heads of every "
            r"attention \(\[2\]; pruned_heads leave \[2, 2\] self-attention heads\), got " + re.escape(str(shape)),
            model, input_ids=IDS, head_mask=np.ones(shape))


@pytest.mark.parametrize("shape", [(1,), (2,), (2, 1), (2, 2)])
def test_nezha_head_mask_width_one_broadcasts(shape):
    """A width-1 row scales every head alike (upstream broadcasts it): the same as the full row."""
    model = build(small_nezha(), "NezhaModel")
    half = np.full(shape, 0.5)
    full = np.full((2, 2), 0.5)
    a = model(input_ids=IDS, head_mask=half, output_attentions=True)
    b = model(input_ids=IDS, head_mask=full, output_attentions=True)
    np.testing.assert_allclose(a.last_hidden_state, b.last_hidden_state, rtol=1e-12, atol=1e-12)
    for x, y in zip(a.attentions, b.attentions):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_nezha_multiple_choice_shapes():
    model = build(small_nezha(), "NezhaForMultipleChoice")
    ids = np.tile(IDS[:, None, :], (1, 3, 1))  # [2, 3, 5]
    refused(r"input_ids must have shape \(batch, num_choices, sequence\), got \(2, 5\)", model, input_ids=IDS)
    refused(r"inputs_embeds must have shape \(batch, num_choices, sequence, hidden\), got \(2, 5, 8\)", model,
            inputs_embeds=np.zeros((2, 5, 8)))
    refused(r"attention_mask must have shape \(2, 3, 5\) \(batch, num_choices, sequence\), got \(2, 5\)", model,
            input_ids=ids, attention_mask=np.ones((2, 5)))
    refused(r"token_type_ids must have shape \(2, 3, 5\) .*got \(2, 3, 5, 1\)", model,
            input_ids=ids, token_type_ids=np.zeros((2, 3, 5, 1), np.int64))
    # inputs_embeds [B, C, T, D]: the same logits as the ids' embeddings
    embeds = model.params["nezha.embeddings.word_embeddings.weight"][ids]
    np.testing.assert_allclose(model(inputs_embeds=embeds).logits, model(input_ids=ids).logits, rtol=1e-12)
    assert model(input_ids=ids).logits.shape == (2, 3)


def test_nezha_length_bound():
    model = build(small_nezha(), "NezhaModel")
    model(input_ids=np.full((1, 6), 5))  # 6 tokens = max_position_embeddings: accepted
    refused(r"sequence length 7 exceeds max_position_embeddings=6 of this NEZHA model", model,
            input_ids=np.full((1, 7), 5))


@pytest.mark.parametrize("num_labels", [1, 3])
def test_nezha_question_answering_needs_two_labels(num_labels):
    model = build(small_nezha(num_labels=num_labels), "NezhaForQuestionAnswering")
    refused(rf"NezhaForQuestionAnswering needs num_labels=2 \(start, end\), the config has {num_labels}", model,
            input_ids=IDS)


# ---------------------------------------------------------------- OPT


def test_opt_position_bound():
    model = build(small_opt(), "OPTModel")
    model(input_ids=np.full((1, 5), 5))  # 5 attended tokens = max_position_embeddings: accepted
    refused(r"6 attended tokens exceed max_position_embeddings=5 of this OPT model", model,
            input_ids=np.full((2, 6), 5), attention_mask=np.array([[1] * 6, [0] * 2 + [1] * 4]))
    # padding does not count: 6 columns, 5 attended in each row
    model(input_ids=np.full((2, 6), 5), attention_mask=np.array([[0] + [1] * 5, [1] * 5 + [0]]))


# ---------------------------------------------------------------- XGLM


def test_xglm_torch_table_is_float32_only():
    refused(r"torch's float32 exp/sin/cos give a float32 table, not float64", sinusoid_rows, np.arange(3), 8,
            dtype=np.float64, as_torch=True)


def test_xglm_cross_attention_and_labels_are_checked():
    model = build(small_xglm(), "XGLMModel")
    refused(r"encoder_hidden_states needs a model with cross-attention layers \(add_cross_attention=True\)", model,
            input_ids=IDS, encoder_hidden_states=np.zeros((2, 3, 8)))
    # an encoder mask without encoder states is ignored, as upstream ignores it
    np.testing.assert_array_equal(model(input_ids=IDS, encoder_attention_mask=np.zeros((2, 3))).last_hidden_state,
                                  model(input_ids=IDS).last_hidden_state)
    lm = build(small_xglm(pad_token_id=None), "XGLMForCausalLM")
    refused(r"fills the last label slot with pad_token_id, but the config has none", lm, input_ids=IDS, labels=IDS)


@pytest.mark.parametrize("shape", [(2, 3), (3, 3, 8), (2, 3, 7), (2, 3, 8, 1)])
def test_xglm_encoder_states_shape(shape):
    """Each dimension checked on its own: rank, batch, width."""
    model = build(small_xglm(add_cross_attention=True), "XGLMModel")
    refused(rf"encoder_hidden_states must have shape \(2, source, 8\), got {re.escape(str(shape))}", model,
            input_ids=IDS, encoder_hidden_states=np.zeros(shape))
    assert model(input_ids=IDS, encoder_hidden_states=np.zeros((2, 3, 8))).last_hidden_state.shape == (2, 5, 8)


@pytest.mark.parametrize("shape", [(3, 5), (2, 4), (1, 6)])
def test_xglm_position_ids_shape(shape):
    model = build(small_xglm(), "XGLMModel")
    refused(rf"position_ids must have shape \(2, 5\) or \(1, 5\), got {re.escape(str(shape))}", model,
            input_ids=IDS, position_ids=np.zeros(shape, np.int64))


def test_xglm_position_ids_bounds():
    """Rows -2 .. max(max_position_embeddings, past + T) - 1 exist; the padding row (-1) included."""
    model = build(small_xglm(), "XGLMModel")
    for batch_positions in ([[-2, -1, 0, 1, 5]] * 2, [[5, 4, 3, 2, 1]]):
        model(input_ids=IDS, position_ids=np.array(batch_positions))
    refused(r"position_ids must lie in -2\.\.5 \(the sinusoid table has 8 rows, offset 2\); got -3\.\.1", model,
            input_ids=IDS, position_ids=np.array([[-3, -1, 0, 1, 1]]))
    refused(r"position_ids must lie in -2\.\.5 .*got 0\.\.6", model, input_ids=IDS,
            position_ids=np.array([[0, 1, 2, 3, 6]]))
    # a longer input grows the table (upstream regrows its buffer): 9 tokens reach position 8
    long = np.full((1, 9), 5)
    model(input_ids=long, position_ids=np.arange(9)[None])
    refused(r"position_ids must lie in -2\.\.8 .*got 0\.\.9", model, input_ids=long,
            position_ids=np.arange(1, 10)[None] * np.array([[0] + [1] * 8]))


# ---------------------------------------------------------------- checkpoints: buffers and missing weights


@pytest.mark.parametrize("checkpoint, buffers", [
    ("nezha/k2-NezhaForMaskedLM", ["nezha.encoder.layer.0.attention.self.relative_positions_encoding.positions_encoding",
                                    "nezha.embeddings.token_type_ids", "nezha.embeddings.position_ids",
                                    "cls.predictions.decoder.bias"]),
    ("xglm/gelu-scaled-XGLMForCausalLM", ["model.embed_positions.weights", "model.embed_positions._float_tensor"]),
    ("led/window-6-LEDForConditionalGeneration", ["led.encoder.embed_tokens.weight", "led.decoder.embed_tokens.weight"]),
])
def test_recomputed_buffers_in_a_file_are_not_unexpected(tmp_path, checkpoint, buffers):
    """Buffers older upstream versions saved (or copies of tied weights) are recomputed, not reported, not read."""
    import shutil
    import warnings

    import refimpl
    from golden import GOLDEN
    from safetensors.numpy import load_file, save_file

    src = GOLDEN / checkpoint
    shutil.copy(src / "config.json", tmp_path / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    tensors.update({name: np.full((3, 2), 7.0, np.float32) for name in buffers})
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = refimpl.from_pretrained(tmp_path, dtype="float64")
    reference = refimpl.from_pretrained(src, dtype="float64")
    assert sorted(model.params) == sorted(reference.params)
    ids = np.array([[0, 5, 6, 2]])
    kwargs = {"decoder_input_ids": ids} if checkpoint.startswith("led") else {}
    np.testing.assert_array_equal(model(input_ids=ids, **kwargs).logits, reference(input_ids=ids, **kwargs).logits)


def test_led_file_without_final_logits_bias_reads_zeros(tmp_path):
    """LEDForConditionalGeneration._keys_to_ignore_on_load_missing: a file without final_logits_bias gets zeros."""
    import shutil

    import refimpl
    from golden import GOLDEN
    from safetensors.numpy import load_file, save_file

    src = GOLDEN / "led" / "window-6-LEDForConditionalGeneration"
    shutil.copy(src / "config.json", tmp_path / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    del tensors["final_logits_bias"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = refimpl.from_pretrained(tmp_path, dtype="float64")
    bias = model.params["final_logits_bias"]
    assert bias.shape == (1, model.config.vocab_size) and not bias.any()


# ---------------------------------------------------------------- caches


def cache(layers, arrays, shape):
    return tuple(tuple(np.zeros(shape) for _ in range(arrays)) for _ in range(layers))


# (config, architecture, extra inputs, layers, heads, head size, the array counts a layer may hold)
CACHED = {
    "opt": (lambda: small_opt(), "OPTForCausalLM", {}, 1, 2, 4, "2"),
    "xglm": (lambda: small_xglm(), "XGLMForCausalLM", {}, 1, 2, 4, "2"),
    "xglm-cross": (lambda: small_xglm(add_cross_attention=True), "XGLMModel", {}, 1, 2, 4, "2 or 4"),
    "xglm-cross-states": (lambda: small_xglm(add_cross_attention=True), "XGLMModel",
                          {"encoder_hidden_states": np.zeros((2, 3, 8))}, 1, 2, 4, "4"),
    "nezha": (lambda: small_nezha(is_decoder=True), "NezhaModel", {}, 2, 2, 4, "2"),
    "nezha-cross": (lambda: small_nezha(is_decoder=True, add_cross_attention=True), "NezhaModel", {}, 2, 2, 4,
                    "2 or 4"),
    "led": (lambda: small_led(decoder_attention_heads=4), "LEDForConditionalGeneration",
            {"input_ids": IDS}, 1, 4, 2, "4"),
}


@pytest.mark.parametrize("name", sorted(CACHED))
def test_a_wrong_cache_is_named(name):
    """The cache is checked against the family's layers, heads, head size and array count."""
    make, architecture, extra, layers, heads, head_size, counts = CACHED[name]
    model = build(make(), architecture)
    first = {"decoder_input_ids": IDS[:, :1]} if name == "led" else {"input_ids": IDS}
    count = int(counts[-1])
    refused(rf"past_key_values must hold one tuple per layer \({layers}\), got {layers + 1}", model, **first, **extra,
            past_key_values=cache(layers + 1, count, (2, heads, 1, head_size)))
    refused(rf"past_key_values\[0\] must hold {counts} arrays .*got 3", model, **first, **extra,
            past_key_values=cache(layers, 3, (2, heads, 1, head_size)))
    named = "heads" if name.startswith("nezha") else f"heads={heads}"  # NEZHA: pruning may leave any count
    refused(rf"past_key_values\[0\]\[0\] \(self-attention key\) must have shape \(batch=2, {named}, length, "
            rf"head_dim={head_size}\), got \(2, {heads}, 1, {head_size + 1}\)", model, **first, **extra,
            past_key_values=cache(layers, count, (2, heads, 1, head_size + 1)))
    if name.startswith("nezha"):
        return
    refused(rf"must have shape \(batch=2, heads={heads}, length, head_dim={head_size}\), got \(2, {heads + 1}, 1, "
            rf"{head_size}\)", model, **first, **extra, past_key_values=cache(layers, count, (2, heads + 1, 1, head_size)))


# ---------------------------------------------------------------- ids outside their vocabularies


def test_ids_outside_their_vocabulary_are_named():
    nezha = build(small_nezha(), "NezhaModel")
    refused(r"token_type_ids holds id 2, outside the vocabulary of 2 \(valid: 0\.\.1\)", nezha, input_ids=IDS,
            token_type_ids=np.full(IDS.shape, 2))
    refused(r"token_type_ids holds id -1, outside the vocabulary of 2", nezha, input_ids=IDS,
            token_type_ids=np.full(IDS.shape, -1))
    led = build(small_led(), "LEDForSequenceClassification")
    refused(r"input_ids holds id 25, outside the vocabulary of 20 \(valid: 0\.\.19\)", led,
            input_ids=np.array([[0, 5, 25, 2]]))


def test_nezha_head_mask_width_with_pruned_heads():
    """After pruning, layers keep different head counts: only a width-1 head mask fits them all (upstream
    fails to broadcast any other)."""
    model = build(small_nezha(pruned_heads={"0": [0]}), "NezhaModel")
    refused(r"heads of every attention \(\[1, 2\]; pruned_heads leave \[1, 2\] self-attention heads\), got \(2,\)",
            model, input_ids=IDS, head_mask=np.ones(2))
    out = model(input_ids=IDS, head_mask=np.full((2, 1), 0.5), output_attentions=True)
    assert [a.shape[1] for a in out.attentions] == [1, 2]


@pytest.mark.parametrize("cross", [False, True])
def test_nezha_empty_cache_is_no_cache(cross):
    """A cache of length 0 is accepted (nothing to continue from); any longer one is refused."""
    model = build(small_nezha(is_decoder=True, add_cross_attention=cross), "NezhaModel")
    empty = cache(2, 4 if cross else 2, (2, 2, 0, 4))
    states = {"encoder_hidden_states": np.ones((2, 5, 8))} if cross else {}
    np.testing.assert_array_equal(model(input_ids=IDS, past_key_values=empty, **states).last_hidden_state,
                                  model(input_ids=IDS, **states).last_hidden_state)
    refused(r"NEZHA cannot continue from past_key_values", model, input_ids=IDS, **states,
            past_key_values=cache(2, 4 if cross else 2, (2, 2, 1, 4)), error=NotImplementedError)


# ---------------------------------------------------------------- traced internals


@pytest.mark.parametrize("decoder", [False, True])
def test_nezha_traced_scores_hold_the_mask(decoder):
    """tracing(internals=True): softmax of each layer's #scores (masked padding, causal for a decoder) is the
    #probs the attention used, which are the attentions returned."""
    from refimpl.trace import tracing

    model = build(small_nezha(is_decoder=decoder), "NezhaModel")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with tracing(internals=True) as trace:
        out = model(input_ids=IDS, attention_mask=mask, output_attentions=True)
    scores = [trace[k] for k in trace if k.endswith("#scores")]
    assert len(scores) == 2
    for s, returned in zip(scores, out.attentions):
        e = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(e / e.sum(-1, keepdims=True), returned, rtol=0, atol=1e-14)
        assert np.all(returned[1, :, :, 3:] == 0)  # padded keys get no attention


def test_nezha_tracing_with_a_head_mask_changes_nothing():
    """Traced, the probabilities are recorded before the head mask (upstream's dropout output) and the head mask
    still applies: the same outputs as untraced, and attentions = traced probabilities x head mask."""
    from refimpl.trace import tracing

    model = build(small_nezha(), "NezhaModel")
    head_mask = np.array([[0.5, 0.0], [1.0, 0.25]])
    plain = model(input_ids=IDS, head_mask=head_mask, output_attentions=True)
    with tracing() as trace:
        traced = model(input_ids=IDS, head_mask=head_mask, output_attentions=True)
    np.testing.assert_array_equal(traced.last_hidden_state, plain.last_hidden_state)
    for i, (a, b) in enumerate(zip(traced.attentions, plain.attentions)):
        np.testing.assert_array_equal(a, b)
        before = trace[f"encoder.layer.{i}.attention.self.dropout"]
        np.testing.assert_allclose(before * head_mask[i][None, :, None, None], b, rtol=0, atol=1e-15)
        np.testing.assert_allclose(before.sum(-1), 1.0, rtol=0, atol=1e-12)
