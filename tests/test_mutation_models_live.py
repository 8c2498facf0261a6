"""Every class of the four families against live upstream (torch + transformers 4.37.2) on fixed tiny configs,
call by call: return_dict=False tuples (their exact layout: which slots are there, in which order), output
objects (their keys), every tensor in float64 (upstream's float32 islands made exact, as the golden capture
does) and float32, with and without output flags, caches, head masks, labels, inputs_embeds, encoder outputs.
The expected values are upstream's; skipped without torch."""
import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import live  # noqa: E402,F401  (puts golden/ on sys.path)
from common import randomize_, running_in  # noqa: E402
import capture_nezha  # noqa: E402
import capture_xglm  # noqa: E402

import refimpl  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-4}  # relative to the tensor's largest entry
B, T = 2, 6
RNG = np.random.default_rng(2025)
IDS = np.array([[0, 5, 6, 7, 8, 2], [0, 9, 10, 11, 2, 1]])  # "<s> ... </s>" [pad]: one eos per row
RIGHT = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
LEFT = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():  # tiny tensors: torch's thread pool only waits for busy cores
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- comparing outputs


def as_tree(value):
    """An output (upstream's or refimpl's) as plain nested data: ("object", keys, values) / tuple / ndarray / None."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return np.asarray(value)
    if isinstance(value, (tuple, list)):
        return tuple(as_tree(v) for v in value)
    if hasattr(value, "keys") and hasattr(value, "to_tuple"):  # a ModelOutput
        keys = list(value.keys())
        return ("object", tuple(keys), tuple(as_tree(value[k]) for k in keys))
    raise TypeError(f"unexpected output part {type(value)}")


def differences(ours, theirs, dtype, where=""):
    """Every way `ours` departs from upstream's `theirs`: layout, dtype, shape, values beyond TOL[dtype]."""
    if theirs is None or ours is None:
        return [] if ours is None and theirs is None else [f"{where}: refimpl {type(ours)}, upstream {type(theirs)}"]
    if isinstance(theirs, tuple) and theirs and isinstance(theirs[0], str) and theirs[0] == "object":
        if not (isinstance(ours, tuple) and ours and isinstance(ours[0], str) and ours[0] == "object"):
            return [f"{where}: refimpl returned {type(ours).__name__}, upstream an output object"]
        if ours[1] != theirs[1]:
            return [f"{where}: keys {list(ours[1])}, upstream {list(theirs[1])}"]
        return [p for k, a, b in zip(theirs[1], ours[2], theirs[2]) for p in differences(a, b, dtype, f"{where}.{k}")]
    if isinstance(theirs, tuple):
        if not isinstance(ours, tuple) or len(ours) != len(theirs):
            return [f"{where}: refimpl {type(ours).__name__} of {len(ours) if isinstance(ours, tuple) else '-'} "
                    f"items, upstream tuple of {len(theirs)}"]
        return [p for i, (a, b) in enumerate(zip(ours, theirs)) for p in differences(a, b, dtype, f"{where}[{i}]")]
    if not isinstance(ours, np.ndarray):
        return [f"{where}: refimpl {type(ours).__name__}, upstream an array {theirs.shape}"]
    if ours.shape != theirs.shape:
        return [f"{where}: shape {ours.shape}, upstream {theirs.shape}"]
    if theirs.dtype.kind == "f":
        if ours.dtype != theirs.dtype:
            return [f"{where}: dtype {ours.dtype}, upstream {theirs.dtype}"]
        if theirs.size == 0:
            return []
        finite = np.isfinite(theirs)
        if not np.array_equal(np.isfinite(ours), finite) or not np.array_equal(ours[~finite], theirs[~finite]):
            return [f"{where}: the inf/NaN pattern differs from upstream"]
        diff = np.where(finite, np.abs(ours.astype(np.float64) - theirs), 0)
        scale = max(float(np.abs(np.where(finite, theirs, 0)).max()), 1e-30)
        worst = np.unravel_index(np.argmax(diff), diff.shape)
        if diff[worst] / scale > TOL[dtype]:
            return [f"{where}: max diff {diff[worst]:.3e} at {tuple(int(i) for i in worst)} (ours {ours[worst]!r}, "
                    f"upstream {theirs[worst]!r}), relative {diff[worst] / scale:.2e} > {TOL[dtype]:.0e}"]
        return []
    if not np.array_equal(ours, theirs):
        return [f"{where}: integer values {ours.tolist()}, upstream {theirs.tolist()}"]
    return []


# ---------------------------------------------------------------- models and calls


def upstream_context(family):  # upstream's float32 sinusoid islands replaced by the exact tables (golden/*.py)
    if family == "nezha":
        return capture_nezha.exact_relative_positions()
    if family == "xglm":
        return capture_xglm.correctly_rounded_sinusoid()
    return contextlib.nullcontext()


