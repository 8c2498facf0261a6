"""Benchmark: the banded attention core alone, refimpl (Numba, NumPy) vs upstream's sliding chunks.

Shape: the LED-base encoder at its longest input: B=1, H=12, d=64, window 1024 (w=512), T=16384,
float32, one global token (position 0). Each side runs in its own subprocess so that peak RSS
(ru_maxrss) is its own; time is the median of 3 runs after one warm-up run.

Upstream side (needs torch + transformers 4.37.2): the local part of
modeling_led.py LEDEncoderSelfAttention.forward: `_sliding_chunks_query_key_matmul` for the scores
and for the diagonal mask, `_concat_with_global_key_attn_probs`, float32 softmax, masked_fill,
`_compute_attn_output_with_global_indices` (which calls `_sliding_chunks_matmul_attn_probs_value`).

    python bench/bench_banded_attention.py                 # full table, writes bench/results/banded_attention.json
    python bench/bench_banded_attention.py --T 4096        # smaller
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("refimpl-numba", "refimpl-numpy", "upstream")


def rss_mb():
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(B, H, T, d, seed=0):
    """q, k, v [B, H, T, d] float32 (q already scaled by 1/sqrt(d)), masks for one global token."""
    import numpy as np
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, H, T, d), dtype=np.float32) for _ in range(3))
    q *= np.float32(d ** -0.5)
    is_global = np.zeros((B, T), bool)
    is_global[:, 0] = True
    return q, k, v, is_global


def run_refimpl(backend, args):
    """-> list of seconds per call; the core call only (inputs and masks prepared before)."""
    sys.path.insert(0, ROOT)
    from refimpl.runtime import configure_process
    configure_process()  # before NumPy loads, as the `refimpl` command does
    import numpy as np
    from refimpl import banded_attention as ba
    # tiny call first: loads the Numba cache (or compiles) before the baseline RSS is taken
    small = make_inputs(1, 1, 16, 4)
    ba.banded_attention(small[0], small[1], small[2], 2, backend=backend)
    q, k, v, is_global = make_inputs(args.B, args.H, args.T, args.d)
    gk, gv, gb = ba.gather_global_keys(k, v, is_global)
    key_bias = ba.key_bias_from_mask(is_global, np.float32)
    query_masked = np.zeros(is_global.shape, bool)
    baseline = rss_mb()
    times = []
    for _ in range(args.repeat + 1):
        t0 = time.perf_counter()
        ctx, _ = ba.banded_attention(q, k, v, args.w, key_bias, query_masked, gk, gv, gb, backend=backend)
        times.append(time.perf_counter() - t0)
        assert ctx.dtype == np.float32
        del ctx
    return times[1:], baseline


def run_upstream(args):
    import torch
    from transformers import LEDConfig
    from transformers.models.led.modeling_led import LEDEncoderSelfAttention
    q, k, v, is_global = make_inputs(args.B, args.H, args.T, args.d)
    cfg = LEDConfig(d_model=args.H * args.d, encoder_attention_heads=args.H, attention_window=[2 * args.w],
                    encoder_layers=1, attention_dropout=0.0)
    layer = LEDEncoderSelfAttention(cfg, layer_id=0).eval()
    # upstream layout [B, T, H, d]
    qt, kt, vt = (torch.from_numpy(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
    glob = torch.from_numpy(is_global)
    # LEDEncoder: merged mask 0/1/2 -> (1 - m) * finfo.min: global -> +max
    attention_mask = torch.where(glob, -torch.finfo(torch.float32).min, 0.0)    # [B, T]
    is_index_masked = attention_mask < 0
    w = args.w

    def step():
        with torch.no_grad():
            scores = layer._sliding_chunks_query_key_matmul(qt, kt, w)
            remove = (attention_mask != 0)[:, :, None, None]
            float_mask = remove.type_as(qt).masked_fill(remove, torch.finfo(qt.dtype).min)
            diagonal_mask = layer._sliding_chunks_query_key_matmul(float_mask.new_ones(size=float_mask.size()),
                                                                   float_mask, w)
            scores += diagonal_mask
            idx = layer._get_global_attn_indices(glob)
            g_scores = layer._concat_with_global_key_attn_probs(
                query_vectors=qt, key_vectors=kt, max_num_global_attn_indices=idx[0],
                is_index_global_attn_nonzero=idx[1], is_local_index_global_attn_nonzero=idx[2],
                is_local_index_no_global_attn_nonzero=idx[3])
            scores = torch.cat((g_scores, scores), dim=-1)
            probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
            probs = torch.masked_fill(probs, is_index_masked[:, :, None, None], 0.0).type_as(scores)
            del scores
            out = layer._compute_attn_output_with_global_indices(
                value_vectors=vt, attn_probs=probs, max_num_global_attn_indices=idx[0],
                is_index_global_attn_nonzero=idx[1], is_local_index_global_attn_nonzero=idx[2])
            return out

    baseline = rss_mb()
    times = []
    for _ in range(args.repeat + 1):
        t0 = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t0)
        del out
    return times[1:], baseline


def child(args):
    """Run one side, print one JSON line."""
    if args.side == "upstream":
        times, baseline = run_upstream(args)
    else:
        times, baseline = run_refimpl(args.side.split("-")[1], args)
    print(json.dumps({"side": args.side, "times_s": times, "median_s": statistics.median(times),
                      "baseline_rss_mb": baseline, "peak_rss_mb": rss_mb(),
                      "transient_mb": rss_mb() - baseline}))


def spawn(side, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--side", side,
           "--T", str(args.T), "--H", str(args.H), "--d", str(args.d), "--w", str(args.w),
           "--B", str(args.B), "--repeat", str(args.repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode != 0:
        return {"side": side, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=16384)
    p.add_argument("--H", type=int, default=12)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--w", type=int, default=512, help="one-sided window (attention_window // 2)")
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "banded_attention.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    sides = args.sides.split(",")
    if "refimpl-numba" in sides:   # fill the Numba cache outside the measured process
        subprocess.run([sys.executable, "-c", "from refimpl import accel, banded_attention as ba\n"
                        "import numpy as np\nq = np.ones((1, 1, 8, 2), np.float32)\n"
                        "accel.HAVE_NUMBA and ba.banded_attention(q, q, q, 2, backend='numba')"],
                       env={**os.environ, "PYTHONPATH": ROOT}, check=False)
    results = {s: spawn(s, args) for s in sides}
    up = results.get("upstream", {})
    print(f"banded attention core, B={args.B} H={args.H} T={args.T} d={args.d} w={args.w} float32, "
          f"1 global token, {os.cpu_count()} cpus, median of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
    print("peak RSS: whole process (interpreter, libraries, inputs); transient: peak minus the RSS "
          "just before the first call (what the attention itself allocates)")
    print(f"{'side':16s} {'time s':>8s} {'x upstream':>10s} {'peak RSS MB':>12s} {'x upstream':>10s} "
          f"{'transient MB':>13s} {'x upstream':>10s}")
    for s, r in results.items():
        if "error" in r:
            print(f"{s:16s} error: {r['error']}")
            continue
        nan = float("nan")
        r["time_ratio_vs_upstream"] = r["median_s"] / up["median_s"] if "median_s" in up else nan
        r["peak_rss_ratio_vs_upstream"] = r["peak_rss_mb"] / up["peak_rss_mb"] if "peak_rss_mb" in up else nan
        r["transient_ratio_vs_upstream"] = r["transient_mb"] / up["transient_mb"] if up.get("transient_mb") else nan
        print(f"{s:16s} {r['median_s']:8.3f} {r['time_ratio_vs_upstream']:10.2f} {r['peak_rss_mb']:12.0f} "
              f"{r['peak_rss_ratio_vs_upstream']:10.2f} {r['transient_mb']:13.0f} "
              f"{r['transient_ratio_vs_upstream']:10.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"shape": {"B": args.B, "H": args.H, "T": args.T, "d": args.d, "w": args.w,
                             "dtype": "float32", "global_tokens": 1},
                   "repeat": args.repeat, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                   "load_average_at_end": os.getloadavg(),
                   "results": results}, f, indent=2)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
