"""The forward interface of every class against live upstream (skipped without torch):

- return_dict=False and True for every class of the four families, on hypothesis-drawn configs and inputs
  with every output flag, labels, caches (and a cached second step), LED encoder_outputs given as a tuple:
  the tuple's nesting (None slots included) and every tensor in it, float32 and float64;
- config.json's `return_dict: false`;
- every parameter of upstream's forward signatures: implemented (compared against upstream with a
  non-default value) or refused with a ValueError naming it;
- NEZHA checkpoints saved by upstream after `prune_heads`, float32 and float64, head masks included;
  OPT / XGLM / LED configs with pruned_heads refused as upstream refuses them.

Upstream's float64 runs are the exact mathematics (golden/common.py running_in; NEZHA's and XGLM's float32
sinusoid tables replaced as in golden/capture_nezha.py and capture_xglm.py); float32 at the golden
tolerance or 10 x refimpl's own float32 noise on that tensor (tests/golden.py).
"""
import contextlib
import inspect
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import live  # noqa: E402,F401  (puts golden/ on sys.path)
import capture_nezha  # noqa: E402
import capture_xglm  # noqa: E402
from common import flatten as flatten_torch, randomize_, running_in, to_torch  # noqa: E402
from golden import compare, flatten, float32_noise  # noqa: E402
from test_led_live import led_configs  # noqa: E402
from test_nezha_live import nezha_configs  # noqa: E402
from test_opt_live import opt_configs  # noqa: E402
from test_xglm_live import xglm_configs  # noqa: E402

import refimpl  # noqa: E402
from refimpl.models import family  # noqa: E402

FAMILIES = ("opt", "xglm", "nezha", "led")
CLASSES = [(fam, name) for fam in FAMILIES for name in family(fam).architectures]
LIVE = settings(max_examples=24, deadline=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


# ---------------------------------------------------------------- models


@st.composite
def configs(draw, fam, cls_name):
    """A small upstream config of the family (the strategies of the family's own live tests)."""
    if fam == "opt":
        return draw(opt_configs())
    if fam == "xglm":
        return draw(xglm_configs(transformers))
    if fam == "led":
        return draw(led_configs())
    decoder = cls_name == "NezhaModel" and draw(st.booleans())  # heads of a decoder config keep a cache in tuples
    return transformers.NezhaConfig(**draw(nezha_configs(cls_name)), is_decoder=decoder or draw(st.booleans()),
                                    add_cross_attention=decoder and draw(st.booleans()))


@contextlib.contextmanager
def exact_upstream(fam):
    """Upstream with its float32 sinusoid tables made exact (built inside: NEZHA's is made at __init__)."""
    patch = {"nezha": capture_nezha.exact_relative_positions, "xglm": capture_xglm.correctly_rounded_sinusoid}
    with patch.get(fam, contextlib.nullcontext)():
        yield


def build(fam, cls_name, cfg, seed):
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg)
    randomize_(model, seed)
    if fam == "xglm":
        capture_xglm.protect_position_ids(model)
    return model.eval()


# ---------------------------------------------------------------- inputs


def accepts(cls_name):  # upstream's forward parameters
    return set(inspect.signature(getattr(transformers, cls_name).forward).parameters) - {"self", "kwargs"}


def token_inputs(fam, cls_name, cfg, rng, draw):  # -> ({name: array}, padded mask)
    batch, length = draw(st.integers(1, 3)), draw(st.integers(2, 7))
    shape = (batch, draw(st.integers(1, 3)), length) if cls_name == "NezhaForMultipleChoice" else (batch, length)
    lengths = rng.integers(2, length + 1, size=shape[:-1])
    keep = np.arange(length) < lengths[..., None]
    if fam == "led":  # "<s> w ... </s>" then padding: one </s> per row (LEDForSequenceClassification pools there)
        ids = np.where(keep, rng.integers(3, cfg.vocab_size, size=shape), 1)
        ids[..., 0] = 0
        np.put_along_axis(ids, lengths[..., None] - 1, 2, axis=-1)
    else:
        ids = rng.integers(0, cfg.vocab_size, size=shape)
        keep = keep[..., ::-1] if draw(st.booleans()) and fam != "nezha" else keep
    mask = keep.astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask}
    if fam == "nezha":
        arrays["token_type_ids"] = rng.integers(0, cfg.type_vocab_size, size=shape)
    if fam == "led" and draw(st.booleans()):
        arrays["global_attention_mask"] = (rng.random(shape) < 0.3).astype(np.int64)
    if draw(st.booleans()):
        layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads  # LED: the encoder's
        arrays["head_mask"] = rng.integers(0, 3, size=(layers, heads)) / 2
    return arrays, mask