_MODELS = {}


def models(tmp_path_factory, family, cls_name, config, qk_bias=0.0):
    """(upstream model, refimpl float32, refimpl float64) for a config, built once per module; qk_bias is
    added to every key projection's bias and taken from every query projection's (scores -d qk_bias^2)."""
    key = (cls_name, qk_bias, tuple(sorted((k, str(v)) for k, v in config.items())))
    if key not in _MODELS:
        config_class = {"opt": "OPTConfig", "xglm": "XGLMConfig", "nezha": "NezhaConfig", "led": "LEDConfig"}[family]
        with upstream_context(family):
            torch.manual_seed(0)
            model = getattr(transformers, cls_name)(getattr(transformers, config_class)(**config))
        if family == "xglm":
            capture_xglm.protect_position_ids(model)
        randomize_(model, 11)
        with torch.no_grad():
            for name, bias in model.named_parameters():
                if name.endswith(("q_proj.bias", "k_proj.bias")):
                    bias.add_(qk_bias if name.endswith("k_proj.bias") else -qk_bias)
        model.eval()
        directory = tmp_path_factory.mktemp(cls_name)
        model.save_pretrained(directory, safe_serialization=True)
        _MODELS[key] = (model, refimpl.from_pretrained(directory, architecture=cls_name, dtype="float32"),
                        refimpl.from_pretrained(directory, architecture=cls_name, dtype="float64"))
    return _MODELS[key]


def to_torch(value, dtype):  # arrays (nested in tuples: encoder_outputs) -> tensors, floats in `dtype`
    if isinstance(value, tuple):
        return tuple(to_torch(v, dtype) for v in value)
    t = torch.from_numpy(np.ascontiguousarray(value))
    return t.to(dtype) if t.is_floating_point() else t


def to_dtype(value, dtype):  # the same for refimpl: float arrays in `dtype`
    if isinstance(value, tuple):
        return tuple(to_dtype(v, dtype) for v in value)
    return np.asarray(value, dtype) if np.asarray(value).dtype.kind == "f" else value


def run_calls(model, calls, convert):
    """Each call's output as a tree; a call with kwargs past=True gets the previous call's past_key_values."""
    outputs, previous = [], None
    for arrays, kwargs in calls:
        args = {k: convert(v) for k, v in arrays.items()}
        if kwargs.get("past"):
            args["past_key_values"] = previous.past_key_values
        previous = model(**args, **{k: v for k, v in kwargs.items() if k != "past"})
        outputs.append(as_tree(previous))
    return outputs


def run_upstream(model, family, calls, dtype):
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    with upstream_context(family), running_in(model, torch_dtype), torch.no_grad():
        return run_calls(model, calls, lambda v: to_torch(v, torch_dtype))


def run_ours(model, calls, dtype):
    return run_calls(model, calls, lambda v: to_dtype(v, dtype))


def check(tmp_path_factory, family, cls_name, config, calls, qk_bias=0.0):
    upstream, ours32, ours64 = models(tmp_path_factory, family, cls_name, config, qk_bias)
    problems = []
    for dtype, ours in (("float64", ours64), ("float32", ours32)):
        expected = run_upstream(upstream, family, calls, dtype)
        got = run_ours(ours, calls, dtype)
        for i, (a, b) in enumerate(zip(got, expected)):
            problems += differences(a, b, dtype, f"{dtype} call {i} ({sorted(calls[i][1])})")
    assert not problems, f"{cls_name} {config}\n" + "\n".join(problems[:20])


ALL_FLAGS = dict(output_attentions=True, output_hidden_states=True)


def flag_calls(base, labels=None, cache=True, extra=None):
    """The calls every class gets: tuple and object returns, each flag alone and together, labels, use_cache."""
    calls = [(base, dict(return_dict=False)), (base, dict(return_dict=False, **ALL_FLAGS)),
             (base, dict(return_dict=False, output_attentions=True)),
             (base, dict(return_dict=False, output_hidden_states=True)),
             (base, dict(return_dict=True, **ALL_FLAGS))]
    if cache:
        calls += [(base, dict(return_dict=False, use_cache=True, **ALL_FLAGS)),
                  (base, dict(return_dict=False, use_cache=False, **ALL_FLAGS))]
    if labels:
        calls += [({**base, **labels}, dict(return_dict=False, **ALL_FLAGS)), ({**base, **labels}, dict(return_dict=True))]
    for arrays in extra or ():
        calls += [({**base, **arrays}, dict(return_dict=False, **ALL_FLAGS)), ({**base, **arrays}, dict())]
    return calls


