"""The README's figures, drawn from tiny models in the repository (no torch needed; needs matplotlib).

    python bench/figures.py [--out bench/figures]

- led_attention.png: which keys each query of an LED encoder layer attends (the band of 2w+1 keys
  around it, plus the global tokens' columns and rows), and with what probability: the golden
  `golden/led/window-6-LEDModel` (window 6, so w = 3) on 24 tokens, global attention on tokens 0 and 12.
- nezha_relative_positions.png: NEZHA's relative positions: the clipped distance clip(j - i, -K, K)
  that picks the table row for each (query, key) pair, and the [2K+1, d] sinusoid table itself.
- diff_plot.png: `refimpl diff --plot` on the shipped OPT model against a "port" with one planted bug
  (layer 2's fc2 bias shifted by 0.01), the port being refimpl itself in float32 with that change.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import refimpl  # noqa: E402
from refimpl.cli import SHIPPED_MODEL, main as refimpl_main  # noqa: E402
from refimpl.models.nezha import relative_position_table, relative_rows  # noqa: E402
from refimpl.trace import tracing  # noqa: E402


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def led_probabilities(length=24, global_tokens=(0, 12), layer=0, head=0):  # -> (probs [T, T], window w)
    """The full [T, T] attention of one encoder head, put together from upstream's two outputs:
    `encoder_attentions` (row i: X global columns, then keys i-w..i+w) and `encoder_global_attentions`
    (column x: global token x's attention over every key)."""
    model = refimpl.from_pretrained(ROOT / "golden" / "led" / "window-6-LEDModel", dtype="float64")
    ids = (np.arange(length) * 7 % 38 + 3)[None]  # ordinary tokens of the 41-token vocabulary
    ids[0, 0], ids[0, -1] = 0, 2  # <s> ... </s>
    flags = np.zeros_like(ids)
    flags[0, list(global_tokens)] = 1
    out = model(input_ids=ids, global_attention_mask=flags, output_attentions=True)
    local = out.encoder_attentions[layer][0, head]  # [T, X + 2w + 1]
    to_globals = out.encoder_global_attentions[layer][0, head]  # [T_padded, X]
    x = len(global_tokens)
    w = (local.shape[1] - x - 1) // 2
    probs = np.zeros((length, length))
    for i in range(length):
        for c in range(2 * w + 1):  # band column c is key i - w + c
            j = i - w + c
            if 0 <= j < length:
                probs[i, j] += local[i, x + c]
        probs[i, list(global_tokens)] += local[i, :x]  # a global key inside the band is not counted twice:
    for n, g in enumerate(global_tokens):  # (upstream masks it in the band, so that column holds 0)
        probs[g] = to_globals[:length, n]  # a global token's row: its own attention over every key
    return probs, w


def led_figure(path: Path) -> None:
    from matplotlib.colors import LogNorm

    plt = pyplot()
    probs, w = led_probabilities()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    shown = np.where(probs > 0, probs, np.nan)  # never attended: blank
    image = ax.imshow(shown, norm=LogNorm(vmin=1e-6, vmax=1), cmap="viridis")
    fig.colorbar(image, ax=ax, label="attention probability (log scale)")
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(f"LED encoder attention: band |i - j| <= {w}\nplus global tokens 0 and 12 (rows and columns)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def nezha_figure(path: Path, k=4, head_dim=16, length=12) -> None:
    plt = pyplot()
    table = relative_position_table(k, head_dim, np.float64)  # [2K+1, d]
    rows = relative_rows(table, length, length)  # [T, T, d]: row table[clip(j - i, -K, K) + K]
    distance = np.array([[np.flatnonzero((table == rows[i, j]).all(axis=1))[0] - k for j in range(length)]
                         for i in range(length)])  # which table row each pair reads, back as a distance
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    image = left.imshow(distance, cmap="coolwarm")
    for i in range(length):
        for j in range(length):
            left.text(j, i, distance[i, j], ha="center", va="center", fontsize=6)
    left.set_title(f"clip(j - i, -{k}, {k}): the table row\neach (query i, key j) reads", fontsize=10)
    left.set_xlabel("key j")
    left.set_ylabel("query i")
    fig.colorbar(image, ax=left)
    image = right.imshow(table, cmap="RdBu", vmin=-1, vmax=1, aspect="auto",
                         extent=(-0.5, head_dim - 0.5, k + 0.5, -k - 0.5))
    right.set_title(f"the table [2K+1, d] (K={k}, d={head_dim}):\nsin | cos of distance x frequency, interleaved",
                    fontsize=10)
    right.set_xlabel("dimension")
    right.set_ylabel("clipped distance")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def diff_figure(path: Path) -> None:
    """`refimpl diff --plot` against a port with a planted bug: refimpl in float32, traced with layer 2's
    fc2 bias shifted by 0.01 (every other tensor within float32 noise of refimpl's float64 run)."""
    port = refimpl.from_pretrained(SHIPPED_MODEL, dtype="float32")
    port.params["model.decoder.layers.2.fc2.bias"] = port.params["model.decoder.layers.2.fc2.bias"] + 0.01
    ids = np.array([[2, 100, 200, 300, 400, 500]])
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    with tracing() as trace:
        port(**inputs)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "inputs.npz", **inputs)
        np.savez(Path(tmp) / "dump.npz", **dict(trace))
        with contextlib.redirect_stdout(io.StringIO()):  # the table: not needed here
            status = refimpl_main(["diff", "--model", str(SHIPPED_MODEL), "--inputs", str(Path(tmp) / "inputs.npz"),
                                   "--against", str(Path(tmp) / "dump.npz"), "--plot", str(path)])
    assert status == 1, f"refimpl diff should find the planted bug (exit 1), exited {status}"


FIGURES = {"led_attention.png": led_figure, "nezha_relative_positions.png": nezha_figure,
           "diff_plot.png": diff_figure}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "figures"), help="directory for the PNG files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(out / name)
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
