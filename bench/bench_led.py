"""LED encoder at the LED-base shape (random weights), one global token, refimpl vs upstream.

    python bench/bench_led.py                            # all lengths, table + bench/results/led.json
    python bench/bench_led.py --workload "led-base encoder 4096"

Shape of allenai/led-base-16384's encoder: 6 layers, d=768, 12 heads, ffn 3072, window 1024 in every
layer, vocab 50265, 16384 positions. Input: 1 x T random ids, the first token global (as for
summarisation). Upstream runs `LEDEncoder` (float32, torch.no_grad); refimpl runs
`refimpl.models.led.led_encoder` (float32, the banded core; Numba when installed).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import main  # noqa: E402

SHAPE = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
             decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, attention_window=[1024] * 6,
             max_encoder_position_embeddings=16384, max_decoder_position_embeddings=1024)
LENGTHS = (1024, 4096, 16384)


def workloads():
    return {f"led-base encoder {n}": f"1 x {n} tokens, 6 layers, d=768, window 1024, 1 global token, float32"
            for n in LENGTHS}


def inputs(length):
    import numpy as np

    ids = np.random.default_rng(0).integers(3, SHAPE["vocab_size"], size=(1, length))
    ids[0, 0], ids[0, -1] = 0, 2  # <s> ... </s>
    mask = np.ones_like(ids)
    global_mask = np.zeros_like(ids)
    global_mask[0, 0] = 1
    return ids, mask, global_mask


def upstream_config(**overrides):
    from transformers import LEDConfig

    return LEDConfig(**SHAPE, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **overrides)


def upstream_model(cls_name="LEDEncoder", **overrides):
    """The upstream side's random-weight encoder (torch seed 0). bench/peers.py saves `upstream_model("LEDModel")`
    (a checkpoint refimpl and ONNX Runtime can load; encoder initialised the same way)."""
    import torch
    from transformers.models.led import modeling_led

    torch.manual_seed(0)
    return getattr(modeling_led, cls_name)(upstream_config(**overrides)).eval()


def run(side, workload):
    length = int(workload.rsplit(" ", 1)[1])
    ids, mask, global_mask = inputs(length)
    if side == "upstream":
        import torch

        encoder = upstream_model()
        args = {k: torch.from_numpy(v) for k, v in
                (("input_ids", ids), ("attention_mask", mask), ("global_attention_mask", global_mask))}

        @torch.no_grad()
        def fn():
            return encoder(**args).last_hidden_state

        return fn
    import numpy as np

    from refimpl.models.led import LEDConfig
    from refimpl.models.led import led_encoder, param_shapes

    cfg = LEDConfig(**SHAPE)
    rng = np.random.default_rng(0)
    params = {}
    for k, shape in param_shapes(cfg, "LEDModel").items():
        if k != "shared.weight" and not k.startswith("encoder."):
            continue  # the encoder alone, as upstream's side
        if "layernorm" in k or "layer_norm" in k:
            params[k] = (np.ones if k.endswith("weight") else np.zeros)(shape, np.float32)
        else:
            params[k] = rng.standard_normal(shape, dtype=np.float32)
            params[k] *= np.float32(0.02)  # in place: no transient copy of the 154 MB embedding
    return lambda: led_encoder(params, cfg, ids, mask, global_mask).last_hidden_state


if __name__ == "__main__":
    main(__file__, workloads, run)