# ---------------------------------------------------------------- OPT


OPT_CONFIGS = {
    "preln": dict(vocab_size=24, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, ffn_dim=10,
                  max_position_embeddings=12, num_labels=3, dropout=0.0, pad_token_id=1),
    "postln-proj": dict(vocab_size=24, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, ffn_dim=10,
                        max_position_embeddings=12, num_labels=3, dropout=0.0, pad_token_id=1,
                        do_layer_norm_before=False, word_embed_proj_dim=6, activation_function="gelu"),
    "prenorm-removed": dict(vocab_size=24, hidden_size=8, num_attention_heads=4, num_hidden_layers=1, ffn_dim=10,
                            max_position_embeddings=12, num_labels=1, dropout=0.0, pad_token_id=1,
                            _remove_final_layer_norm=True, enable_bias=False),
}
OPT_LABELS = {"OPTModel": None, "OPTForCausalLM": {"labels": np.where(LEFT == 1, IDS, -100)},
              "OPTForSequenceClassification": {"labels": np.array([2, 0])},
              "OPTForQuestionAnswering": {"start_positions": np.array([1, 7]), "end_positions": np.array([3, 0])}}


@pytest.mark.parametrize("variant", sorted(OPT_CONFIGS))
@pytest.mark.parametrize("cls_name", list(OPT_LABELS))
def test_opt_calls_match_upstream(tmp_path_factory, cls_name, variant):
    config = OPT_CONFIGS[variant]
    labels = OPT_LABELS[cls_name]
    if cls_name == "OPTForSequenceClassification" and config["num_labels"] == 1:
        labels = {"labels": np.array([0.5, -1.25])}
    base = {"input_ids": IDS, "attention_mask": LEFT}
    head_mask = {"head_mask": RNG.integers(0, 3, size=(config["num_hidden_layers"], config["num_attention_heads"])) / 2}
    calls = flag_calls(base, labels, extra=[head_mask])
    embeds = RNG.normal(size=(B, T, config.get("word_embed_proj_dim", config["hidden_size"])))
    calls += [({"inputs_embeds": embeds, "attention_mask": RIGHT}, dict(return_dict=False, **ALL_FLAGS))]
    if cls_name != "OPTForQuestionAnswering":  # one more token from the cache
        more = {"input_ids": np.array([[4], [3]]), "attention_mask": np.concatenate([LEFT, [[1], [1]]], axis=1)}
        calls += [(base, dict(use_cache=True)), (more, dict(past=True, return_dict=False, **ALL_FLAGS)),
                  (base, dict(use_cache=True)), (more, dict(past=True, use_cache=False))]
    check(tmp_path_factory, "opt", cls_name, config, calls)


def test_opt_sequence_classification_without_pad_token(tmp_path_factory):
    """pad_token_id None: upstream pools the last position of every row (and refuses batches > 1)."""
    config = dict(OPT_CONFIGS["preln"], pad_token_id=None)
    calls = [({"input_ids": IDS[:1]}, dict(return_dict=False)), ({"input_ids": IDS[:1], "labels": np.array([1])}, {})]
    check(tmp_path_factory, "opt", "OPTForSequenceClassification", config, calls)


# ---------------------------------------------------------------- XGLM


XGLM_CONFIGS = {
    "odd-width": dict(vocab_size=24, d_model=9, attention_heads=3, num_layers=1, ffn_dim=7, max_position_embeddings=8,
                      pad_token_id=0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0),
    "plain": dict(vocab_size=24, d_model=8, attention_heads=2, num_layers=2, ffn_dim=10, max_position_embeddings=12,
                  dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0),
    "cross-unscaled": dict(vocab_size=24, d_model=10, attention_heads=2, num_layers=2, ffn_dim=10,
                           max_position_embeddings=12, scale_embedding=False, add_cross_attention=True,
                           activation_function="relu", pad_token_id=3, dropout=0.0, attention_dropout=0.0,
                           activation_dropout=0.0, layerdrop=0.0),
}


