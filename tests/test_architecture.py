"""The package's structure, checked: no import cycle, a leaf accelerator module, no import-time side effects,
one declared interface per family, and one dispatch policy whose float64 results do not depend on it."""
import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import refimpl
from golden import GOLDEN, compare_tensor, output_fields
from refimpl import accel
from refimpl.family import FamilySpec
from refimpl.models import FAMILIES, family

PACKAGE = Path(refimpl.__file__).resolve().parent
ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """{module: the refimpl modules it imports}, from the source: every import statement, at any depth."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                stem = (base + "." + node.module if node.module else base) if node.level else node.module
                candidates = [stem + "." + a.name for a in node.names] + [stem]
            else:
                continue
            for candidate in candidates:  # the longest prefix that is a refimpl module
                while candidate and candidate not in modules:
                    candidate = candidate.rsplit(".", 1)[0] if "." in candidate else ""
                if candidate and candidate != name and candidate != "refimpl":
                    targets.add(candidate)
        graph[name] = targets
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        state[u] = "done"
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state:
            found = visit(u)
            if found:
                return found
    return None


def test_no_import_cycle_in_refimpl():
    graph = import_graph()
    assert "refimpl.banded_attention" in graph and graph["refimpl.banded_attention"], "the graph is empty: broken test"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_cycles():  # the checker itself can fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_accel_is_a_leaf():
    assert import_graph()["refimpl.accel"] == set(), "refimpl.accel must not import other refimpl modules"


def test_no_module_imports_torch():  # refimpl.dump_torch loads torch inside its functions, on purpose
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("torch", "transformers") for n in names), f"{path} imports torch"
    out = run_python("""
        import sys, refimpl, refimpl.dump_torch
        refimpl.from_pretrained, refimpl.trace
        assert "torch" not in sys.modules, "importing refimpl (or its dumper) imported torch"
        print("ok")
    """)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def run_python(code, unset=(), **env):
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={**environment, "PYTHONPATH": str(ROOT), **env})


def test_import_refimpl_changes_nothing_in_the_process():
    out = run_python("""
        import os, sys
        env = dict(os.environ)
        maps = open("/proc/self/maps").read()
        import refimpl
        assert dict(os.environ) == env, "import refimpl changed os.environ"
        assert "numpy" not in sys.modules, "import refimpl imported numpy"
        assert open("/proc/self/maps").read().count(".so") == maps.count(".so"), "a library was loaded"
        refimpl.from_pretrained   # first use loads the modules, still without touching the environment
        assert callable(refimpl.scoring.token_logprobs)  # submodules load on first use too
        assert dict(os.environ) == env, "loading refimpl's modules changed os.environ"
        print("ok")
    """)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_configure_process_applies_the_runtime_settings():
    out = run_python("""
        import os
        import refimpl.runtime
        done = refimpl.runtime.configure_process()
        assert done["blas_spin_shortened"] and os.environ["OPENBLAS_THREAD_TIMEOUT"] == "20", done
        print("ok")
    """, unset=("OPENBLAS_THREAD_TIMEOUT",))
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ---------------------------------------------------------------- the family interface


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_declares_its_interface(model_type):
    spec = family(model_type)
    assert isinstance(spec, FamilySpec) and spec.model_type == model_type
    assert spec.config.model_type == model_type
    source = (PACKAGE / "models" / f"{model_type}.py").read_text()
    sections = [f"# {'-' * 64} {name}\n" for name in ("config", "parameters", "base model", "heads")]
    sections.append("SPEC = FamilySpec(")
    where = [source.find(s) for s in sections]
    assert all(w >= 0 for w in where) and where == sorted(where), f"{model_type}.py: sections out of order {where}"


def test_a_spec_with_a_missing_piece_is_refused():
    opt = family("opt")
    with pytest.raises(TypeError, match="base_model 'Nope'"):
        FamilySpec(model_type="opt", config=opt.config, base_model="Nope", base_prefix="model",
                   architectures=opt.architectures, param_shapes=opt.param_shapes)
    with pytest.raises(TypeError, match="causal_lm names 'OPTForSomething'"):
        FamilySpec(model_type="opt", config=opt.config, base_model="OPTModel", base_prefix="model",
                   architectures=opt.architectures, param_shapes=opt.param_shapes,
                   causal_lm={"OPTForSomething": "lm_head.weight"})


# ---------------------------------------------------------------- the dispatch policy

CHECKPOINTS = [("led", "windows-8-4-8-LEDForConditionalGeneration"), ("nezha", "k9-gelu_new-NezhaForMaskedLM"),
               ("nezha", "k2-NezhaForMaskedLM"), ("xglm", "gelu-scaled-XGLMForCausalLM"),
               ("opt", "preln-OPTForCausalLM")]


def forward(directory, dtype):  # -> every output field of a forward with attentions and hidden states
    model = refimpl.from_pretrained(GOLDEN / directory[0] / directory[1], dtype=dtype)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, model.config.vocab_size, size=(2, 13))
    ids[:, 0], ids[:, -1] = 0, 2
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    return output_fields(out)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=lambda c: "/".join(c))
def test_float64_is_bitwise_the_same_on_every_fast_backend(checkpoint):
    with refimpl.set_backend("numpy"):
        numpy_out = forward(checkpoint, "float64")
    with refimpl.set_backend("numba" if accel.HAVE_NUMBA else "numpy"):
        numba_out = forward(checkpoint, "float64")
    for key, value in numpy_out.items():
        assert np.array_equal(numba_out[key], value, equal_nan=True), f"{checkpoint} float64 {key} differs"


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="compares the Numba kernels with NumPy (CI runs both passes)")
@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=lambda c: "/".join(c))
def test_float32_numba_agrees_with_numpy_within_4e6(checkpoint):
    """The twins differ by float32 roundings only: within 4e-6 of the output's scale (~32 ulp), well inside
    the 1e-5 both keep to upstream (the golden tests)."""
    with refimpl.set_backend("numpy"):
        numpy_out = forward(checkpoint, "float32")
    with refimpl.set_backend("numba"):
        numba_out = forward(checkpoint, "float32")
    problems = []
    for key, value in numpy_out.items():
        diff = np.abs(numba_out[key].astype(np.float64) - value)
        scale = max(float(np.nanmax(np.abs(value), initial=0)), 1e-30)
        if np.nanmax(diff, initial=0) > 4e-6 * scale:
            problems.append(f"{checkpoint} float32 {key}: max abs diff {np.nanmax(diff):.3e} at "
                            f"{np.unravel_index(np.nanargmax(diff), diff.shape)}, relative {np.nanmax(diff) / scale:.2e}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=lambda c: "/".join(c))
def test_reference_backend_gives_the_same_model(checkpoint):
    """The readable per-query / per-pair definitions, forced for the whole model, against the fast path."""
    for dtype in ("float32", "float64"):
        with refimpl.set_backend("reference"):
            ours = forward(checkpoint, dtype)
        with refimpl.set_backend("numpy"):
            fast = forward(checkpoint, dtype)
        tol = dtype  # the same formulas summed in another order: rounding apart
        problems = [p for k in fast for p in compare_tensor(ours[k], fast[k], tol, f"{checkpoint} {dtype} {k}")]
        assert not problems, "\n".join(problems)


def test_policy_precedence_and_errors(monkeypatch):
    monkeypatch.delenv(accel.ENVIRONMENT_VARIABLE, raising=False)
    assert accel.choose_backend("float64") == "numpy"
    assert accel.choose_backend("float32") == ("numba" if accel.HAVE_NUMBA else "numpy")
    monkeypatch.setenv(accel.ENVIRONMENT_VARIABLE, "reference")
    assert accel.choose_backend("float32") == "reference"
    with refimpl.set_backend("numpy"):
        assert accel.choose_backend("float32") == "numpy"              # set_backend beats the environment
        assert accel.choose_backend("float32", "reference") == "reference"  # the call's argument beats both
    assert accel.choose_backend("float32") == "reference"                 # restored after the block
    monkeypatch.setenv(accel.ENVIRONMENT_VARIABLE, "fast")
    with pytest.raises(ValueError, match="REFIMPL_BACKEND.*'fast'"):
        accel.choose_backend("float32")
    monkeypatch.delenv(accel.ENVIRONMENT_VARIABLE)
    monkeypatch.setattr(accel, "HAVE_NUMBA", False)
    monkeypatch.setattr(accel, "NUMBA_MISSING", "numba is not installed")
    with pytest.raises(ValueError, match="Numba cannot run: numba is not installed"):
        refimpl.set_backend("numba")
    assert accel.choose_backend("float32") == "numpy"
    assert refimpl.backend_info()["float32"] == "numpy"


def test_environment_variable_forces_the_backend_in_a_fresh_process():
    out = run_python("""
        from refimpl import accel
        print(accel.choose_backend("float32"), accel.choose_backend("float64"))
    """, REFIMPL_BACKEND="reference")
    assert out.returncode == 0 and out.stdout.split() == ["reference", "reference"], out.stderr


@pytest.mark.skipif(not accel.HAVE_NUMBA, reason="needs numba installed, to hide scipy alone")
def test_numba_without_scipy_says_which_backend_runs(tmp_path):
    """numba importable but scipy hidden: the Numba kernels cannot run; float32 work warns once, naming
    scipy and the NumPy fallback, and backend_info() says why."""
    (tmp_path / "scipy").mkdir()
    (tmp_path / "scipy" / "__init__.py").write_text("raise ImportError('scipy is hidden for this test', name='scipy')\n")
    out = run_python("""
        import warnings
        import numpy as np
        from refimpl import accel, ops
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ops.layer_norm(np.ones((2, 4), np.float32))
            ops.layer_norm(np.ones((2, 4), np.float32))
        print(accel.backend_info()["float32"], accel.backend_info()["why_not"])
        print(len(caught), caught[0].message if caught else "")
    """, PYTHONPATH=f"{tmp_path}:{ROOT}")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith("numpy scipy is not installed"), first
    assert second.startswith("1 numba is installed but its kernels cannot run: scipy"), second


def test_the_thread_cap_bounds_every_kernel(monkeypatch):
    monkeypatch.setattr(accel, "_max_threads", None)
    every = os.cpu_count() or 1
    assert accel.threads_for(accel.SMALL_WORK - 1) == 1 and accel.threads_for(10**9) == every
    streaming = accel.STREAMING_WORK  # memory-streaming passes share later
    assert accel.threads_for(streaming - 1, streaming) == 1 and accel.threads_for(streaming, streaming) == every
    accel.set_max_threads(1)
    assert accel.threads_for(10**9) == 1
    accel.set_max_threads(None)
    assert accel.threads_for(10**9) == every
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="thread cap"):
            accel.set_max_threads(bad)