def label_inputs(cls_name, cfg, ids, mask, rng):  # the head's labels (upstream's argument names)
    batch = ids.shape[0]
    if cls_name.endswith(("CausalLM", "MaskedLM", "ConditionalGeneration", "PreTraining")):
        labels = {"labels": np.where(mask == 1, ids, -100)}
        if cls_name.endswith("PreTraining"):
            labels["next_sentence_label"] = rng.integers(0, 2, batch)
        return labels
    if cls_name.endswith("TokenClassification"):
        return {"labels": np.where(mask == 1, rng.integers(0, cfg.num_labels, ids.shape), -100)}
    if cls_name.endswith("QuestionAnswering"):
        return {"start_positions": rng.integers(0, ids.shape[-1] + 2, batch),
                "end_positions": rng.integers(0, ids.shape[-1] + 2, batch)}
    if cls_name.endswith("SequenceClassification"):
        return {"labels": rng.normal(size=batch) if cfg.num_labels == 1 else rng.integers(0, cfg.num_labels, batch)}
    if cls_name.endswith(("NextSentencePrediction", "MultipleChoice")):
        return {"labels": rng.integers(0, 2 if cls_name.endswith("Prediction") else ids.shape[1], batch)}
    return {}


def draw_steps(fam, cls_name, cfg, rng, draw):
    """[(arrays, kwargs, use_past)]: one call, and for decoders with a cache one more token from it."""
    arrays, mask = token_inputs(fam, cls_name, cfg, rng, draw)
    if draw(st.booleans()):
        arrays.update(label_inputs(cls_name, cfg, arrays["input_ids"], mask, rng))
    kwargs = dict(output_attentions=draw(st.booleans()), output_hidden_states=draw(st.booleans()))
    if "use_cache" in accepts(cls_name):
        kwargs["use_cache"] = draw(st.booleans())
    steps = [(arrays, kwargs, False)]
    seq2seq = fam == "led" and cls_name in ("LEDModel", "LEDForConditionalGeneration") and "labels" not in arrays
    if seq2seq:
        arrays["decoder_input_ids"] = rng.integers(3, cfg.vocab_size, size=(mask.shape[0], 2))
        if draw(st.booleans()):  # upstream appends a given tuple to its return_dict=False tuple as it is
            encoder = [rng.normal(size=mask.shape + (cfg.d_model,))]
            encoder += [rng.normal(size=mask.shape + (cfg.d_model,)) for _ in range(draw(st.integers(0, 2)))]
            arrays["encoder_outputs"] = tuple(encoder)
    if kwargs.get("use_cache") and "labels" not in arrays and (fam in ("opt", "xglm") or seq2seq) and \
            cls_name != "OPTForQuestionAnswering" and draw(st.booleans()):
        batch = mask.shape[0]
        if fam == "led":
            more = {k: v for k, v in arrays.items() if k != "decoder_input_ids"}
            more["decoder_input_ids"] = rng.integers(3, cfg.vocab_size, size=(batch, 1))
        else:
            more = {"input_ids": rng.integers(0, cfg.vocab_size, size=(batch, 1)),
                    "attention_mask": np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)}
        steps.append((more, kwargs, True))
    return steps


# ---------------------------------------------------------------- running both


def as_torch(value, dtype):  # arrays (and tuples of them) -> tensors; floats in the run's dtype
    if isinstance(value, tuple):
        return tuple(as_torch(v, dtype) for v in value)
    return to_torch(np.asarray(value), dtype)


def as_numpy(value, dtype):  # the same arguments for refimpl: float arrays in the model's dtype
    if isinstance(value, tuple):
        return tuple(as_numpy(v, dtype) for v in value)
    value = np.asarray(value)
    return value.astype(dtype) if value.dtype.kind == "f" else value