@pytest.mark.parametrize("variant", sorted(XGLM_CONFIGS))
@pytest.mark.parametrize("cls_name", ["XGLMModel", "XGLMForCausalLM"])
def test_xglm_calls_match_upstream(tmp_path_factory, cls_name, variant):
    config = XGLM_CONFIGS[variant]
    D, L, H = config["d_model"], config["num_layers"], config["attention_heads"]
    base = {"input_ids": IDS, "attention_mask": RIGHT}
    extra = [{"head_mask": RNG.integers(0, 3, size=(L, H)) / 2},
             {"position_ids": np.array([[0, 1, 2, 3, 4, 5], [3, 1, 0, 2, 7, -1]])}]
    if config.get("add_cross_attention"):
        encoder = {"encoder_hidden_states": RNG.normal(size=(B, 3, D)), "encoder_attention_mask": np.array([[1, 1, 0], [1, 1, 1]])}
        base = {**base, **encoder}
        extra.append({"cross_attn_head_mask": RNG.integers(0, 3, size=(L, H)) / 2})
    labels = {"labels": np.where(RIGHT == 1, IDS, -100)} if cls_name == "XGLMForCausalLM" else None
    calls = flag_calls(base, labels, extra=extra)
    calls += [({"inputs_embeds": RNG.normal(size=(B, T, D)), **{k: v for k, v in base.items() if k != "input_ids"}},
               dict(return_dict=False, **ALL_FLAGS))]
    more = {**base, "input_ids": np.array([[4], [3]]), "attention_mask": np.concatenate([RIGHT, [[1], [1]]], axis=1)}
    calls += [(base, dict(use_cache=True)), (more, dict(past=True, return_dict=False, **ALL_FLAGS)),
              (base, dict(use_cache=True)), (more, dict(past=True, return_dict=True, use_cache=False))]
    check(tmp_path_factory, "xglm", cls_name, config, calls)


# ---------------------------------------------------------------- NEZHA


NEZHA_CLASSES = ["NezhaModel", "NezhaForPreTraining", "NezhaForMaskedLM", "NezhaForNextSentencePrediction",
                 "NezhaForSequenceClassification", "NezhaForMultipleChoice", "NezhaForTokenClassification",
                 "NezhaForQuestionAnswering"]
NEZHA_CONFIG = dict(vocab_size=24, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, intermediate_size=10,
                    max_position_embeddings=8, max_relative_position=3, type_vocab_size=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
TYPES = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 2, 2, 1, 1]])


def nezha_labels(cls_name, num_labels):
    if cls_name in ("NezhaForMaskedLM",):
        return {"labels": np.where(RIGHT == 1, IDS, -100)}
    if cls_name == "NezhaForPreTraining":
        return {"labels": np.where(RIGHT == 1, IDS, -100), "next_sentence_label": np.array([1, 0])}
    if cls_name == "NezhaForNextSentencePrediction":
        return {"labels": np.array([1, 0])}
    if cls_name == "NezhaForSequenceClassification":
        return {"labels": np.array([0.5, -2.0]) if num_labels == 1 else np.array([2, 0])}
    if cls_name == "NezhaForMultipleChoice":
        return {"labels": np.array([2, 0])}
    if cls_name == "NezhaForTokenClassification":
        return {"labels": np.where(RIGHT == 1, IDS % num_labels, -100)}
    if cls_name == "NezhaForQuestionAnswering":
        return {"start_positions": np.array([1, 7]), "end_positions": np.array([3, 0])}
    return None


@pytest.mark.parametrize("cls_name, num_labels", [(c, 2 if c == "NezhaForQuestionAnswering" else 3) for c in NEZHA_CLASSES]
                         + [("NezhaForSequenceClassification", 1), ("NezhaForTokenClassification", 1)])
def test_nezha_calls_match_upstream(tmp_path_factory, cls_name, num_labels):
    config = dict(NEZHA_CONFIG, num_labels=num_labels)
    base = {"input_ids": IDS, "attention_mask": RIGHT, "token_type_ids": TYPES}
    if cls_name == "NezhaForMultipleChoice":  # [B, C, T]: three choices, each its own row
        base = {k: np.stack([v, v[::-1], np.roll(v, 1, axis=1)], axis=1) for k, v in base.items()}
    labels = nezha_labels(cls_name, num_labels)
    extra = [{"head_mask": RNG.integers(0, 3, size=(2, 2)) / 2}, {"head_mask": np.array([0.5, 1.0])}]
    if cls_name == "NezhaModel":  # a [B, T, T] mask: per query
        extra.append({"attention_mask": (RNG.random((B, T, T)) < 0.7) | np.eye(T, dtype=bool)[None]})
    calls = flag_calls(base, labels, cache=False, extra=extra)
    calls += [({k: v for k, v in base.items() if k != "token_type_ids"}, dict(return_dict=False))]
    embeds = RNG.normal(size=base["input_ids"].shape + (8,))
    calls += [({**{k: v for k, v in base.items() if k != "input_ids"}, "inputs_embeds": embeds},
               dict(return_dict=False, **ALL_FLAGS))]
    check(tmp_path_factory, "nezha", cls_name, config, calls)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("cls_name", ["NezhaModel", "NezhaForMaskedLM"])
