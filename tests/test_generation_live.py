"""generate() against live upstream on hypothesis-drawn decoder configs, prompts and options (skipped without torch)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from live import randomize_  # noqa: E402

import refimpl  # noqa: E402

LIVE = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


def build(family, vocab, seed):
    torch.manual_seed(seed)
    if family == "opt":
        cfg = transformers.OPTConfig(vocab_size=vocab, hidden_size=12, num_hidden_layers=2, ffn_dim=20,
                                     num_attention_heads=3, max_position_embeddings=48, dropout=0.0)
        model = transformers.OPTForCausalLM(cfg)
    else:
        cfg = transformers.XGLMConfig(vocab_size=vocab, d_model=12, num_layers=2, ffn_dim=20, attention_heads=3,
                                      max_position_embeddings=48, dropout=0.0, attention_dropout=0.0)
        model = transformers.XGLMForCausalLM(cfg)
    randomize_(model, seed)
    return model.eval()


@LIVE
@given(st.sampled_from(["opt", "xglm"]), st.integers(0, 2**16), st.data())
def test_generate_token_ids_match_live_upstream(tmp_path_factory, family, seed, data):
    vocab = data.draw(st.integers(8, 40))
    model = build(family, vocab, seed)
    directory = tmp_path_factory.mktemp("gen")
    model.save_pretrained(directory, safe_serialization=True)
    rng = np.random.default_rng(seed)
    batch, length = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6))
    ids = rng.integers(3, vocab, size=(batch, length))
    pads = rng.integers(0, length, size=batch)  # left padding, at least one real token per row
    mask = (np.arange(length)[None, :] >= pads[:, None]).astype(np.int64)
    ids[mask == 0] = 1
    beams = data.draw(st.sampled_from([1, 2, 3]))
    kwargs = dict(max_new_tokens=data.draw(st.integers(1, 8)), num_beams=beams,
                  no_repeat_ngram_size=data.draw(st.sampled_from([0, 2, 3])),
                  repetition_penalty=data.draw(st.sampled_from([1.0, 1.3])),
                  min_new_tokens=data.draw(st.sampled_from([None, 2])))
    if beams > 1:
        kwargs.update(length_penalty=data.draw(st.sampled_from([1.0, 0.5, -0.5])),
                      early_stopping=data.draw(st.sampled_from([False, True, "never"])),
                      num_return_sequences=data.draw(st.integers(1, beams)))
    with torch.no_grad():
        expected = model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kwargs).numpy()
    ours = refimpl.from_pretrained(directory).generate(ids, attention_mask=mask, **kwargs)
    assert np.array_equal(ours, expected), f"{family} {kwargs}\nours\n{ours}\nupstream\n{expected}"