def skeleton(value):  # a returned value's nesting: tuples as lists, None slots kept, tensors as "x"
    if isinstance(value, (tuple, list)):
        return [skeleton(v) for v in value]
    return None if value is None else "x"


def returned_values(out):  # a tuple as returned, or an output object's values in field order
    return out if isinstance(out, tuple) else tuple(out[k] for k in out.keys())


class UpstreamFailed(Exception):
    """Upstream raised on these inputs (its refusal)."""


@torch.no_grad()
def run_upstream(model, steps, dtype, return_dict):  # -> per step (skeleton, {key: array}, field names or None)
    results, past, problem_type = [], None, model.config.problem_type
    with running_in(model, dtype):
        for arrays, kwargs, use_past in steps:
            args = {k: as_torch(v, dtype) for k, v in arrays.items()}
            if use_past:
                args["past_key_values"] = past
            try:
                out = model(**args, **kwargs, return_dict=return_dict)
                if len(steps) > 1:  # the next step's cache
                    past = model(**args, **kwargs, return_dict=True).get("past_key_values")
            except Exception as error:  # noqa: BLE001
                raise UpstreamFailed(repr(error)) from error
            model.config.problem_type = problem_type  # upstream writes the inferred type back; undo it
            values, flat = returned_values(out), {}
            flatten_torch("out", values, flat)
            results.append((skeleton(values), flat, None if isinstance(out, tuple) else list(out.keys())))
    return results


def run_refimpl(ours, steps, return_dict):
    results, past = [], None
    for arrays, kwargs, use_past in steps:
        args = {k: as_numpy(v, ours.dtype) for k, v in arrays.items()}
        if use_past:
            args["past_key_values"] = past
        out = ours(**args, **kwargs, return_dict=return_dict)
        if len(steps) > 1:  # the next step's cache
            past = getattr(ours(**args, **kwargs, return_dict=True), "past_key_values", None)
        values, flat = returned_values(out), {}
        flatten("out", values, flat)
        results.append((skeleton(values), flat, None if isinstance(out, tuple) else list(out.keys())))
    return results


def interface_problems(fam, cls_name, model, steps, directory, return_dict, save=True, dtypes=("float64", "float32")):
    """Refimpl's return_dict={return_dict} outputs against upstream's: nesting, field names, every tensor."""
    if save:
        model.save_pretrained(directory, safe_serialization=True)
    problems, exact = [], None
    for dtype in dtypes:
        expected = run_upstream(model, steps, getattr(torch, dtype), return_dict)
        ours = run_refimpl(refimpl.from_pretrained(directory, architecture=cls_name, dtype=dtype), steps, return_dict)
        exact = ours if dtype == "float64" else exact
        for step, ((up_skeleton, up_flat, up_keys), (skel, flat, keys)) in enumerate(zip(expected, ours)):
            where = f"[{cls_name} return_dict={return_dict} step {step} {dtype}]"
            if skel != up_skeleton or keys != up_keys:
                problems.append(f"{where}: structure {skel} {keys}, upstream {up_skeleton} {up_keys}")
                continue
            noise = float32_noise(flat, exact[step][1]) if dtype == "float32" else None
            problems += compare(flat, up_flat, dtype, where, noise)
    return problems


@LIVE
@given(st.sampled_from(CLASSES), st.booleans(), st.data())
def test_return_dict_matches_upstream(tmp_path_factory, fam_cls, return_dict, data):
    """Every class, return_dict False and True: upstream's tuple (or object), element by element."""
    fam, cls_name = fam_cls
    seed = data.draw(st.integers(0, 2**16))
    with exact_upstream(fam):
        cfg = data.draw(configs(fam, cls_name))
        model = build(fam, cls_name, cfg, seed)
        steps = draw_steps(fam, cls_name, cfg, np.random.default_rng(seed), data.draw)
        problems = interface_problems(fam, cls_name, model, steps, tmp_path_factory.mktemp("iface"), return_dict)
    assert not problems, f"config {cfg.to_diff_dict()}\n" + "\n".join(problems)


@pytest.mark.parametrize("fam, cls_name", [("opt", "OPTForCausalLM"), ("nezha", "NezhaModel"),
                                           ("led", "LEDForConditionalGeneration"), ("xglm", "XGLMModel")])