def test_nezha_decoder_calls_match_upstream(tmp_path_factory, cls_name, cross):
    """is_decoder (causal mask, caches) with and without cross-attention; the cache's place in the tuples."""
    config = dict(NEZHA_CONFIG, is_decoder=True, add_cross_attention=cross)
    base = {"input_ids": IDS, "attention_mask": RIGHT}
    extra = []
    if cross:
        encoder = {"encoder_hidden_states": RNG.normal(size=(B, T, 8)), "encoder_attention_mask": LEFT}
        extra = [encoder, {"encoder_hidden_states": encoder["encoder_hidden_states"]},
                 {**encoder, "head_mask": RNG.integers(0, 3, size=(2, 2)) / 2}]
    labels = nezha_labels(cls_name, 2)
    calls = flag_calls(base, labels, cache=cls_name == "NezhaModel", extra=extra)
    check(tmp_path_factory, "nezha", cls_name, config, calls)


# ---------------------------------------------------------------- LED


LED_CONFIGS = {
    "window-4": dict(vocab_size=24, d_model=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=4, encoder_ffn_dim=10, decoder_ffn_dim=6, attention_window=4,
                     max_encoder_position_embeddings=16, max_decoder_position_embeddings=10, num_labels=3,
                     dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, eos_token_id=2),
    "windows-8-4": dict(vocab_size=24, d_model=8, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=10, decoder_ffn_dim=6, attention_window=[8, 4],
                        max_encoder_position_embeddings=16, max_decoder_position_embeddings=10, num_labels=1,
                        activation_function="relu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        pad_token_id=1, eos_token_id=2, decoder_start_token_id=3),
}
LED_CLASSES = ["LEDModel", "LEDForConditionalGeneration", "LEDForSequenceClassification", "LEDForQuestionAnswering"]


@pytest.mark.parametrize("variant", sorted(LED_CONFIGS))
@pytest.mark.parametrize("cls_name", LED_CLASSES)
def test_led_calls_match_upstream(tmp_path_factory, cls_name, variant):
    config = LED_CONFIGS[variant]
    enc_layers, dec_layers = config["encoder_layers"], config["decoder_layers"]
    enc_heads, dec_heads = config["encoder_attention_heads"], config["decoder_attention_heads"]
    base = {"input_ids": IDS, "attention_mask": RIGHT, "global_attention_mask": np.array([[1, 0, 0, 0, 0, 0],
                                                                                       [1, 0, 0, 1, 0, 0]])}
    labels = {"LEDModel": None, "LEDForConditionalGeneration": {"labels": np.where(RIGHT == 1, IDS, -100)},
              "LEDForSequenceClassification": {"labels": np.array([0.5, -1.0]) if config["num_labels"] == 1
                                               else np.array([2, 0])},
              "LEDForQuestionAnswering": {"start_positions": np.array([1, 7]), "end_positions": np.array([3, 0])}}[cls_name]
    extra = [{"head_mask": RNG.integers(0, 3, size=(enc_layers, enc_heads)) / 2,
              "decoder_head_mask": RNG.integers(0, 3, size=(dec_layers, dec_heads)) / 2,
              "cross_attn_head_mask": RNG.integers(0, 3, size=(dec_layers, dec_heads)) / 2},
             {"decoder_input_ids": IDS, "decoder_attention_mask": LEFT},
             {"global_attention_mask": np.zeros((B, T), np.int64)}]
    calls = flag_calls(base, labels, extra=extra)
    if cls_name != "LEDForSequenceClassification":
        calls += [({"inputs_embeds": RNG.normal(size=(B, T, 8)), "attention_mask": RIGHT,
                    "decoder_input_ids": IDS[:, :4]}, dict(return_dict=False, **ALL_FLAGS))]
        # the encoder's output given back as a tuple: upstream appends it to the decoder's tuple as it is
        encoder = (RNG.normal(size=(B, T, config["d_model"])),)  # the encoder's last_hidden_state alone
        calls += [({"encoder_outputs": encoder, "attention_mask": RIGHT, "decoder_input_ids": IDS[:, :3]},
                   dict(return_dict=False, **ALL_FLAGS)),
                  ({"encoder_outputs": encoder, "decoder_input_ids": IDS[:, :3]}, dict(return_dict=True))]
        # a whole encoder tuple (last state, hidden states, attentions, global attentions): each lands in its field
        whole = (encoder[0], (RNG.normal(size=(B, T, 8)), RNG.normal(size=(B, T, 8))), (RNG.random((B, 2, T, 5)),),
                 (RNG.random((B, 2, T, 1)), RNG.random((B, 2, T, 1))))
        calls += [({"encoder_outputs": whole, "decoder_input_ids": IDS[:, :3]}, dict(return_dict=True)),
                  ({"encoder_outputs": whole[:2], "decoder_input_ids": IDS[:, :3]}, dict(return_dict=True)),
                  ({"encoder_outputs": whole[:3], "decoder_input_ids": IDS[:, :3]}, dict(return_dict=False))]
    if cls_name in ("LEDModel", "LEDForConditionalGeneration"):  # decoding from the cache
        first = {**base, "decoder_input_ids": IDS[:, :3]}
        calls += [(first, dict(use_cache=True)), ({**base, "decoder_input_ids": IDS[:, 3:4]},
                                                   dict(past=True, return_dict=False, **ALL_FLAGS)),
                  (first, dict(use_cache=True)), ({**base, "decoder_input_ids": IDS[:, 3:5],
                                                   "decoder_attention_mask": np.ones((B, 5), np.int64)},
                                                  dict(past=True, use_cache=True)),
                  # one new token: upstream builds no decoder mask, so the decoder_attention_mask is ignored
                  (first, dict(use_cache=True)), ({**base, "decoder_input_ids": IDS[:, 3:4],
                                                   "decoder_attention_mask": np.array([[1, 0, 1, 1], [0, 1, 1, 1]])},
                                                  dict(past=True, return_dict=False, **ALL_FLAGS)),
                  ({**base, "decoder_input_ids": IDS[:, :1], "decoder_attention_mask": np.array([[0], [1]])},
                   dict(return_dict=False, **ALL_FLAGS))]
    check(tmp_path_factory, "led", cls_name, config, calls)


# ---------------------------------------------------------------- OPT and XGLM: scores clamped at finfo.min


def leaves(tree):  # the arrays of an output tree, in order
    if isinstance(tree, np.ndarray):
        return [tree]
    if isinstance(tree, tuple):
        return [a for part in tree if not isinstance(part, str) for a in leaves(part)]
    return []


@pytest.mark.parametrize("family, cls_name, config", [("opt", "OPTForCausalLM", OPT_CONFIGS["preln"]),
                                                      ("xglm", "XGLMForCausalLM", XGLM_CONFIGS["plain"])])
def test_scores_clamped_at_finfo_min_as_upstream(tmp_path_factory, family, cls_name, config):
    """OPTAttention / XGLMAttention: max(scores + mask, finfo.min). With query and key biases of -1e16 and
    1e16 every score is about -1e32, which plus float32's finfo.min overflows to -inf unless clamped: a fully
    masked row (a left pad's query) is then uniform (clamped), not NaN. At that magnitude the scores' own
    differences are float32 rounding, so only where upstream is finite is compared."""
    upstream, ours32, _ = models(tmp_path_factory, family, cls_name, config, qk_bias=1e16)
    calls = [({"input_ids": IDS, "attention_mask": LEFT}, dict(return_dict=False, **ALL_FLAGS))]
    expected = leaves(run_upstream(upstream, family, calls, "float32")[0])
    got = leaves(run_ours(ours32, calls, "float32")[0])
    assert len(got) == len(expected)
    assert all(np.isfinite(b).all() for b in expected), "upstream's clamped outputs are finite"
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=f"output {i}: finite entries")


