"""islands="upstream" for XGLM and NEZHA against live upstream, bit for bit: refimpl.torch_vml against
torch's own float32 exp/sin/cos, the sinusoid tables against upstream's, and upstream's own float64 runs
against refimpl's; on the CPU kernel torch picks here and, in a subprocess, on the other one
(ATEN_CPU_CAPABILITY=avx2, or the machine's default where that is AVX2 already)."""
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from refimpl import torch_vml
from refimpl.models.nezha import relative_position_table
from refimpl.models.xglm import sinusoid_rows

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import live  # noqa: E402  (puts golden/ on sys.path)
from capture_xglm import protect_position_ids  # noqa: E402
from test_nezha_live import CLASSES as NEZHA_CLASSES, live_case as nezha_case, nezha_configs  # noqa: E402
from test_xglm_live import live_case as xglm_case, xglm_configs  # noqa: E402

KERNEL = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2" or "DEFAULT"
ISLANDS_CPU = "avx512" if KERNEL == "AVX512" else "avx2"  # refimpl's name for the kernel (LED's softmax)
FUNCTIONS = ("exp", "sin", "cos")


def bit_problems(ours, theirs, what):  # float32 arrays -> [] or a message naming the first differing entries
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return [f"{what}: {ours.dtype}{ours.shape}, torch {theirs.dtype}{theirs.shape}"]
    same = (ours.view(np.uint32) == theirs.view(np.uint32)) | (np.isnan(ours) & np.isnan(theirs))
    if same.all():
        return []
    where = np.argwhere(~same)
    first = tuple(int(i) for i in where[0])
    ulps = np.abs(ours.view(np.int32).astype(np.int64) - theirs.view(np.int32).astype(np.int64))[~same].max()
    return [f"{what} [{KERNEL}]: {len(where)} of {same.size} entries differ (up to {ulps} ulp), first at {first}: "
            f"ours {ours[first]!r}, torch {theirs[first]!r}"]


def torch_function(name, x):  # float32 [...] -> float32 [...], torch's
    return getattr(torch, name)(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


# ---------------------------------------------------------------- the functions


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(FUNCTIONS),
       st.lists(st.one_of(st.floats(width=32), st.floats(-200, 200, width=32), st.floats(-0.0009765625, 0.0009765625, width=32)),
                max_size=300))
def test_functions_match_torch(name, values):
    """Any float32 values (NaN, infinities, subnormals, huge arguments) and any length: torch's bits."""
    x = np.array(values, dtype=np.float32)
    assert not bit_problems(getattr(torch_vml, name)(x), torch_function(name, x), f"{name} of {x.size} values")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_match_torch_at_every_length(name):
    """Lengths around every vector width, torch's 2048-element grain and beyond: no tail computed apart."""
    rng = np.random.default_rng(0)
    lengths = list(range(0, 70)) + [127, 128, 129, 1023, 1024, 1025, 2047, 2048, 2049, 4099, 65537]
    problems = []
    for n in lengths:
        x = (rng.standard_normal(n) * rng.choice([1e-3, 1, 30, 1e4], size=n)).astype(np.float32)
        problems += bit_problems(getattr(torch_vml, name)(x), torch_function(name, x), f"{name}, length {n}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_keep_shape_and_take_any_layout(name):
    x = (np.random.default_rng(1).standard_normal((3, 5, 7)) * 10).astype(np.float32)
    for view in (x, x.transpose(2, 0, 1), x[:, ::2]):
        assert not bit_problems(getattr(torch_vml, name)(view), torch_function(name, view), f"{name} {view.shape}")


# ---------------------------------------------------------------- the tables


def xglm_table(num_embeddings, dim, padding_idx):  # upstream's table, float32 [N, dim]
    from transformers.models.xglm.modeling_xglm import XGLMSinusoidalPositionalEmbedding

    return XGLMSinusoidalPositionalEmbedding.get_embedding(num_embeddings, dim, padding_idx).numpy()


def nezha_table(max_relative_position, depth):  # upstream's embeddings_table, float32 [2K+1, depth]
    from transformers.models.nezha.modeling_nezha import NezhaRelativePositionsEncoding

    tables, matmul = [], torch.matmul

    def capture(one_hot, table):  # the table is only handed to matmul, never kept: take it there
        tables.append(table.clone())
        return matmul(one_hot, table)

    with mock.patch.object(torch, "matmul", capture):
        NezhaRelativePositionsEncoding(1, depth, max_relative_position)
    return tables[0].numpy()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(2, 3000), st.integers(4, 1100), st.data())
def test_xglm_table_matches_upstream(num_embeddings, dim, data):
    """XGLMSinusoidalPositionalEmbedding.get_embedding: any size, odd and even widths, any padding row."""
    padding_idx = data.draw(st.one_of(st.none(), st.integers(0, num_embeddings - 1)))
    ours = sinusoid_rows(np.arange(num_embeddings), dim, padding_idx, np.float32, as_torch=True)
    assert not bit_problems(ours, xglm_table(num_embeddings, dim, padding_idx),
                            f"XGLM table N={num_embeddings} d={dim} padding_idx={padding_idx}")