def test_config_return_dict_false(tmp_path, fam, cls_name):
    """config.json's `"return_dict": false` makes upstream (and refimpl) return tuples by default."""
    with exact_upstream(fam):
        cfg = {"opt": transformers.OPTConfig(vocab_size=20, hidden_size=8, num_attention_heads=2, num_hidden_layers=2,
                                             ffn_dim=8, max_position_embeddings=16),
               "xglm": transformers.XGLMConfig(vocab_size=20, d_model=8, attention_heads=2, num_layers=2, ffn_dim=8),
               "nezha": transformers.NezhaConfig(vocab_size=20, hidden_size=8, num_attention_heads=2,
                                                 num_hidden_layers=2, intermediate_size=8, max_position_embeddings=16),
               "led": transformers.LEDConfig(vocab_size=20, d_model=8, encoder_attention_heads=2,
                                             decoder_attention_heads=2, encoder_layers=2, decoder_layers=1,
                                             encoder_ffn_dim=8, decoder_ffn_dim=8, attention_window=4,
                                             max_encoder_position_embeddings=16, max_decoder_position_embeddings=16)
               }[fam]
        cfg.return_dict = False
        model = build(fam, cls_name, cfg, 7)
        ids = np.array([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])
        steps = [({"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)},
                  {"output_hidden_states": True}, False)]
        model.save_pretrained(tmp_path, safe_serialization=True)
        assert json.loads((tmp_path / "config.json").read_text())["return_dict"] is False
        expected = run_upstream(model, steps, torch.float64, None)
        ours = run_refimpl(refimpl.from_pretrained(tmp_path, architecture=cls_name, dtype="float64"), steps, None)
    assert ours[0][0] == expected[0][0], f"structure {ours[0][0]}, upstream {expected[0][0]}"
    assert not compare(ours[0][1], expected[0][1], "float64", cls_name)


# ---------------------------------------------------------------- every parameter of upstream's forwards


REFUSED = {}  # {(class, parameter): why}: what refimpl refuses with a ValueError naming it (nothing, today)
BOTH_REFUSE = {("LEDForSequenceClassification", "inputs_embeds"):  # upstream: NotImplementedError
               "it pools the decoder state at the eos tokens of input_ids"}
WALK_CONFIGS = {  # one small config per family; cross-attention where the family has it
    "opt": dict(vocab_size=24, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, ffn_dim=12,
                max_position_embeddings=20, word_embed_proj_dim=6, num_labels=3, dropout=0.0),
    "xglm": dict(vocab_size=24, d_model=8, attention_heads=2, num_layers=2, ffn_dim=12, max_position_embeddings=12,
                 add_cross_attention=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0),
    "nezha": dict(vocab_size=24, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, intermediate_size=12,
                  max_position_embeddings=12, max_relative_position=3, type_vocab_size=3, num_labels=3,
                  is_decoder=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0),
    "led": dict(vocab_size=24, d_model=8, encoder_attention_heads=2, decoder_attention_heads=2, encoder_layers=2,
                decoder_layers=2, encoder_ffn_dim=12, decoder_ffn_dim=12, attention_window=4, num_labels=3,
                max_encoder_position_embeddings=24, max_decoder_position_embeddings=16, dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0),
}
CROSS = ("encoder_hidden_states", "encoder_attention_mask")  # NEZHA: on a decoder with cross-attention


def walk_config(fam, cls_name, parameter):
    config_class = {"opt": transformers.OPTConfig, "xglm": transformers.XGLMConfig,
                    "nezha": transformers.NezhaConfig, "led": transformers.LEDConfig}[fam]
    changes = {"add_cross_attention": parameter in CROSS} if fam == "nezha" else {}
    if cls_name == "NezhaForQuestionAnswering":  # start and end logits
        changes["num_labels"] = 2
    return config_class(**{**WALK_CONFIGS[fam], **changes})


def base_inputs(fam, cls_name, cfg, rng):  # input_ids alone ("<s> ... </s>" for LED)
    shape = (2, 2, 5) if cls_name == "NezhaForMultipleChoice" else (2, 5)
    ids = rng.integers(3, cfg.vocab_size, size=shape)
    if fam == "led":
        ids[:, 0], ids[:, -1] = 0, 2
    return {"input_ids": ids}


def with_parameter(fam, cls_name, cfg, name, rng):
    """[(arrays, kwargs, use_past)]: the base inputs plus `name` with a value other than its default (and what it
    needs beside it). None: no value for it (the test then fails: add one)."""
    arrays = base_inputs(fam, cls_name, cfg, rng)
    ids = arrays["input_ids"]
    width = cfg.word_embed_proj_dim if fam == "opt" else cfg.hidden_size
    heads = (cfg.num_hidden_layers, cfg.num_attention_heads)  # LED: the encoder's
    dec_heads = (cfg.decoder_layers, cfg.decoder_attention_heads) if fam == "led" else heads
    mask = np.ones(ids.shape, np.int64)
    mask[0, ..., -2:] = 0
    decoder_ids = rng.integers(3, cfg.vocab_size, size=ids.shape)  # as long as input_ids: LED classification pools there
    encoder_states = rng.normal(size=ids.shape + (width,)) if fam == "nezha" else rng.normal(size=(2, 4, width))
    values = {
        "input_ids": {},
        "attention_mask": {"attention_mask": mask},
        "token_type_ids": {"token_type_ids": rng.integers(0, 3, size=ids.shape)},
        "position_ids": {"position_ids": rng.integers(0, getattr(cfg, "max_position_embeddings", 8), size=ids.shape)},
        "head_mask": {"head_mask": rng.integers(0, 3, size=heads) / 2},
        "decoder_head_mask": {"decoder_head_mask": rng.integers(0, 3, size=dec_heads) / 2},
        "cross_attn_head_mask": {"cross_attn_head_mask": rng.integers(0, 3, size=dec_heads) / 2,
                                 **({"encoder_hidden_states": encoder_states} if fam == "xglm" else {})},
        "inputs_embeds": {"inputs_embeds": rng.normal(size=ids.shape + (width,)), "input_ids": None,
                          **({"decoder_input_ids": decoder_ids} if fam == "led" else {})},
        "encoder_hidden_states": {"encoder_hidden_states": encoder_states},
        "encoder_attention_mask": {"encoder_hidden_states": encoder_states,
                                   "encoder_attention_mask": (rng.random(encoder_states.shape[:-1]) < 0.7) * 1},
        "global_attention_mask": {"global_attention_mask": (rng.random(ids.shape) < 0.3) * 1},
        "decoder_input_ids": {"decoder_input_ids": decoder_ids},
        "decoder_attention_mask": {"decoder_input_ids": decoder_ids,
                                   "decoder_attention_mask": np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])},
        "decoder_inputs_embeds": {"decoder_inputs_embeds": rng.normal(size=ids.shape + (width,))},
        "encoder_outputs": {"encoder_outputs": (rng.normal(size=ids.shape + (width,)),)},
        "labels": label_inputs(cls_name, cfg, ids, np.ones(ids.shape, np.int64), rng),
        "next_sentence_label": label_inputs(cls_name, cfg, ids, np.ones(ids.shape, np.int64), rng),
        "start_positions": label_inputs(cls_name, cfg, ids, np.ones(ids.shape, np.int64), rng),
        "end_positions": label_inputs(cls_name, cfg, ids, np.ones(ids.shape, np.int64), rng),
    }
    flags = {"use_cache": False, "output_attentions": True, "output_hidden_states": True}
    if name in flags or name == "return_dict":  # return_dict=False: the test's own call argument
        return [(arrays, {name: flags[name]} if name in flags else {}, False)]
    if name == "past_key_values":
        if fam == "nezha":  # upstream runs only an empty cache (see refimpl.models.nezha._check_no_past)
            d = width // cfg.num_attention_heads
            empty = tuple((np.zeros((2, cfg.num_attention_heads, 0, d)),) * 2 for _ in range(cfg.num_hidden_layers))
            return [({**arrays, "past_key_values": empty}, {}, False)]
        return [(random_past(fam, cls_name, cfg, arrays, rng), {}, False)]
    if name not in values:
        return None
    arrays.update(values[name])
    return [({k: v for k, v in arrays.items() if v is not None}, {}, False)]