# ---------------------------------------------------------------- generation hooks


def as_plain(value):  # torch tensors -> ndarrays, recursively
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, (tuple, list)):
        return tuple(as_plain(v) for v in value)
    return value


def same_kwargs(ours, theirs, where):
    assert sorted(ours) == sorted(theirs), f"{where}: keys {sorted(ours)}, upstream {sorted(theirs)}"
    for key, value in theirs.items():
        value, mine = as_plain(value), ours[key]
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(mine, value, err_msg=f"{where}: {key}")
        elif key not in ("past_key_values", "encoder_outputs"):
            assert mine == value, f"{where}: {key} {mine!r}, upstream {value!r}"
        else:
            assert (mine is None) == (value is None), f"{where}: {key}"


@pytest.mark.parametrize("past, length", [(None, 4), (3, 7), (5, 5), (6, 2), (4, 9)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_xglm_prepare_inputs_for_generation_as_upstream(past, length, with_mask):
    """XGLMForCausalLM.prepare_inputs_for_generation with caches shorter than, as long as and longer than the
    ids (head size 4, so the head size is not the past length), with and without a mask."""
    from refimpl.models.xglm import prepare_inputs_for_generation

    model = transformers.XGLMForCausalLM(transformers.XGLMConfig(**XGLM_CONFIGS["plain"]))
    ids = np.arange(2 * length).reshape(2, length) % 24
    mask = np.ones((2, length), np.int64)
    mask[1, :2] = 0
    cache = None if past is None else tuple((np.zeros((2, 2, past, 4)),) * 2 for _ in range(2))
    kwargs = dict(past_key_values=cache, use_cache=True, **({"attention_mask": mask} if with_mask else {}))
    theirs = model.prepare_inputs_for_generation(
        torch.from_numpy(ids), **{k: (as_torch_tree(v) if k != "use_cache" else v) for k, v in kwargs.items()})
    same_kwargs(prepare_inputs_for_generation(ids, **kwargs), theirs, f"past {past} length {length} mask {with_mask}")


def as_torch_tree(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, tuple):
        return tuple(as_torch_tree(v) for v in value)
    return value


@pytest.mark.parametrize("past", [None, 3])
def test_led_prepare_inputs_for_generation_as_upstream(past):
    from refimpl.models.led import prepare_inputs_for_generation

    model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**LED_CONFIGS["window-4"]))
    ids = np.arange(8).reshape(2, 4)
    cache = None if past is None else tuple((np.zeros((2, 4, past, 2)),) * 4 for _ in range(2))
    kwargs = dict(past_key_values=cache, attention_mask=RIGHT, global_attention_mask=LEFT, head_mask=np.ones((2, 2)),
                  decoder_head_mask=np.ones((2, 4)), cross_attn_head_mask=np.zeros((2, 4)), use_cache=False,
                  encoder_outputs=(np.zeros((2, 6, 8)),))
    theirs = model.prepare_inputs_for_generation(torch.from_numpy(ids), **{k: as_torch_tree(v) for k, v in kwargs.items()})
    same_kwargs(prepare_inputs_for_generation(ids, **kwargs), theirs, f"past {past}")