@pytest.mark.parametrize("num_embeddings, dim", [(2050, 1024), (2050, 2048), (2050, 4096), (4, 4), (3, 5)])
def test_xglm_table_matches_upstream_at_released_sizes(num_embeddings, dim):  # facebook/xglm-564M ... 7.5B
    ours = sinusoid_rows(np.arange(num_embeddings), dim, 1, np.float32, as_torch=True)
    assert not bit_problems(ours, xglm_table(num_embeddings, dim, 1), f"XGLM table N={num_embeddings} d={dim}")


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 600), st.integers(1, 512).map(lambda half: 2 * half))
def test_nezha_table_matches_upstream(max_relative_position, depth):
    """NezhaRelativePositionsEncoding's embeddings_table: any clipping distance and (even) head size."""
    ours = relative_position_table(max_relative_position, depth, np.float64, as_torch=True)
    assert not bit_problems(ours, nezha_table(max_relative_position, depth),
                            f"NEZHA table K={max_relative_position} d={depth}")


@pytest.mark.parametrize("max_relative_position, depth", [(64, 64), (127, 64), (64, 128), (127, 2)])
def test_nezha_table_matches_upstream_at_released_sizes(max_relative_position, depth):  # sijunhe/nezha-cn-*
    ours = relative_position_table(max_relative_position, depth, np.float64, as_torch=True)
    assert not bit_problems(ours, nezha_table(max_relative_position, depth),
                            f"NEZHA table K={max_relative_position} d={depth}")


# ---------------------------------------------------------------- whole models


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_xglm_float64_run_reproduced(tmp_path_factory, data):
    """Upstream's own float64 run (its float32 table, cast) against refimpl islands="upstream": every output
    field of every step (a cached second step, regrown tables, any position ids) within 1e-10."""
    cfg = data.draw(xglm_configs(transformers))
    cls_name = data.draw(st.sampled_from(["XGLMModel", "XGLMForCausalLM"]))
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = protect_position_ids(getattr(transformers, cls_name)(cfg))
    live.randomize_(model, seed)
    case = xglm_case(live, cfg, cls_name, np.random.default_rng(seed), data.draw)
    problems = live.island_problems(model, case, tmp_path_factory.mktemp("xglm"), ISLANDS_CPU)
    assert not problems, f"[{KERNEL}] config {cfg.to_diff_dict()}\n" + "\n".join(problems)


@pytest.mark.parametrize("d_model, heads, length", [(64, 4, 70), (33, 3, 12), (128, 8, 20)])
def test_xglm_wide_float64_run_reproduced(tmp_path, d_model, heads, length):
    """Wider tables (many frequencies) and inputs past max_position_embeddings (upstream regrows its table)."""
    cfg = transformers.XGLMConfig(vocab_size=29, d_model=d_model, attention_heads=heads, num_layers=2, ffn_dim=19,
                                  max_position_embeddings=40, dropout=0.0)
    torch.manual_seed(0)
    model = transformers.XGLMForCausalLM(cfg)
    live.randomize_(model, 7)
    ids = np.random.default_rng(1).integers(2, 29, size=(2, length))
    case = live.Case("wide", [live.Step({"input_ids": ids}, {"output_hidden_states": True})])
    problems = live.island_problems(model, case, tmp_path, ISLANDS_CPU)
    assert not problems, f"[{KERNEL}] d_model={d_model}\n" + "\n".join(problems)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(NEZHA_CLASSES), st.data())
def test_nezha_float64_run_reproduced(tmp_path_factory, cls_name, data):
    """Upstream's own float64 run (its float32 relative-position table, cast) against refimpl
    islands="upstream": every output field within 1e-10."""
    cfg = data.draw(nezha_configs(cls_name))
    seed = data.draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(transformers.NezhaConfig(**cfg))
    live.randomize_(model, seed)
    case = nezha_case(cfg, cls_name, np.random.default_rng(seed), data, live)
    problems = live.island_problems(model, case, tmp_path_factory.mktemp("nezha"), ISLANDS_CPU, cls_name)
    assert not problems, f"[{KERNEL}] config {cfg}\n" + "\n".join(problems)


@pytest.mark.parametrize("head_dim, max_relative_position, length", [(64, 64, 40), (32, 127, 30), (16, 3, 12)])
def test_nezha_wide_float64_run_reproduced(tmp_path, head_dim, max_relative_position, length):
    """Released head sizes and clipping distances, inputs longer than the clipping distance."""
    cfg = transformers.NezhaConfig(vocab_size=31, hidden_size=2 * head_dim, num_attention_heads=2, num_hidden_layers=2,
                                   intermediate_size=24, max_position_embeddings=64,
                                   max_relative_position=max_relative_position, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = transformers.NezhaForMaskedLM(cfg)
    live.randomize_(model, 3)
    ids = np.random.default_rng(2).integers(0, 31, size=(2, length))
    case = live.Case("wide", [live.Step({"input_ids": ids}, {"output_hidden_states": True})])
    problems = live.island_problems(model, case, tmp_path, ISLANDS_CPU, "NezhaForMaskedLM")
    assert not problems, f"[{KERNEL}] head_dim={head_dim}\n" + "\n".join(problems)


# ---------------------------------------------------------------- the other CPU kernel


def test_everything_above_on_the_other_cpu_kernel():
    """This file's tests once more in a subprocess on torch's other CPU kernel: ATEN_CPU_CAPABILITY=avx2
    (or, on an AVX2-only machine, the default one), so that every run checks both."""
    other = "default" if KERNEL == "AVX2" else "avx2"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=other)
    root = Path(__file__).resolve().parents[1]
    kernel = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                            env=env, capture_output=True, text=True, cwd=root)
    assert kernel.stdout.strip() == other.upper() != KERNEL, f"asked for {other}, torch runs {kernel.stdout}{kernel.stderr}"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "not other_cpu_kernel"], env=env, capture_output=True, text=True, cwd=root)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0 and " passed" in summary and "skipped" not in summary, \
        f"on {other.upper()}: {summary}\n{run.stdout[-6000:]}"
