"""XGLM at the real xglm-564M shape (random weights): scoring 1 x 128 tokens, refimpl vs upstream PyTorch.

    python bench/bench_xglm.py            # both sides, each in its own subprocess; table + bench/results/xglm.json
    python bench/bench_xglm.py --workload "xglm-564M logits+log_softmax 1x128"

Workloads (24 layers, d=1024, 16 heads, ffn 4096, vocab 256008, float32, median of 3 after a warm-up):
- logits + log_softmax: the full [1, 128, 256008] log-probabilities on both sides
  (refimpl: XGLMForCausalLM forward + refimpl.ops.log_softmax; upstream: model(...).logits + torch.log_softmax).
- token log-likelihoods: upstream as above plus a gather; refimpl.scoring.token_logprobs (same numbers,
  logits in chunks, never the whole [1, 128, V] array).
The refimpl side never imports torch; bench/harness.py sets OPENBLAS_CORETYPE=SkylakeX for it when the CPU
has avx512f.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import main  # noqa: E402

SHAPE = dict(vocab_size=256008, d_model=1024, num_layers=24, attention_heads=16, ffn_dim=4096,
             max_position_embeddings=2048, activation_function="gelu", scale_embedding=True)
BATCH, LENGTH = 1, 128
FULL, TOKENS = "xglm-564M logits+log_softmax 1x128", "xglm-564M token logprobs 1x128"


def workloads():
    return {FULL: "24 layers, d=1024, vocab 256008, float32, [1, 128, V] log-probabilities",
            TOKENS: "the same model, per-token log-likelihoods (refimpl.scoring, chunked logits)"}


def token_ids():  # [1, 128], the same on both sides
    import numpy as np

    return np.random.default_rng(0).integers(3, SHAPE["vocab_size"], size=(BATCH, LENGTH))


def upstream_model():
    """The upstream side's random-weight XGLMForCausalLM (torch seed 0); bench/peers.py saves it for every engine."""
    import torch
    from transformers import XGLMConfig, XGLMForCausalLM

    torch.manual_seed(0)
    return XGLMForCausalLM(XGLMConfig(**SHAPE, dropout=0.0)).eval()


def run(side, workload):
    ids = token_ids()
    if side == "upstream":
        import torch

        model = upstream_model()
        ids_t = torch.from_numpy(ids)

        @torch.no_grad()
        def fn():
            logprobs = torch.log_softmax(model(input_ids=ids_t, use_cache=False).logits, dim=-1)  # [1, 128, V]
            return logprobs if workload == FULL else logprobs[:, :-1].gather(-1, ids_t[:, 1:, None])

        return fn
    import numpy as np

    from refimpl.models.xglm import XGLMConfig
    from refimpl.modeling import Model
    from refimpl.models.xglm import param_shapes
    from refimpl.ops import log_softmax
    from refimpl.scoring import token_logprobs

    cfg = XGLMConfig(**SHAPE)
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
              for k, shape in param_shapes(cfg, "XGLMForCausalLM").items() if k != "lm_head.weight"}
    params["lm_head.weight"] = params["model.embed_tokens.weight"]  # tied, as upstream
    model = Model(cfg, params, "XGLMForCausalLM", np.float32)
    if workload == FULL:
        return lambda: log_softmax(model(input_ids=ids, use_cache=False).logits)  # [1, 128, V]
    return lambda: token_logprobs(model, ids)  # [1, 127]


if __name__ == "__main__":
    main(__file__, workloads, run)