# ---------------------------------------------------------------- sinusoid tables


@pytest.mark.parametrize("max_relative, depth", [(1, 2), (2, 4), (3, 6), (5, 8), (4, 64)])
def test_nezha_relative_tables_as_upstream(max_relative, depth):
    """islands="upstream"'s table (torch's float32 exp/sin/cos) against NezhaRelativePositionsEncoding's own
    buffer, bit for bit; the exact table against the float64 formula of golden/capture_nezha.py."""
    from refimpl.models.nezha import relative_position_table, relative_rows

    length = 2 * max_relative + 3
    upstream = capture_nezha.modeling_nezha.NezhaRelativePositionsEncoding(length, depth, max_relative)
    theirs = upstream(length).numpy()  # [T, T, depth]
    ours = relative_rows(relative_position_table(max_relative, depth, np.float64, as_torch=True), length, length)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    exact = relative_position_table(max_relative, depth, np.float64)
    np.testing.assert_allclose(exact, capture_nezha.exact_table(max_relative, depth), rtol=0, atol=1e-15)
    assert relative_position_table(max_relative, depth, np.float32).dtype == np.float32


@pytest.mark.parametrize("dim", [4, 5, 8, 9, 16, 33])
@pytest.mark.parametrize("padding_idx", [None, 1, 3])
def test_xglm_sinusoid_tables_as_upstream(dim, padding_idx):
    """as_torch: XGLMSinusoidalPositionalEmbedding.get_embedding bit for bit (odd widths: a zero last column;
    the padding row zero); float32 / float64: golden/capture_xglm.py's correctly rounded and exact tables."""
    from refimpl.models.xglm import sinusoid_rows

    rows = np.array([[0, 1, 2, 3], [7, 5, 3, 1]])  # any shape of rows
    theirs = capture_xglm.XGLMSinusoidalPositionalEmbedding.get_embedding(8, dim, padding_idx).numpy()
    np.testing.assert_array_equal(sinusoid_rows(rows, dim, padding_idx, np.float32, as_torch=True), theirs[rows])
    for dtype in (np.float32, np.float64):
        expected = capture_xglm.sinusoid_table(8, dim, padding_idx, dtype)[rows]
        got = sinusoid_rows(rows, dim, padding_idx, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)


def test_led_encoder_longer_than_one_feed_forward_block(tmp_path_factory):
    """More rows than FFN_ROWS (the encoder's feed-forward runs by blocks of rows): every block as upstream's."""
    from refimpl.models.led import FFN_ROWS

    config = dict(LED_CONFIGS["window-4"], max_encoder_position_embeddings=FFN_ROWS + 64, decoder_layers=1)
    ids = RNG.integers(3, 24, size=(1, FFN_ROWS + 37))
    ids[0, -1] = 2
    calls = [({"input_ids": ids, "decoder_input_ids": ids[:, :3]}, dict(return_dict=False, output_hidden_states=True))]
    check(tmp_path_factory, "led", "LEDModel", config, calls)


# ---------------------------------------------------------------- tuple configs


