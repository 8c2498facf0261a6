"""The banded attention core against live upstream LEDEncoderSelfAttention (torch + transformers 4.37.2)."""
import numpy as np
import pytest
from refimpl import banded_attention as ba
from test_banded_attention import FAST, IMPLEMENTATIONS, assert_close  # noqa: F401


# ----------------------------------------------------------------------------------------------
# Live upstream: LEDEncoderSelfAttention.forward (local path) on the same projections
# ----------------------------------------------------------------------------------------------

LIVE_CASES = [  # B, T, H, d, window, with_global, with_pad
    (2, 16, 3, 4, 4, False, True),
    (2, 24, 2, 5, 6, True, True),
    (1, 16, 2, 3, 8, True, False),
    (3, 12, 4, 2, 4, True, True),                          # window 2 crashes upstream (w = 1)
]


@pytest.mark.upstream
@pytest.mark.parametrize("B,T,H,d,window,with_global,with_pad", LIVE_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_live_upstream_local_attention(B, T, H, d, window, with_global, with_pad, dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.led.modeling_led import LEDEncoderSelfAttention

    D = H * d
    cfg = transformers.LEDConfig(d_model=D, encoder_attention_heads=H, attention_window=[window],
                                 encoder_layers=1, attention_dropout=0.0, dropout=0.0)
    torch.manual_seed(T * 10 + window)
    layer = LEDEncoderSelfAttention(cfg, layer_id=0).eval()
    with torch.no_grad():                                 # weights large enough for peaked softmax
        for p in layer.parameters():
            p.normal_(0, 0.6)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    layer = layer.to(tdtype)

    rng = np.random.default_rng(B * 100 + T)
    hidden = rng.standard_normal((B, T, D)).astype(dtype)
    mask = np.ones((B, T), np.int64)                       # 1 = token, 0 = pad
    if with_pad:
        mask[0, -3:] = 0
        if B > 1:
            mask[1, -T // 2:] = 0
    glob = np.zeros((B, T), np.int64)
    if with_global:
        glob[:, 0] = 1
        glob[-1, 2] = 1                                   # rows with different numbers of globals
    # upstream LEDEncoder: attention_mask * (global + 1) -> 0/1/2, then (1 - m) * finfo.min
    merged = mask * (glob + 1)
    ext = (1.0 - torch.tensor(merged, dtype=tdtype)) * torch.finfo(tdtype).min    # [B, T]
    is_index_masked = ext < 0
    is_index_global_attn = ext > 0
    is_global_attn = bool(is_index_global_attn.flatten().any().item())
    with torch.no_grad():
        ctx_t, probs_t = layer(torch.tensor(hidden), attention_mask=ext, is_index_masked=is_index_masked,
                               is_index_global_attn=is_index_global_attn, is_global_attn=is_global_attn,
                               output_attentions=True)[:2]
    ctx_up = ctx_t.numpy()                                 # [B, T, D], global rows overwritten
    probs_up = probs_t.numpy().transpose(0, 2, 1, 3)       # [B, T, H, X+2w+1] -> [B, H, T, X+2w+1]

    # the same projections in numpy, in the same dtype
    W = {n: (getattr(layer, n).weight.detach().numpy(), getattr(layer, n).bias.detach().numpy())
         for n in ("query", "key", "value")}

    def heads(x):                                          # [B, T, D] -> [B, H, T, d]
        return x.reshape(B, T, H, d).transpose(0, 2, 1, 3)
    q = heads((hidden @ W["query"][0].T + W["query"][1]) / np.sqrt(d).astype(dtype)).copy()
    k = heads(hidden @ W["key"][0].T + W["key"][1]).copy()
    v = heads(hidden @ W["value"][0].T + W["value"][1]).copy()
    is_global = (merged == 2)
    pad = merged == 0
    gk = gv = gb = None
    if is_global_attn:
        gk, gv, gb = ba.gather_global_keys(k, v, is_global)
    key_bias = ba.key_bias_from_mask(pad | is_global, dtype)

    # upstream's local probabilities are zeroed on global rows, and the context of global rows
    # comes from the separate global attention: compare the other rows
    keep = ~is_global                                      # [B, T]
    tol = 2e-5 if dtype == "float32" else 2e-6            # float64 still has a float32 softmax
    for backend in ["reference"] + FAST:
        ctx, probs = IMPLEMENTATIONS[backend](q, k, v, window // 2, key_bias, pad, gk, gv, gb, output_probs=True)
        name = f"live B{B} T{T} H{H} d{d} window{window} global{with_global} {dtype} {backend}"
        ctx_bt = ctx.transpose(0, 2, 1, 3).reshape(B, T, D)                     # [B, T, D]
        assert_close(ctx_bt[keep], ctx_up[keep], tol, name, "context")
        assert_close(np.where(keep[:, None, :, None], probs, 0), probs_up, tol, name, "probs")
