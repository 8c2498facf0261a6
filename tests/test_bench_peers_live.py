"""bench/flops.py's formulas against an independent count: torch.utils.flop_counter.FlopCounterMode adds up
2 m n k for every matrix product aten runs in upstream's forward pass (linear, matmul, bmm, einsum), on
small random-weight models of hypothesis-drawn shapes. No timing here (bench/peers.py times)."""
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import flops  # noqa: E402

SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))


def counted(model, **inputs) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return counter.get_total_flops()


def ids(batch, length, vocab, seed=0):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


shapes = st.fixed_dictionaries({
    "batch": st.integers(1, 3), "length": st.integers(1, 9), "heads": st.sampled_from([1, 2, 4]),
    "head_dim": st.sampled_from([4, 8]), "ffn": st.integers(1, 24), "layers": st.integers(1, 3),
    "vocab": st.integers(8, 40)})


@SETTINGS
@given(shapes, st.booleans())
def test_opt_score_flops(s, projected):
    d = s["heads"] * s["head_dim"]
    config = transformers.OPTConfig(vocab_size=s["vocab"], hidden_size=d, num_attention_heads=s["heads"],
                                    ffn_dim=s["ffn"], num_hidden_layers=s["layers"], max_position_embeddings=32,
                                    word_embed_proj_dim=d + 3 if projected else d)
    model = transformers.OPTForCausalLM(config)
    got = counted(model, input_ids=ids(s["batch"], s["length"], s["vocab"]), use_cache=False)
    expected = flops.opt_score(config.to_dict(), s["batch"], s["length"])
    assert got == expected, f"OPT {s} projected={projected}: counted {got}, formula {expected}"


@SETTINGS
@given(shapes)
def test_xglm_score_flops(s):
    d = s["heads"] * s["head_dim"]
    config = transformers.XGLMConfig(vocab_size=s["vocab"], d_model=d, attention_heads=s["heads"], ffn_dim=s["ffn"],
                                     num_layers=s["layers"], max_position_embeddings=32)
    model = transformers.XGLMForCausalLM(config)
    got = counted(model, input_ids=ids(s["batch"], s["length"], s["vocab"]), use_cache=False)
    expected = flops.xglm_score(config.to_dict(), s["batch"], s["length"])
    assert got == expected, f"XGLM {s}: counted {got}, formula {expected}"


@SETTINGS
@given(shapes, st.integers(1, 6))
def test_nezha_model_flops(s, max_relative_position):
    d = s["heads"] * s["head_dim"]
    config = transformers.NezhaConfig(vocab_size=s["vocab"], hidden_size=d, num_attention_heads=s["heads"],
                                      intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                                      max_position_embeddings=32, max_relative_position=max_relative_position)
    model = transformers.NezhaModel(config)
    mask = torch.ones(s["batch"], s["length"], dtype=torch.long)
    got = counted(model, input_ids=ids(s["batch"], s["length"], s["vocab"]), attention_mask=mask)
    expected = flops.nezha_model(config.to_dict(), s["batch"], s["length"])
    assert got == expected, f"NEZHA {s}: counted {got}, formula {expected}"


def upstream_chunked_attention(batch, length, one_side, d, n_global, layers):
    """What upstream's LEDEncoderSelfAttention multiplies instead of the band (read off modeling_led.py):
    _sliding_chunks_query_key_matmul: T/w - 1 overlapping chunks of 2w queries x 2w keys;
    _sliding_chunks_matmul_attn_probs_value: T/w chunks of w queries x 3w values;
    every token against the global keys and values; each global token against every key and value."""
    w = one_side
    scores = 2 * batch * (length // w - 1) * (2 * w) * (2 * w) * d
    values = 2 * batch * (length // w) * w * (3 * w) * d
    global_keys = 2 * 2 * batch * length * n_global * d
    global_rows = 2 * 2 * batch * n_global * length * d
    return layers * (scores + values + global_keys + global_rows)


@SETTINGS
@given(shapes, st.sampled_from([4, 6, 8]), st.integers(1, 3), st.integers(1, 20))  # window 2 (w = 1) fails upstream
def test_led_encoder_flops(s, window, n_global, length):
    d = s["heads"] * s["head_dim"]
    config = transformers.LEDConfig(vocab_size=s["vocab"], d_model=d, encoder_attention_heads=s["heads"],
                                    decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ffn"], decoder_ffn_dim=4,
                                    encoder_layers=s["layers"], decoder_layers=1, attention_window=[window] * s["layers"],
                                    max_encoder_position_embeddings=64, max_decoder_position_embeddings=8)
    n_global = min(n_global, length)
    encoder = transformers.models.led.modeling_led.LEDEncoder(config)
    global_mask = torch.zeros(s["batch"], length, dtype=torch.long)
    global_mask[:, :n_global] = 1
    got = counted(encoder, input_ids=ids(s["batch"], length, s["vocab"]), global_attention_mask=global_mask,
                  attention_mask=torch.ones(s["batch"], length, dtype=torch.long))
    parts = flops.led_encoder_parts(config.to_dict(), s["batch"], length, n_global)
    padded = -(-length // window) * window
    chunked = upstream_chunked_attention(s["batch"], padded, window // 2, d, n_global, s["layers"])
    assert got == parts["dense"] + chunked, f"LED {s} window={window} T={length}: counted {got}, formula {parts}"
