"""bench/peers.py's pure parts: the output check against upstream, the table, and the FLOP formulas' figures
for the benchmarked shapes (from the issue's arithmetic, independent of the code). No timing, no torch.
The formulas against upstream's own matmuls: tests/test_bench_peers_live.py."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_gemm  # noqa: E402
import bench_led  # noqa: E402
import bench_opt  # noqa: E402
import flops  # noqa: E402
import peers  # noqa: E402

OPT_125M = dict(bench_opt.SHAPE, ffn_dim=3072)


def test_opt_125m_figure_from_the_issue():
    """Issue 16: opt-125m scoring 8 x 128 is 'about 253 GFLOP' counting projections, feed-forward and LM head;
    the formula adds the attention products, 12 layers x 2 products x 2 x 8 x 128^2 x 768 FLOPs."""
    attention = 12 * 2 * 2 * 8 * 128 * 128 * 768
    total = flops.opt_score(OPT_125M, 8, 128)
    assert abs((total - attention) / 1e9 - 253) < 1, total
    assert total == 12 * (8 * 1024 * 768 ** 2 + 4 * 1024 * 768 * 3072) + attention + 2 * 1024 * 768 * 50272


def test_led_pads_to_the_window():
    """A length that is not a multiple of attention_window costs what the padded length costs (upstream pads)."""
    config = dict(bench_led.SHAPE)
    assert flops.led_encoder(config, 1, 4000, 1) == flops.led_encoder(config, 1, 4096, 1)
    assert flops.led_encoder(config, 1, 4097, 1) == flops.led_encoder(config, 1, 5120, 1)


@pytest.mark.parametrize("scale", [1.0, 1e-3, 50.0])
def test_compare_relative_to_the_largest_upstream_value(scale):
    rng = np.random.default_rng(0)
    reference = (rng.standard_normal((3, 5)) * scale).astype(np.float32)
    biggest = np.abs(reference).max()
    close = reference.copy()
    close.flat[7] += np.float32(0.5e-5 * biggest)
    far = reference.copy()
    far.flat[3] -= np.float32(3e-5 * biggest)
    ok, bad = peers.compare(close, reference), peers.compare(far, reference)
    assert ok["ok"] and ok["max_rel_diff"] == pytest.approx(0.5e-5, rel=1e-2), ok
    assert not bad["ok"] and bad["max_rel_diff"] == pytest.approx(3e-5, rel=1e-2), bad


def test_compare_tokens_and_shapes():
    tokens = np.arange(32).reshape(1, 32)
    assert peers.compare(tokens.copy(), tokens) == {"ok": True, "tokens_differing": 0}
    changed = tokens.copy()
    changed[0, [4, 9]] = 0
    assert peers.compare(changed, tokens) == {"ok": False, "tokens_differing": 2}
    wrong = peers.compare(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not wrong["ok"] and "shape" in wrong["problem"]


def _report(seconds, mb, **extra):
    return {"median_s": seconds, "times_s": [seconds], "peak_rss_mb": mb, **extra}


def test_ratios_table_and_failures():
    workload = peers.WORKLOADS["opt-score"]
    row = {"workload": "opt-score", "description": workload.description, "engines": {
        "refimpl": _report(3.0, 700, check={"ok": True, "max_rel_diff": 2e-7}),
        "upstream": _report(4.0, 1400, check={"ok": True, "max_rel_diff": 0.0}),
        "onnxruntime": _report(2.0, 1000, check={"ok": False, "max_rel_diff": 2e-3}),
        "ctranslate2": {"error": ["ImportError: no ctranslate2"]}}}
    peers.add_ratios(row, workload, OPT_125M)
    peers.add_gemm_limit(row, 200.0)
    expected_gflop = flops.opt_score(OPT_125M, 8, 128) / 1e9
    assert row["best_peer"] == "onnxruntime"
    assert row["engines"]["refimpl"]["vs_best_peer"] == pytest.approx(1.5)
    assert row["engines"]["refimpl"]["memory_vs_best_peer"] == pytest.approx(0.7)
    assert row["gemm_limit_s"] == pytest.approx(expected_gflop / 200.0)
    assert row["engines"]["upstream"]["vs_gemm_limit"] == pytest.approx(4.0 / (expected_gflop / 200.0))
    machine = {"cpus": 2, "cpu_model": "test CPU", "cpu_flags": ["avx2"], "numpy_sgemm_gflops": 200.0,
               "torch_sgemm_gflops": 180.0}
    table = peers.markdown({"machine": machine, "rounds": 2, "repeats": 3, "rows": [row]})
    line = next(line for line in table.splitlines() if line.startswith("| OPT-125m"))
    assert "3.00 s, 700 MB" in line and "2.00 s, 1000 MB" in line and "| error |" in line, line
    assert "1.50, 0.70" in line and "2.0e-03" in line, line
    assert "numpy sgemm 200 GFLOP/s" in table and "avx2" in table
    failed = peers.failures([row])
    assert len(failed) == 2 and any("onnxruntime" in f for f in failed) and any("ctranslate2" in f for f in failed)


def test_greedy_reports_time_per_token():
    workload = peers.WORKLOADS["opt-greedy"]
    row = {"workload": "opt-greedy", "description": workload.description, "engines": {
        "refimpl": _report(0.64, 600, check={"ok": True, "tokens_differing": 0}),
        "upstream": _report(0.96, 900, check={"ok": True, "tokens_differing": 0})}}
    peers.add_ratios(row, workload, OPT_125M)
    peers.add_gemm_limit(row, 200.0)
    assert "gemm_limit_s" not in row
    assert row["engines"]["refimpl"]["per_token_s"] == pytest.approx(0.64 / bench_opt.NEW_TOKENS)
    machine = {"cpus": 2, "cpu_model": "x", "cpu_flags": [], "numpy_sgemm_gflops": 1.0, "torch_sgemm_gflops": 1.0}
    table = peers.markdown({"machine": machine, "rounds": 1, "repeats": 1, "rows": [row]})
    assert "20.0 ms/token, 600 MB" in table and "tokens equal" in table, table


def test_gemm_bench_runs_each_workloads_products():
    """bench/bench_gemm.py's product lists hold each workload's GEMM FLOPs, written out from the shapes:
    layers x (4 d^2 + 2 d f) x 2 N for the layers, 2 x rows x E x V for the LM head over the scored rows."""
    opt = 12 * (4 * 768 * 768 + 2 * 768 * 3072) * 2 * 1024 + 2 * 1016 * 768 * 50272
    nezha = 12 * (4 * 768 * 768 + 2 * 768 * 3072) * 2 * 1024
    xglm = 24 * (4 * 1024 * 1024 + 2 * 1024 * 4096) * 2 * 128 + 2 * 127 * 1024 * 256008
    led = 6 * (6 * 768 * 768 + 2 * 768 * 3072) * 2 * 4096
    expected = {"opt-score 8x128": opt, "nezha 8x128": nezha, "xglm-score 1x128": xglm, "led-4096 dense": led}
    for name, total in expected.items():
        assert bench_gemm.workload_flops(bench_gemm.WORKLOADS[name]) == pytest.approx(total, rel=1e-12), name


def test_gemm_bench_weights_rates_by_time():
    """Two products of equal FLOPs at 100 and 300 GFLOP/s take 1/100 + 1/300 of the time: 150 GFLOP/s."""
    products = {(10, 20, 30): 1, (30, 20, 10): 1}
    assert bench_gemm.weighted({"10x20x30": 100.0, "30x20x10": 300.0}, products) == pytest.approx(150.0)


def test_where_time_goes_counts_each_outermost_call_once_and_restores_the_functions():
    """bench/where_time_goes.py's timer on the shipped 4-layer OPT: a part is counted per outermost call
    (the bias additions inside ops.linear are the product's, not additions), the numbers are unchanged,
    and uninstall() puts every function back. Counts, not times: tests do not time things."""
    import where_time_goes

    import refimpl
    from refimpl import attention, layers, ops
    from refimpl.scoring import token_logprobs

    model = refimpl.from_pretrained(Path(refimpl.__file__).parent / "data" / "opt-tiny")
    ids = np.array([[2, 100, 200, 300, 400, 500]])
    expected_logits = model(input_ids=ids).logits
    expected_scores = token_logprobs(model, ids, np.ones_like(ids))
    originals = (ops.linear, layers.linear, attention.linear, ops.ACTIVATIONS["relu"], layers.add)

    timer = where_time_goes.PartTimer().install(refimpl)
    try:
        assert layers.linear is not originals[1] and ops.ACTIVATIONS["relu"] is not originals[3]
        logits = model(input_ids=ids).logits
        assert dict(timer.calls) == {"products": 4 * 6 + 1, "attention": 4, "layer norm": 4 * 2 + 1,
                                     "activation": 4, "addition": 4 * 2}, dict(timer.calls)
        timer.calls.clear()
        scores = token_logprobs(model, ids, np.ones_like(ids))
        assert timer.calls["products"] == 4 * 6 and timer.calls["lm head"] == 1, dict(timer.calls)
    finally:
        timer.uninstall()
    assert np.array_equal(logits, expected_logits) and np.array_equal(scores, expected_scores)
    assert (ops.linear, layers.linear, attention.linear, ops.ACTIVATIONS["relu"], layers.add) == originals


def test_refimpl_child_loads_before_numpy_so_its_process_settings_apply():
    """peers.py's refimpl child must call configure_process before NumPy loads (OPENBLAS_THREAD_TIMEOUT is read
    once, when NumPy loads OpenBLAS); loading refimpl after NumPy is refused, naming the cause."""
    import os
    import subprocess

    bench = Path(__file__).resolve().parents[1] / "bench"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    probe = ("import sys, types; sys.path.insert(0, {bench!r}); import peers, peer_engines; {first}"
             "peer_engines.LOADERS['refimpl']['hidden'] = lambda workload, x: print('loaded')\n"
             "try:\n    peer_engines.load('refimpl', types.SimpleNamespace(kind='hidden', inputs=lambda: None))\n"
             "except RuntimeError as e:\n    print('refused:', e)\n"
             "import os; print('timeout', os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    fresh = subprocess.run([sys.executable, "-c", probe.format(bench=str(bench), first="")],
                           capture_output=True, text=True, env=env)
    assert "loaded" in fresh.stdout and "refused" not in fresh.stdout and "timeout 20" in fresh.stdout, fresh.stdout + fresh.stderr
    late = subprocess.run([sys.executable, "-c", probe.format(bench=str(bench), first="import numpy; ")],
                          capture_output=True, text=True, env=env)
    assert "refused: NumPy was imported before" in late.stdout and "loaded" not in late.stdout, late.stdout + late.stderr
    # and the child itself imports nothing that loads NumPy before it calls load()
    source = (bench / "peers.py").read_text()
    child = source[source.index("def child_run"):source.index("def child_prepare")]
    assert child.index("peer_engines.load(") < child.index("import numpy")
