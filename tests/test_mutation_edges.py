"""Edges the mutation runs found untested: the LM head's log-sum-exp merge on rows of very different
scale, BeamSearchScorer's check of num_beam_groups (against upstream's), the abstract Constraint, and
OPT's prepare_inputs_for_generation with a cache (against upstream's)."""
import numpy as np
import pytest

from refimpl.generation.beam import BeamSearchScorer
from refimpl.generation.config import GenerationConfig
from refimpl.generation.constraints import Constraint
from refimpl.models import opt


def test_numba_target_logprobs_rows_of_very_different_scale():
    """Each row's log-sum-exp is shifted by that row's own maximum: a row whose logits lie ~1000 below
    another row's still gets finite log-probabilities (log-softmax written here in float64)."""
    pytest.importorskip("numba")
    from refimpl.lm_head import target_logprobs_numba

    rng = np.random.default_rng(3)
    V, E = 50, 4
    head = rng.standard_normal((V, E)).astype(np.float32)
    b = rng.standard_normal(V).astype(np.float32)
    hidden = np.zeros((3, E), np.float32)
    hidden[1] = rng.standard_normal(E)
    targets = np.array([4, 17, 33])
    for shift in (1000.0, -1000.0):  # row 1's logits all lie ~|shift| away from rows 0 and 2's
        big_head = np.concatenate([head, np.full((V, 1), 1.0, np.float32)], axis=1)    # [V, E + 1]
        big_hidden = np.concatenate([hidden, np.array([[0.0], [shift], [0.0]], np.float32)], axis=1)
        logits = big_hidden.astype(np.float64) @ big_head.astype(np.float64).T + b.astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        expected = (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))[np.arange(3), targets]
        for chunk in (None, 7):
            got = target_logprobs_numba(big_hidden, big_head, targets, b, vocab_chunk=chunk)
            assert np.all(np.isfinite(got)), f"shift {shift} chunk {chunk}: {got}"
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4,
                                       err_msg=f"shift {shift} chunk {chunk}")


@pytest.mark.parametrize("num_beams", [2, 4, 6])
@pytest.mark.parametrize("groups", [1, 2, 3, 4, 5, 6, 7, 8])
def test_beam_scorer_checks_groups_as_upstream(num_beams, groups):
    """BeamSearchScorer refuses num_beam_groups that exceed or do not divide num_beams exactly when
    upstream's BeamSearchScorer does."""
    pytest.importorskip("torch")
    from transformers.generation.beam_search import BeamSearchScorer as Upstream

    try:
        Upstream(batch_size=1, num_beams=num_beams, device="cpu", num_beam_groups=groups)
        upstream_ok = True
    except ValueError:
        upstream_ok = False
    cfg = GenerationConfig(num_beams=num_beams, max_length=10)
    if upstream_ok:
        scorer = BeamSearchScorer(1, cfg, 3, num_beam_groups=groups)
        assert scorer.beams == num_beams // groups
    else:
        with pytest.raises(ValueError, match="num_beam_groups"):
            BeamSearchScorer(1, cfg, 3, num_beam_groups=groups)


def test_abstract_constraint_refuses_advance():
    """upstream's Constraint is abstract: advance() on it raises NotImplementedError."""
    with pytest.raises(NotImplementedError):
        Constraint().advance()


@pytest.mark.parametrize("past, length", [(3, 7), (5, 5), (6, 2), (4, 9)])
def test_opt_prepare_inputs_with_cache_as_upstream(past, length):
    """With a cache of `past` positions (head size 8, so the head size is not the past length), only the
    tokens the cache has not seen are fed: the same input_ids as upstream's OPTForCausalLM."""
    torch = pytest.importorskip("torch")
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=32, hidden_size=16, num_attention_heads=2, ffn_dim=16, num_hidden_layers=2,
                    max_position_embeddings=32, word_embed_proj_dim=16)
    model = OPTForCausalLM(cfg)
    ids = np.arange(2 * length).reshape(2, length) % 32
    keys = np.zeros((2, 2, past, 8))                       # [B, heads, past, head size]
    cache = ((keys, keys), (keys, keys))
    tcache = tuple((torch.from_numpy(k), torch.from_numpy(v)) for k, v in cache)
    expected = model.prepare_inputs_for_generation(torch.from_numpy(ids), past_key_values=tcache)["input_ids"]
    got = opt.prepare_inputs_for_generation(ids, past_key_values=cache)["input_ids"]
    np.testing.assert_array_equal(got, expected.numpy(), err_msg=f"past {past} length {length}")
