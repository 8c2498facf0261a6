"""The primitives against live upstream (torch, transformers 4.37.2): torch's float32 softmax bit for bit on
both CPU kernels (the one torch runs here, and AVX2 forced in a fresh process), every activation of
transformers.activations.ACT2FN, and the losses of the classification and question-answering heads."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refimpl import ops  # noqa: E402
from refimpl.torch_softmax import float32_softmax_as_torch  # noqa: E402

KERNEL = {"AVX2": "avx2", "AVX512": "avx512"}.get(torch.backends.cpu.get_cpu_capability())
LENGTHS = list(range(1, 40)) + [47, 63, 64, 65, 127, 128, 129, 257, 1025]


def softmax_rows(seed):  # float32 rows of every length in LENGTHS, with -inf and finfo.min entries
    rng = np.random.default_rng(seed)
    rows = []
    for n in LENGTHS:
        x = (rng.normal(size=(4, n)) * rng.choice([0.1, 3.0, 30.0])).astype(np.float32)
        x[1, 0] = -np.inf
        x[2, n // 2] = np.finfo(np.float32).min
        rows.append(x)
    return rows


def same_bits(got, expected, what):
    nan = np.isnan(got) & np.isnan(expected)
    differ = (got.view(np.int32) != expected.view(np.int32)) & ~nan
    assert not differ.any(), f"{what}: {differ.sum()} entries differ, first at {np.argwhere(differ)[0]}, " \
                             f"max |diff| {np.nanmax(np.abs(got - expected)):.3g}"


@pytest.mark.skipif(KERNEL is None, reason="torch runs neither its AVX2 nor its AVX-512 kernel here")
def test_float32_softmax_bit_for_bit_on_the_kernel_torch_runs():
    for x in softmax_rows(0):
        expected = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
        same_bits(float32_softmax_as_torch(x, KERNEL), expected, f"{KERNEL} n={x.shape[-1]}")
        # a float64 input is cast to float32, and the result back (softmax(..., dtype=float32).type_as)
        x64 = x.astype(np.float64) + 1e-12
        expected64 = torch.softmax(torch.from_numpy(x64), dim=-1, dtype=torch.float32).double().numpy()
        got64 = float32_softmax_as_torch(x64, KERNEL)
        assert got64.dtype == np.float64
        same_bits(got64.astype(np.float32), expected64.astype(np.float32), f"{KERNEL} float64 n={x.shape[-1]}")


def test_float32_softmax_bit_for_bit_on_avx2_in_a_fresh_process(tmp_path):
    """ATEN_CPU_CAPABILITY=avx2 makes torch run its AVX2 kernel (8 lanes) even on an AVX-512 machine."""
    rows = softmax_rows(1)
    np.savez(tmp_path / "in.npz", *rows)
    script = ("import sys, numpy as np, torch\n"
              "d = np.load(sys.argv[1])\n"
              "out = {k: torch.softmax(torch.from_numpy(d[k]), dim=-1).numpy() for k in d.files}\n"
              "np.savez(sys.argv[2], **out)\n"
              "print(torch.backends.cpu.get_cpu_capability())\n")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    if run.stdout.strip() != "AVX2":
        pytest.skip(f"torch runs {run.stdout.strip()} with ATEN_CPU_CAPABILITY=avx2 here")
    out = np.load(tmp_path / "out.npz")
    for i, x in enumerate(rows):
        same_bits(float32_softmax_as_torch(x, "avx2"), out[f"arr_{i}"], f"avx2 n={x.shape[-1]}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_activation_as_transformers(dtype):
    from transformers.activations import ACT2FN

    x = np.concatenate([np.linspace(-12, 12, 193), [0.0, 6.0, -6.0, 7.5, -7.5, 10.25]]).astype(dtype)
    tol = 1e-13 if dtype == np.float64 else 2e-6
    for name, ours in ops.ACTIVATIONS.items():
        expected = ACT2FN[name](torch.from_numpy(x.copy())).numpy()
        got = ours(x.copy())
        assert got.dtype == dtype, name
        err = np.abs(got.astype(np.float64) - expected)
        worst = int(err.argmax())
        assert err[worst] <= tol * (1 + abs(float(expected[worst]))), \
            f"{name} {np.dtype(dtype).name}: |diff| {err[worst]:.3g} at x={x[worst]}"


def test_losses_as_torch():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 4))
    labels = np.array([0, 3, -100, 2, 1, 3])
    t = torch.from_numpy
    assert ops.cross_entropy(logits, labels) == pytest.approx(
        torch.nn.functional.cross_entropy(t(logits), t(labels)).item(), rel=1e-13)
    target = rng.normal(size=(6, 4))
    assert ops.mse(logits, target) == pytest.approx(torch.nn.functional.mse_loss(t(logits), t(target)).item(), rel=1e-13)
    bits = (rng.random((6, 4)) > 0.5).astype(np.float64)
    big = logits * 300
    assert ops.bce_with_logits(big, bits) == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(t(big), t(bits)).item(), rel=1e-13)
    start, end = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    sp, ep = np.array([2, -3, 40]), np.array([7, 0, 5])
    T = 7
    loss = torch.nn.CrossEntropyLoss(ignore_index=T)
    expected = (loss(t(start), t(sp).clamp(0, T)) + loss(t(end), t(ep).clamp(0, T))) / 2
    assert ops.span_loss(start, end, sp, ep) == pytest.approx(expected.item(), rel=1e-13)