def random_past(fam, cls_name, cfg, arrays, rng):  # the base inputs continuing a random 3-token cache
    batch, length = arrays["input_ids"].shape
    heads = getattr(cfg, "decoder_attention_heads", cfg.num_attention_heads)
    layers = getattr(cfg, "decoder_layers", cfg.num_hidden_layers)
    d = cfg.hidden_size // heads
    own = (rng.normal(size=(batch, heads, 3, d)), rng.normal(size=(batch, heads, 3, d)))
    cross = (rng.normal(size=(batch, heads, length, d)),) * 2 if fam == "led" else ()  # encoder keys / values
    past = tuple(own + cross for _ in range(layers))
    if fam == "led":
        return {**arrays, "past_key_values": past, "decoder_input_ids": arrays["input_ids"][:, -1:]}
    return {**arrays, "past_key_values": past, "attention_mask": np.ones((batch, 3 + length), np.int64)}


@pytest.mark.parametrize("fam, cls_name", CLASSES)
def test_every_upstream_parameter_is_implemented_or_refused(tmp_path_factory, fam, cls_name):
    """inspect.signature(upstream forward): each parameter, given a non-default value, gives upstream's outputs
    (float32 and float64), or refimpl refuses it with a ValueError naming it (only those in REFUSED), or both
    refuse it (upstream fails on such input, refimpl says why)."""
    ours = [n for n in inspect.signature(family(fam).architectures[cls_name]).parameters][2:]  # after (params, cfg)
    upstream_order = [n for n in inspect.signature(getattr(transformers, cls_name).forward).parameters
                      if n not in ("self", "kwargs")]
    problems = [] if ours[:len(upstream_order)] == upstream_order else [
        f"{cls_name}: refimpl's positional order {ours} is not upstream's {upstream_order}"]
    models = {}
    for name in sorted(accepts(cls_name)):
        cfg = walk_config(fam, cls_name, name)
        steps = with_parameter(fam, cls_name, cfg, name, np.random.default_rng(len(name)))
        if steps is None:
            problems.append(f"{cls_name}.forward({name}=...): upstream accepts it; give this test a value for it")
            continue
        key = cfg.add_cross_attention
        if key not in models:
            with exact_upstream(fam):
                models[key] = build(fam, cls_name, cfg, 11)
            directory = tmp_path_factory.mktemp("walk")
            models[key].save_pretrained(directory, safe_serialization=True)
            models[key] = (models[key], directory)
        model, directory = models[key]
        try:
            with exact_upstream(fam):
                problems += interface_problems(fam, cls_name, model, steps, directory, name != "return_dict",
                                               save=False, dtypes=("float64",))
        except UpstreamFailed as failure:  # then refimpl must refuse too, with an error of its own
            try:
                run_refimpl(refimpl.from_pretrained(directory, architecture=cls_name, dtype="float64"), steps, True)
                problems.append(f"{cls_name}({name}=...): upstream fails ({failure}), refimpl answers")
            except (ValueError, TypeError, NotImplementedError):
                if (cls_name, name) not in BOTH_REFUSE:
                    problems.append(f"{cls_name}({name}=...): upstream fails ({failure}); add it to BOTH_REFUSE")
        except ValueError as error:
            if name not in str(error) or (cls_name, name) not in REFUSED:
                problems.append(f"{cls_name}({name}=...): refimpl raises {error!r}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- pruned heads


NEZHA_CLASSES = [name for fam, name in CLASSES if fam == "nezha"]


@st.composite
def prunings(draw, layers, heads):  # {layer: [heads]}: some layers, some heads (all of a layer at times)
    chosen = draw(st.lists(st.integers(0, layers - 1), min_size=1, max_size=layers, unique=True))
    return {layer: draw(st.lists(st.integers(0, heads - 1), min_size=1, max_size=heads, unique=True))
            for layer in chosen}


@LIVE
@given(st.sampled_from(NEZHA_CLASSES), st.booleans(), st.data())
def test_pruned_nezha_checkpoints_match_upstream(tmp_path_factory, cls_name, return_dict, data):
    """Upstream's prune_heads, then save_pretrained (pruned_heads in config.json, smaller q/k/v/output weights,
    a fully pruned layer's zero-size weights dropped): refimpl loads it and runs as upstream, float32 and
    float64, with head masks (those upstream can broadcast; upstream's failures refused with a ValueError)."""
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    with exact_upstream("nezha"):
        cfg = transformers.NezhaConfig(**data.draw(nezha_configs(cls_name)))
        model = build("nezha", cls_name, cfg, seed)
        pruning = data.draw(prunings(cfg.num_hidden_layers, cfg.num_attention_heads))
        model.prune_heads(pruning)
        arrays, mask = token_inputs("nezha", cls_name, cfg, rng, data.draw)
        arrays.pop("head_mask", None)
        left = [cfg.num_attention_heads - len(set(pruning.get(i, ()))) for i in range(cfg.num_hidden_layers)]
        width = data.draw(st.sampled_from(sorted({1, cfg.num_attention_heads, *left})))
        if data.draw(st.booleans()):
            arrays["head_mask"] = rng.integers(0, 3, size=(cfg.num_hidden_layers, width)) / 2
        if data.draw(st.booleans()):
            arrays.update(label_inputs(cls_name, cfg, arrays["input_ids"], mask, rng))
        kwargs = dict(output_attentions=data.draw(st.booleans()), output_hidden_states=data.draw(st.booleans()))
        directory = tmp_path_factory.mktemp("pruned")
        try:
            problems = interface_problems("nezha", cls_name, model, [(arrays, kwargs, False)], directory, return_dict)
        except UpstreamFailed as failure:  # a head mask upstream cannot broadcast: refimpl names it
            with pytest.raises(ValueError, match="head_mask"):
                run_refimpl(refimpl.from_pretrained(directory, architecture=cls_name), [(arrays, kwargs, False)], True)
            assert "head_mask" in arrays, f"upstream failed without a head mask: {failure}"
            return
    saved = json.loads((directory / "config.json").read_text())["pruned_heads"]
    assert {int(k): sorted(v) for k, v in saved.items()} == {k: sorted(set(v)) for k, v in pruning.items()}
    assert not problems, f"config {cfg.to_diff_dict()}\n" + "\n".join(problems)


@pytest.mark.parametrize("fam, config", [
    ("opt", transformers.OPTConfig(vocab_size=20, hidden_size=8, num_attention_heads=2, num_hidden_layers=2, ffn_dim=8)),
    ("xglm", transformers.XGLMConfig(vocab_size=20, d_model=8, attention_heads=2, num_layers=2, ffn_dim=8)),
    ("led", transformers.LEDConfig(vocab_size=20, d_model=8, encoder_attention_heads=2, decoder_attention_heads=2,
                                   encoder_layers=2, decoder_layers=1, encoder_ffn_dim=8, decoder_ffn_dim=8,
                                   attention_window=4)),
])
def test_pruned_heads_refused_where_upstream_cannot_prune(tmp_path, fam, config):
    """OPT, XGLM and LED have no _prune_heads in 4.37.2: upstream cannot build a model from a config with
    pruned_heads; refimpl refuses such a checkpoint with a ValueError naming pruned_heads."""
    base = family(fam).base_model
    getattr(transformers, base)(config).save_pretrained(tmp_path, safe_serialization=True)
    config.pruned_heads = {0: [1]}
    with pytest.raises(AttributeError, match="_prune_heads"):
        getattr(transformers, base)(config)
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pruned_heads"):
        refimpl.from_pretrained(tmp_path)


@pytest.mark.parametrize("given", ["object", "list"])
def test_led_tuple_with_encoder_outputs_upstream_cannot_append(tmp_path, given):
    """return_dict=False appends encoder_outputs to a tuple: upstream raises TypeError for an output object or a
    list, and so does refimpl (naming encoder_outputs)."""
    cfg = transformers.LEDConfig(**WALK_CONFIGS["led"])
    model = build("led", "LEDModel", cfg, 3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = np.array([[0, 5, 6, 2]])
    with torch.no_grad():
        encoder = model.get_encoder()(torch.from_numpy(ids))
        with pytest.raises(TypeError, match="concatenate"):
            model(decoder_input_ids=torch.from_numpy(ids), return_dict=False,
                  encoder_outputs=encoder if given == "object" else list(encoder.to_tuple()))
    ours = refimpl.from_pretrained(tmp_path, dtype="float64")
    encoder = ours.forward_fn.__globals__["led_encoder"](ours.params, ours.config, ids)
    with pytest.raises(TypeError, match="encoder_outputs"):
        ours(decoder_input_ids=ids, return_dict=False,
             encoder_outputs=encoder if given == "object" else list(encoder.to_tuple()))
