"""Every fenced example of README.md runs as written, and the figures it shows exist and are redrawn.

A block's info string is its language and, optionally, one marker:
    ```python / ```bash             run: Python in a fresh interpreter, shell with `bash -e -o pipefail`
    ```python needs-torch           run when torch and transformers are installed, skipped otherwise
    ```python needs-twins           run where the `twins` extra is installed (jax, flax, tensorflow, onnxruntime
                                    beside torch and transformers: CI's second environment), skipped otherwise
    ```bash no-run                  not run: starts servers, runs benchmarks or captures; checked to hold
                                    only such commands (NO_RUN_COMMANDS), so the marker cannot hide an example
    ```bash after-previous          continues the runnable block before it: that block runs first, in the
                                    same scratch directory (its files are this block's input)
    ```text (or no language)        output or a synopsis, not a command
In a shell block, `pip install` lines are not run (the suite runs in the environment they install) and
neither is `python -m pytest` (the suite itself). Every block runs from one scratch directory per block
holding links to the repository's refimpl/data/, golden/, tests/ and bench/, so the README's relative
paths (`refimpl/data/opt-tiny`, `golden/...`) resolve as from the repository's root, and the files
examples write land in the scratch directory. The package itself is imported from the checkout
(PYTHONPATH; scratch/refimpl has no __init__.py, so the regular package wins), so Numba's caches stay
valid, and `refimpl` on PATH runs this checkout (`python -m refimpl`).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
LANGUAGES = {"python", "bash", "text", ""}
MARKERS = {"", "needs-torch", "needs-twins", "no-run", "after-previous"}
NEEDS = {"needs-torch": ("torch", "transformers"),
         "needs-twins": ("torch", "transformers", "jax", "flax", "tensorflow", "onnx", "onnxruntime")}
NOT_RUN_LINES = ("pip install ", "python -m pytest")  # shell lines the suite does not run (see the docstring)
NO_RUN_COMMANDS = ("pip install ", "python -m pytest", "python bench/", "python golden/", "python tests/mutation/",
                   "python -m venv .venv-twins", ".venv-twins/bin/python -m pytest",
                   "dask scheduler ",
                   "dask worker ", "refimpl score ")  # what a no-run block may hold (refimpl score: on a cluster)
LINKED = ("refimpl/data", "golden", "tests", "bench")
TIMEOUT = 300


def blocks():  # -> [(first line number, language, marker, code)]
    text = README.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        words = match.group(1).split()
        language, marker = (words + ["", ""])[:2] if words else ("", "")
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, language, marker, match.group(2)))
    return found


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b[1] in ("python", "bash") and b[2] != "no-run"]


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture
def scratch(tmp_path):  # -> (directory, environment) for one block
    for name in LINKED:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "refimpl"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m refimpl \"$@\"\n")
    shim.chmod(0o755)
    python = bin_dir / "python"  # `python` in a shell block is this interpreter, as after the set-up's pip
    python.symlink_to(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg"}
    return tmp_path, env


def test_every_block_is_marked_as_the_test_understands():
    assert len(RUN) >= 15, f"only {len(RUN)} runnable examples found: is the fence pattern still right?"
    for line, language, marker, code in BLOCKS:
        assert language in LANGUAGES and marker in MARKERS, (
            f"README.md line {line}: info string {language!r} {marker!r}; use one of {sorted(LANGUAGES)} "
            f"with one of {sorted(MARKERS)}")


@pytest.mark.parametrize("line, marker, code", [(b[0], b[2], b[3]) for b in BLOCKS if b[2] == "no-run"],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else None)
def test_no_run_blocks_hold_only_servers_benchmarks_and_installs(line, marker, code):
    for command in code.splitlines():
        command = command.strip()
        assert not command or command.startswith("#") or command.startswith(NO_RUN_COMMANDS), (
            f"README.md line {line}: `{command}` in a no-run block: make it run, or move it out")


@pytest.mark.parametrize("line, language, marker, code", RUN, ids=[f"line{b[0]}-{b[1]}-{b[2] or 'plain'}" for b in RUN])
def test_example_runs_as_written(line, language, marker, code, scratch):
    previous = RUN[RUN.index((line, language, marker, code)) - 1] if marker == "after-previous" else None
    needs = NEEDS.get(marker, ()) + (NEEDS.get(previous[2], ()) if previous else ())
    missing = [module for module in needs if not has(module)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (the 'upstream' or 'twins' extra)")
    directory, env = scratch
    if previous is not None:
        assert previous[2] != "after-previous", f"README.md line {line}: chains of after-previous blocks"
        run_block(previous[0], previous[1], previous[3], directory, env)
    run_block(line, language, code, directory, env)


def run_block(line, language, code, directory, env) -> None:  # one block, in `directory`; fails on exit != 0
    if language == "python":
        command = [sys.executable, "-c", code]
    else:
        lines = [s for s in code.splitlines() if not s.strip().startswith(NOT_RUN_LINES)]
        command = ["bash", "-e", "-o", "pipefail", "-c", "\n".join(lines)]
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (f"README.md line {line} ({language} block) exited {result.returncode}:\n"
                                    f"{result.stderr[-3000:]}")


def test_the_readme_figures_exist_and_bench_figures_draws_them(tmp_path):
    """Every image the README shows is in the repository, and `bench/figures.py` draws each of them."""
    pytest.importorskip("matplotlib")
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text(encoding="utf-8"))
    assert shown, "the README shows no figure"
    for path in shown:
        assert (ROOT / path).is_file(), f"README.md shows {path}, which is not in the repository"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "figures.py"), "--out", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = {p.name for p in tmp_path.glob("*.png")}
    assert {Path(p).name for p in shown} <= drawn, f"bench/figures.py drew {sorted(drawn)}, the README shows {shown}"
    for path in tmp_path.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 200_000, path


def test_the_readme_speaks_only_of_the_repository():
    """No path outside the repository and no word of the team that wrote it."""
    text = README.read_text(encoding="utf-8")
    for phrase in ("../", "this machine", "closing notes", "session", "path/to/"):  # "../": outside the repository
        assert phrase not in text, f"README.md mentions {phrase!r}"
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), f"README.md links to {link}, which is not in the repository"
