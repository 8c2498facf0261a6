"""OPT against live upstream on hypothesis-drawn configs and inputs (skipped without torch)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from live import Case, Step, live_problems, randomize_  # noqa: E402

CLASSES = ["OPTModel", "OPTForCausalLM", "OPTForSequenceClassification", "OPTForQuestionAnswering"]


@st.composite
def opt_configs(draw):
    heads = draw(st.integers(1, 4))
    hidden = heads * draw(st.integers(2, 5))  # head_dim >= 2
    hidden = hidden if hidden >= 4 else 2 * hidden  # LayerNorm over 2 features is too ill-conditioned for float32
    pre_ln = draw(st.booleans())
    return transformers.OPTConfig(
        vocab_size=draw(st.integers(5, 40)), hidden_size=hidden, num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 3)), ffn_dim=draw(st.integers(1, 24)),
        max_position_embeddings=draw(st.integers(12, 20)), do_layer_norm_before=pre_ln,
        word_embed_proj_dim=draw(st.sampled_from([hidden, hidden + 1, hidden - 1])),
        enable_bias=draw(st.booleans()), layer_norm_elementwise_affine=draw(st.booleans()),
        activation_function=draw(st.sampled_from(["relu", "gelu", "gelu_new"])),
        num_labels=draw(st.integers(1, 3)), dropout=0.0, pad_token_id=1)


# No shrinking: each example runs upstream twice; a failure prints its config and inputs instead.
LIVE = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


@LIVE
@given(opt_configs(), st.sampled_from(CLASSES), st.data())
def test_opt_matches_live_upstream(tmp_path_factory, cfg, cls_name, data):
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg)
    randomize_(model, seed)
    rng = np.random.default_rng(seed)
    batch, length = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 8))
    ids = rng.integers(0, cfg.vocab_size, size=(batch, length))
    lengths = rng.integers(1, length + 1, size=batch)
    left = data.draw(st.booleans())
    keep = np.arange(length)[None, :] < lengths[:, None]
    mask = (keep[:, ::-1] if left else keep).astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask}
    if data.draw(st.booleans()):
        arrays["head_mask"] = rng.integers(0, 2, size=(cfg.num_hidden_layers, cfg.num_attention_heads)).astype(float)
    kwargs = dict(output_attentions=data.draw(st.booleans()), output_hidden_states=data.draw(st.booleans()))
    if cls_name == "OPTForCausalLM":
        arrays["labels"] = np.where(mask == 1, ids, -100)
    elif cls_name == "OPTForSequenceClassification":
        arrays["labels"] = (rng.normal(size=batch) if cfg.num_labels == 1 else rng.integers(0, cfg.num_labels, batch))
    elif cls_name == "OPTForQuestionAnswering":
        arrays["start_positions"] = rng.integers(0, length + 2, batch)
        arrays["end_positions"] = rng.integers(0, length + 2, batch)
    case = Case("live", [Step(arrays, kwargs)])
    if cls_name != "OPTForQuestionAnswering" and length > 1:  # continue from the cache for one more token
        more = rng.integers(0, cfg.vocab_size, size=(batch, 1))
        full_mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        case.steps[0].kwargs["use_cache"] = True
        case.steps.append(Step({"input_ids": more, "attention_mask": full_mask}, {"use_cache": True}, use_past=True))
    problems = live_problems(model, case, tmp_path_factory.mktemp("opt"))
    assert not problems, f"config {cfg.to_diff_dict()}\n" + "\n".join(problems)
