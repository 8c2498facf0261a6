"""NEZHA-base forward, refimpl vs upstream PyTorch, side by side: `python bench/bench_nezha.py`.

Shape: 12 layers, d=768, 12 heads, intermediate 3072, vocab 21128, max_relative_position 64, random
weights, float32, NezhaModel (last_hidden_state + pooler) on 8x128 and 1x512 tokens (the last row of
8x128 padded by a quarter). bench/harness.py runs each side in its own process (peak RSS its own).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import main  # noqa: E402

CONFIG = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
              intermediate_size=3072, max_position_embeddings=512, max_relative_position=64, type_vocab_size=2)
SHAPES = {"nezha-base 8x128": (8, 128), "nezha-base 1x512": (1, 512)}


def workloads():
    return {name: f"NezhaModel forward, {b} x {t} tokens, float32" for name, (b, t) in SHAPES.items()}


def inputs(workload):  # -> (ids [B, T] int64, mask [B, T])
    import numpy as np

    batch, length = SHAPES[workload]
    rng = np.random.default_rng(0)
    ids = rng.integers(1, CONFIG["vocab_size"], size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    if batch > 1:
        mask[-1, length - length // 4:] = 0
    return ids, mask


def upstream_model():
    """The upstream side's random-weight NezhaModel (torch seed 0); bench/peers.py saves it for every engine."""
    import torch
    from transformers import NezhaConfig, NezhaModel

    torch.manual_seed(0)
    return NezhaModel(NezhaConfig(**CONFIG)).eval()


def run(side, workload):
    ids, mask = inputs(workload)
    if side == "upstream":
        import torch

        model = upstream_model()
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        return torch.no_grad()(lambda: model(input_ids=ids_t, attention_mask=mask_t))
    import numpy as np

    from refimpl.models.nezha import NezhaConfig
    from refimpl.models import nezha

    cfg = NezhaConfig(**CONFIG)
    rng = np.random.default_rng(0)
    params = {name: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
              for name, shape in nezha.param_shapes(cfg, "NezhaModel").items()}
    return lambda: nezha.nezha_model(params, cfg, ids, mask)


if __name__ == "__main__":
    main(__file__, workloads, run)
