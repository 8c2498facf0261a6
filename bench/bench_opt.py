"""OPT at the real opt-125m shape (random weights), refimpl vs upstream: scoring 8 x 128 tokens, and
greedy generation of 32 new tokens (time per run; divide by 32 for the per-token latency).

    python bench/bench_opt.py            # both sides, table + bench/results/opt.json

Upstream computes logits and log_softmax over the vocabulary and gathers the targets; refimpl uses
`refimpl.scoring.token_logprobs` (the same numbers, logits in chunks).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import main  # noqa: E402

SHAPE = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
             max_position_embeddings=2048, word_embed_proj_dim=768)
BATCH, LENGTH = 8, 128
PROMPT_LENGTH, NEW_TOKENS = 16, 32
GEN_KWARGS = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)


def workloads():
    return {"opt-125m score 8x128": "12 layers, d=768, vocab 50272, float32, per-token log-likelihoods",
            "opt-125m greedy 32 tokens": "1 prompt of 16 tokens, 32 new tokens by greedy search with the cache"}


def token_ids():
    import numpy as np

    return np.random.default_rng(0).integers(3, SHAPE["vocab_size"], size=(BATCH, LENGTH))


def prompt():  # [1, 16]: the greedy workload's prompt
    return token_ids()[:1, :PROMPT_LENGTH]


def upstream_model():
    """The upstream side's random-weight OPTForCausalLM (torch seed 0); bench/peers.py saves it for every engine."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    return OPTForCausalLM(OPTConfig(**SHAPE, dropout=0.0)).eval()


def run(side, workload):
    ids = token_ids()
    generating = "greedy" in workload
    start, gen_kwargs = prompt(), GEN_KWARGS
    if side == "upstream":
        import torch

        model = upstream_model()
        ids_t = torch.from_numpy(ids)
        if generating:
            prompt_t = torch.from_numpy(start)
            return torch.no_grad()(lambda: model.generate(prompt_t, attention_mask=torch.ones_like(prompt_t), **gen_kwargs))

        @torch.no_grad()
        def fn():
            logits = model(input_ids=ids_t, use_cache=False).logits
            return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids_t[:, 1:, None])

        return fn
    import numpy as np

    from refimpl.models.opt import OPTConfig
    from refimpl.modeling import Model
    from refimpl.models.opt import param_shapes
    from refimpl.scoring import token_logprobs

    cfg = OPTConfig(**SHAPE)
    rng = np.random.default_rng(0)
    params = {k: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for k, shape in param_shapes(cfg, "OPTForCausalLM").items()}
    model = Model(cfg, params, "OPTForCausalLM", np.float32)
    if generating:
        return lambda: model.generate(start, attention_mask=np.ones_like(start), **gen_kwargs)
    return lambda: token_logprobs(model, ids)


if __name__ == "__main__":
    main(__file__, workloads, run)