TUPLE_CASES = (  # (family, class, config, inputs)
    [("opt", c, OPT_CONFIGS["postln-proj"], {"input_ids": IDS, "attention_mask": LEFT}) for c in OPT_LABELS]
    + [("xglm", c, XGLM_CONFIGS["cross-unscaled"], {"input_ids": IDS, "encoder_hidden_states": np.ones((B, 2, 10))})
       for c in ("XGLMModel", "XGLMForCausalLM")]
    + [("nezha", c, dict(NEZHA_CONFIG, num_labels=2 if c == "NezhaForQuestionAnswering" else 3),
        {"input_ids": np.stack([IDS] * 2, axis=1)
                                                        if c == "NezhaForMultipleChoice" else IDS}) for c in NEZHA_CLASSES]
    + [("led", c, LED_CONFIGS["windows-8-4"], {"input_ids": IDS, "attention_mask": RIGHT}) for c in LED_CLASSES])


@pytest.mark.parametrize("flag", ["return_dict", "torchscript"])
@pytest.mark.parametrize("family, cls_name, config, arrays", TUPLE_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(TUPLE_CASES)])
def test_tuple_configs_match_upstream(tmp_path_factory, family, cls_name, config, arrays, flag):
    """config.json's return_dict: false (or torchscript: true) makes return_dict=None mean a tuple, for the
    outer call and, inside a head, for the base model's call too (upstream's heads index its tuple)."""
    config = dict(config, **({"return_dict": False} if flag == "return_dict" else {"torchscript": True}))
    labels = {"nezha": lambda: nezha_labels(cls_name, config["num_labels"]), "opt": lambda: OPT_LABELS[cls_name]}.get(
        family, lambda: None)()
    if family == "nezha" and cls_name == "NezhaForMultipleChoice":
        labels = {"labels": np.array([1, 0])}
    calls = [(arrays, {}), (arrays, dict(ALL_FLAGS)), (arrays, dict(return_dict=True, **ALL_FLAGS))]
    if labels:
        calls.append(({**arrays, **labels}, {}))
    check(tmp_path_factory, family, cls_name, config, calls)


# ---------------------------------------------------------------- traces with inputs_embeds


EMBEDS_CASES = [
    ("opt", "OPTForCausalLM", OPT_CONFIGS["postln-proj"], {"inputs_embeds": RNG.normal(size=(B, T, 6))}),
    ("xglm", "XGLMForCausalLM", XGLM_CONFIGS["plain"], {"inputs_embeds": RNG.normal(size=(B, T, 8))}),
    ("nezha", "NezhaForMaskedLM", dict(NEZHA_CONFIG, num_labels=2), {"inputs_embeds": RNG.normal(size=(B, T, 8))}),
    ("led", "LEDForConditionalGeneration", LED_CONFIGS["window-4"],
     {"inputs_embeds": RNG.normal(size=(B, T, 8)), "decoder_input_ids": IDS[:, :3]}),
    ("led", "LEDModel", LED_CONFIGS["window-4"], {"input_ids": IDS, "decoder_inputs_embeds": RNG.normal(size=(B, 3, 8))}),
    ("led", "LEDModel", LED_CONFIGS["window-4"],
     {"inputs_embeds": RNG.normal(size=(B, T, 8)), "decoder_inputs_embeds": RNG.normal(size=(B, 3, 8))}),
]


@pytest.mark.parametrize("family, cls_name, config, inputs", EMBEDS_CASES,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(EMBEDS_CASES)])
def test_trace_with_inputs_embeds_as_upstream(tmp_path_factory, family, cls_name, config, inputs):
    """With inputs_embeds upstream never calls its token embedding module: the trace holds the modules upstream
    runs, in its order, with its values (tests/test_trace_live.py's comparison)."""
    from test_trace_live import trace_problems

    upstream, _, _ = models(tmp_path_factory, family, cls_name, config)
    directory = tmp_path_factory.mktemp("embeds")
    upstream.save_pretrained(directory, safe_serialization=True)
    with upstream_context(family):
        problems = trace_problems(upstream, directory, cls_name, inputs)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_xglm_model_positions_are_the_table_rows(tmp_path_factory, dtype):
    """A float32 model adds golden/capture_xglm.py's correctly rounded float32 rows bit for bit, a float64 model
    the exact float64 ones (the traced embed_positions), the padding row (position -1) zero."""
    from refimpl.trace import tracing

    _, ours32, ours64 = models(tmp_path_factory, "xglm", "XGLMModel", XGLM_CONFIGS["plain"])
    model = ours32 if dtype == "float32" else ours64
    positions = np.array([[0, 1, 2, 3, 4, 5], [3, 1, 0, 2, 7, -1]])
    with tracing() as trace:
        model(input_ids=IDS, position_ids=positions)
    table = capture_xglm.sinusoid_table(14, 8, 1, np.dtype(dtype).type)
    np.testing.assert_array_equal(trace["embed_positions"], table[positions + 2])
