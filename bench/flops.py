"""Floating-point operations of each benchmark workload, from the model's config: the numerator of the
GEMM limit (bench/peers.py divides it by the machine's measured sgemm rate).

Only matrix products count (2 * m * n * k each: a multiply and an add), every one of them: the
projections, the feed-forward layers, the attention products (scores and weighted values, over every
pair a dense implementation computes, the causal half included) and the LM head. Elementwise work
(softmax, LayerNorm, GELU, log_softmax, embeddings) is left out: it is what an engine does beyond the
GEMMs. Each function takes the config as a dict of upstream's field names (config.to_dict()).
tests/test_bench_peers_live.py checks every formula against torch.utils.flop_counter on upstream's models.
"""
from __future__ import annotations


def decoder_stack(batch: int, length: int, d: int, ffn: int, layers: int) -> float:
    """A stack of self-attention + feed-forward layers over `length` tokens, full [T, T] attention."""
    n = batch * length
    projections = 4 * 2 * n * d * d  # q, k, v, out_proj: [N, d] @ [d, d]
    feed_forward = 2 * 2 * n * d * ffn  # fc1 [N, d] @ [d, f], fc2 [N, f] @ [f, d]
    attention = 2 * 2 * batch * length * length * d  # q @ k.T and probs @ v: [T, dh] x [dh, T] per (batch, head)
    return layers * (projections + feed_forward + attention)


def opt_score(config: dict, batch: int, length: int) -> float:
    """OPTForCausalLM over [B, T]: the decoder stack, project_in/out when word_embed_proj_dim != hidden_size,
    and the LM head over every position ([B, T, E] @ [E, V], as the forward computes it)."""
    d, e, n = config["hidden_size"], config["word_embed_proj_dim"], batch * length
    total = decoder_stack(batch, length, d, config["ffn_dim"], config["num_hidden_layers"])
    if e != d:
        total += 2 * (2 * n * e * d)  # project_in [N, E] @ [E, d] and project_out [N, d] @ [d, E]
    return total + 2 * n * e * config["vocab_size"]


def xglm_score(config: dict, batch: int, length: int) -> float:
    """XGLMForCausalLM over [B, T]: the decoder stack and the LM head over every position."""
    d = config["d_model"]
    stack = decoder_stack(batch, length, d, config["ffn_dim"], config["num_layers"])
    return stack + 2 * batch * length * d * config["vocab_size"]


def nezha_model(config: dict, batch: int, length: int) -> float:
    """NezhaModel over [B, T]: the encoder stack, whose relative attention adds two products per layer
    (q against the [T, T, dh] relative keys, probs against the relative values: 2 B T^2 d each), and the pooler."""
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    stack = decoder_stack(batch, length, d, config["intermediate_size"], layers)
    relative = layers * 2 * (2 * batch * length * length * d)
    pooler = 2 * batch * d * d  # dense on the first token
    return stack + relative + pooler


def led_encoder_parts(config: dict, batch: int, length: int, n_global: int) -> dict:
    """LEDEncoder over [B, T] with `n_global` global tokens per row, as parts (the live test swaps the
    banded attention for upstream's chunked computation of it):

    - dense: q, k, v, out_proj on every token; query_global on the global tokens; key_global and
      value_global on every token (the global queries attend to every key); fc1 and fc2.
    - band: each token's scores against its 2w + 1 band keys and the global keys, and the weighted sum
      over them (w = attention_window / 2, one side).
    - global_rows: each global token's scores against every key and its weighted sum.
    T is first padded up to a multiple of attention_window, as upstream does."""
    window = max(config["attention_window"])  # the same in every layer for the benchmarked shape
    length = -(-length // window) * window
    d, n, layers, g = config["d_model"], batch * length, config["encoder_layers"], n_global
    one_side = window // 2
    dense = 2 * (4 * n * d * d + batch * (g + 2 * length) * d * d + 2 * n * d * config["encoder_ffn_dim"])
    band = 2 * 2 * n * (2 * one_side + 1 + g) * d
    global_rows = 2 * 2 * batch * g * length * d
    return {"dense": layers * dense, "band": layers * band, "global_rows": layers * global_rows}


def led_encoder(config: dict, batch: int, length: int, n_global: int) -> float:
    """LEDEncoder over [B, T]: the work an implementation of the banded attention must do."""
    return sum(led_encoder_parts(config, batch, length, n_global).values())
