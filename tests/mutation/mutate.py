"""Mutation testing of refimpl/: small edits injected one at a time; a mutant the tests do not notice
"survives". The score is killed / (run - documented equivalents).

    python tests/mutation/mutate.py map                      # one coverage run: line -> tests (~ the suite's time)
    python tests/mutation/mutate.py map tests/test_x.py      # re-map only these test files (merged in)
    python tests/mutation/mutate.py list | wc -l             # every possible mutant, one identity a line
    python tests/mutation/mutate.py run --sample 120 --seed 1733550000 --timeout 300

`map` needs `coverage` (pip install coverage). It writes tests/mutation/map.json (not committed): for each
line of refimpl/ the node ids of the tests that execute it (subprocesses started by tests included), and
each test's duration. `run` copies the package to a scratch directory (never the working tree), applies
one mutant at a time there and runs only the tests that execute the mutated line, fastest first, with
`-x` and a per-mutant timeout. A timeout counts as surviving, unless the same tests took under a tenth
of the limit (less a minute) in the map's run: then the mutant hangs them, a "hang", counted as killed.
A test process that dies (a signal, or an exit status outside pytest's 0-5) counts as killed. Lines run
only at import (defaults in signatures, dataclass fields, module constants) and the bodies of Numba kernels (not seen by coverage) take the tests of the lines
that use the name they define. A mutant no test executes counts as surviving.

A mutant's identity is `file:line:col:operator:replacement` (stable while the line is unchanged);
tests/mutation/equivalent.txt lists the survivors judged equivalent (no observable behaviour), each
with its reason; they are left out of the score and reported.

Operators: compare (a comparison flipped), constant (a number changed), raise (a `raise` replaced by
`pass`), kwarg (a keyword argument dropped), axis (an `axis=`/`dim=` value swapped), arith (an
arithmetic operator swapped), negate (`not` dropped, `and`/`or` swapped, True/False swapped, an `if`/
`while` condition negated), return (a returned value replaced by None).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PACKAGE = "refimpl"
MAP = Path(os.environ.get("MUTATION_MAP", HERE / "map.json"))
EQUIVALENT = HERE / "equivalent.txt"
# a timed-out mutant counts as a hang (killed) when its tests, unmutated, took under 1/HANG_FACTOR of the
# time limit (less a minute of start-up) in the map's coverage run, itself slower than a plain run
HANG_FACTOR = 10

COMPARE = {ast.Lt: ("<", ["<=", ">="]), ast.LtE: ("<=", ["<", ">"]), ast.Gt: (">", [">=", "<="]),
           ast.GtE: (">=", [">", "<"]), ast.Eq: ("==", ["!="]), ast.NotEq: ("!=", ["=="]),
           ast.Is: ("is", ["is not"]), ast.IsNot: ("is not", ["is"]), ast.In: ("in", ["not in"]),
           ast.NotIn: ("not in", ["in"])}
ARITH = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
         ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"), ast.MatMult: ("@", "*"),
         ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<"), ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&")}
AXIS_KEYWORDS = {"axis", "dim", "axes", "axis1", "axis2", "dim0", "dim1"}


@dataclass(frozen=True)
class Mutant:
    file: str          # path relative to the repository root
    line: int          # 1-based line of the edit's start
    col: int           # 0-based column of the edit's start
    operator: str
    replacement: str   # the text put in place of [start, end)
    end_line: int
    end_col: int
    note: str = ""     # shown instead of an empty replacement: "-name" for a dropped keyword argument

    @property
    def ident(self) -> str:
        return f"{self.file}:{self.line}:{self.col}:{self.operator}:{self.note or self.replacement}"


# ---------------------------------------------------------------------------------------------------
# Enumerating mutants


def _docstring_nodes(tree) -> Set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _annotation_nodes(tree) -> Set[int]:
    ids = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            anns.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            anns.append(node.returns)
        for ann in anns:
            ids.update(id(sub) for sub in ast.walk(ann))
    return ids


class _Offsets:
    """(line, col) <-> absolute character offset in a source text (ast columns are UTF-8 byte offsets)."""

    def __init__(self, source: str):
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def char_col(self, line: int, byte_col: int) -> int:
        return len(self.lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))

    def offset(self, line: int, byte_col: int) -> int:
        return self.starts[line - 1] + self.char_col(line, byte_col)


def _between(source: str, off: _Offsets, left, right, token: str):
    """Position (line, char col, end line, end char col) of `token` between nodes left and right."""
    start = off.offset(left.end_lineno, left.end_col_offset)
    stop = off.offset(right.lineno, right.col_offset)
    text = source[start:stop]
    pattern = r"\s+".join(re.escape(part) for part in token.split())
    for m in re.finditer(r"(?<![=<>!*/])" + pattern + r"(?![=<>*/])", text):
        # the operator, not a bracket or comment: skip matches inside a comment
        before = text[:m.start()]
        if "#" in before.split("\n")[-1]:
            continue
        return _position(off, start + m.start()), _position(off, start + m.end())
    return None


def _position(off: _Offsets, absolute: int):
    import bisect
    line = bisect.bisect_right(off.starts, absolute) - 1
    return line + 1, absolute - off.starts[line]


def _span(off: _Offsets, node):
    return (node.lineno, off.char_col(node.lineno, node.col_offset),
            node.end_lineno, off.char_col(node.end_lineno, node.end_col_offset))


def _is_main_guard(node) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def mutants_of(path: Path) -> List[Mutant]:
    rel = str(path.relative_to(ROOT))
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    off = _Offsets(source)
    skip = _docstring_nodes(tree) | _annotation_nodes(tree)
    for node in ast.walk(tree):
        if _is_main_guard(node):
            skip.update(id(sub) for sub in ast.walk(node))
    axis_values = set()
    out: List[Mutant] = []

    def add(operator, replacement, span, note=""):
        line, col, end_line, end_col = span
        out.append(Mutant(rel, line, col, operator, replacement, end_line, end_col, note))

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            operands = [node.left] + list(node.comparators)
            for i, op in enumerate(node.ops):
                token, replacements = COMPARE[type(op)]
                pos = _between(source, off, operands[i], operands[i + 1], token)
                if pos is None:
                    continue
                (l0, c0), (l1, c1) = pos
                for rep in replacements:
                    add("compare", rep, (l0, c0, l1, c1))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)):
            if type(node.op) not in ARITH:
                continue
            token, rep = ARITH[type(node.op)]
            if isinstance(node, ast.BinOp):
                if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                    continue  # string formatting with %
                pos = _between(source, off, node.left, node.right, token)
            else:
                pos = _between(source, off, node.target, node.value, token + "=")
                rep = rep + "="
            if pos is None:
                continue
            (l0, c0), (l1, c1) = pos
            add("arith", rep, (l0, c0, l1, c1))
        elif isinstance(node, ast.Raise):
            add("raise", "pass", _span(off, node))
        elif isinstance(node, ast.Return):
            if node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None):
                continue
            add("return", "None", _span(off, node.value))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = ast.get_source_segment(source, node.operand)
            add("negate", f"({inner})", _span(off, node))
        elif isinstance(node, ast.BoolOp):
            token, rep = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for left, right in zip(node.values, node.values[1:]):
                pos = _between(source, off, left, right, token)
                if pos is not None:
                    (l0, c0), (l1, c1) = pos
                    add("negate", rep, (l0, c0, l1, c1))
        elif isinstance(node, (ast.If, ast.While)):
            segment = ast.get_source_segment(source, node.test)
            add("negate", f"not ({segment})", _span(off, node.test))
        elif isinstance(node, ast.Call):
            items = sorted([a for a in node.args] + [k for k in node.keywords],
                           key=lambda n: (n.lineno, n.col_offset))
            for i, kw in enumerate(items):
                if not isinstance(kw, ast.keyword) or kw.arg is None:
                    continue
                if i > 0:   # from the end of the previous argument to the end of this one
                    prev = items[i - 1]
                    span = (prev.end_lineno, off.char_col(prev.end_lineno, prev.end_col_offset),
                            kw.end_lineno, off.char_col(kw.end_lineno, kw.end_col_offset))
                elif len(items) > 1:  # first of several: up to the start of the next one
                    nxt = items[1]
                    span = (kw.lineno, off.char_col(kw.lineno, kw.col_offset),
                            nxt.lineno, off.char_col(nxt.lineno, nxt.col_offset))
                else:
                    span = _span(off, kw)
                add("kwarg", "", span, note=f"-{kw.arg}")
                if kw.arg in AXIS_KEYWORDS:
                    value = kw.value
                    number = _int_value(value)
                    if number is not None:
                        axis_values.add(id(value))
                        for sub in ast.walk(value):
                            axis_values.add(id(sub))
                        swapped = {-1: -2, -2: -1, 0: 1, 1: 0}.get(number, number - 1)
                        add("axis", str(swapped), _span(off, value))
        elif isinstance(node, ast.Constant):
            value = node.value
            if id(node) in axis_values:
                continue
            if isinstance(value, bool):
                add("negate", str(not value), _span(off, node))
            elif isinstance(value, int):
                add("constant", str(value + 1), _span(off, node))
            elif isinstance(value, float):
                add("constant", repr(value * 2 if value not in (0.0,) else 1.0), _span(off, node))
    # an axis constant also inside a Constant visit order: drop constant mutants of axis values
    return sorted(set(out), key=lambda m: (m.line, m.col, m.operator, m.replacement))


def _int_value(node) -> Optional[int]:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_value(node.operand)
        return None if inner is None else -inner
    return None


def package_files(root: Path = ROOT) -> List[Path]:
    return sorted(p for p in (root / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def all_mutants() -> List[Mutant]:
    out = []
    for path in package_files():
        out.extend(mutants_of(path))
    # an axis value is mutated by `axis`, not also by `constant`
    axis_spots = {(m.file, m.line, m.col) for m in out if m.operator == "axis"}
    return [m for m in out if not (m.operator == "constant" and (m.file, m.line, m.col) in axis_spots)]


def apply(source: str, m: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    a = starts[m.line - 1] + m.col
    b = starts[m.end_line - 1] + m.end_col
    return source[:a] + m.replacement + source[b:]


# ---------------------------------------------------------------------------------------------------
# The line -> tests map


def cmd_map(args) -> None:
    try:
        import coverage  # noqa: F401
    except ImportError:
        sys.exit("mutate.py map needs coverage: pip install coverage")
    work = Path(tempfile.mkdtemp(prefix="refimpl-map-"))
    rc = work / "coveragerc"
    rc.write_text(f"[run]\nsource = {ROOT / PACKAGE}\nparallel = True\ndata_file = {work / 'cov'}\n"
                  "concurrency = thread,multiprocessing\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
               COVERAGE_PROCESS_START=str(rc), MUTATION_DURATIONS=str(work / "durations.json"))
    tests = args.tests or ["tests"]
    cmd = [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-q",
           "-p", "no:cacheprovider", "-p", "tests.mutation.covplugin", *tests]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env)
    subprocess.run([sys.executable, "-m", "coverage", "combine", f"--rcfile={rc}", "-q"], cwd=ROOT, env=env)
    from coverage import CoverageData
    data = CoverageData(basename=str(work / "cov"))
    data.read()
    lines: Dict[str, Dict[str, List[str]]] = {}
    for measured in data.measured_files():
        rel = os.path.relpath(measured, ROOT)
        by_line = data.contexts_by_lineno(measured)
        lines[rel] = {str(n): sorted(c for c in ctx) for n, ctx in by_line.items()}
    durations = json.loads((work / "durations.json").read_text()) if (work / "durations.json").exists() else {}
    if args.tests and MAP.exists():   # merge: replace what the re-mapped test files contributed
        old = json.loads(MAP.read_text())
        files = tuple(str(Path(t)) for t in args.tests)
        for rel, by_line in old["lines"].items():
            for n, ctx in by_line.items():
                kept = [c for c in ctx if not c.startswith(files)]
                merged = sorted(set(kept) | set(lines.get(rel, {}).get(n, [])))
                lines.setdefault(rel, {})[n] = merged
        durations = {**{k: v for k, v in old["durations"].items() if not k.startswith(files)}, **durations}
    MAP.write_text(json.dumps({"lines": lines, "durations": durations}))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {MAP}: {sum(len(v) for v in lines.values())} lines, {len(durations)} tests")


class TestMap:
    def __init__(self, path: Path = MAP):
        data = json.loads(path.read_text())
        self.lines = {f: {int(n): set(c for c in ctx if c) for n, ctx in by.items()}
                      for f, by in data["lines"].items()}
        self.durations = data["durations"]
        self._trees = {}

    def _tree(self, rel):
        if rel not in self._trees:
            self._trees[rel] = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        return self._trees[rel]

    def tests_for(self, m: Mutant) -> List[str]:
        executed = self.lines.get(m.file, {})
        tests = set(executed.get(m.line, set())) or self._statement_tests(m.file, m.line)
        if self._at_import(m.file, m.line):  # run once, by whichever test imported the module first
            tests |= self._fallback(m)
        elif not tests and (m.line in executed or not self._in_executed_function(m.file, m.line)):
            tests = self._fallback(m)  # inside a Numba kernel (coverage does not see it)
        known = {}
        for t in tests:
            if "::" not in t:
                continue
            if "0x" in t:  # a parameter shown by its address changes from run to run: run them all
                t = t.split("[", 1)[0]
            known[t] = min(known.get(t, 1e9), self.durations.get(t, 1.0))
        return sorted(known, key=lambda t: (known[t], t))

    def _statement_tests(self, rel, line) -> Set[str]:
        """A line inside a statement that spans several lines (a call's later arguments): coverage records
        the statement at its first line, so the tests of the innermost such statement's first line."""
        executed = self.lines.get(rel, {})
        spans = [n for n in ast.walk(self._tree(rel)) if isinstance(n, ast.stmt) and n.lineno < line <= n.end_lineno
                 and not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For,
                                        ast.While, ast.With, ast.Try))]
        if not spans:
            return set()
        innermost = min(spans, key=lambda n: n.end_lineno - n.lineno)
        return set(executed.get(innermost.lineno, set()))

    def _at_import(self, rel, line) -> bool:
        """Whether `line` runs when its module is imported: outside every function body (module and class
        level, decorators, a signature's defaults)."""
        for node in self._enclosing(rel, line):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and line >= node.body[0].lineno:
                return False
        return True

    def _in_executed_function(self, rel, line) -> bool:
        """Whether `line` lies in a function coverage saw running (so the line itself was never run)."""
        executed = self.lines.get(rel, {})
        for node in self._enclosing(rel, line):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return any(n in executed for n in range(node.body[0].lineno, node.end_lineno + 1))
        return False

    def _lines_tests(self, rel, lines) -> Set[str]:
        by = self.lines.get(rel, {})
        out = set()
        for n in lines:
            out |= by.get(n, set())
        return out

    def _fallback(self, m: Mutant) -> Set[str]:
        """Tests for a line coverage saw only at import (or not at all): the body of the function whose
        signature holds it, else the tests of the lines using the name defined by its innermost definition
        (followed through definitions that are themselves import-only or uncovered, a few levels deep)."""
        return self._line_fallback(m.file, m.line, depth=3, seen=set())

    def _line_fallback(self, rel, line, depth, seen) -> Set[str]:
        chain = self._enclosing(rel, line)
        extra = set()
        if len(chain) >= 2 and isinstance(chain[0], (ast.Assign, ast.AnnAssign)) and isinstance(chain[1], ast.ClassDef):
            extra = self._tests_naming(chain[1].name)  # a class attribute (a dataclass default): its class's tests
        for node in chain:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                tests = self._lines_tests(rel, range(node.body[0].lineno, node.end_lineno + 1))
                if tests:
                    return tests
            tests = set()
            for name in self._names(node):
                if (rel, name) in seen:
                    continue
                seen.add((rel, name))
                for use_rel, use_line in self._uses(name, rel, node):
                    found = self.lines.get(use_rel, {}).get(use_line, set())
                    if not found and depth > 0:
                        found = self._line_fallback(use_rel, use_line, depth - 1, seen)
                    tests |= found
            if tests or extra:
                return tests | extra
        return extra

    def _tests_naming(self, name) -> Set[str]:
        """The mapped tests of the test files that mention `name` (e.g. a config class compared with upstream's)."""
        pattern = re.compile(r"\b" + re.escape(name) + r"\b")
        files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))}
        return {t for t in self.durations if t.split("::", 1)[0] in files}

    def _enclosing(self, rel, line):  # definitions holding `line`, innermost first
        chain = []
        for node in ast.walk(self._tree(rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)):
                start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                if start <= line <= node.end_lineno:
                    chain.append(node)
        chain.sort(key=lambda n: n.end_lineno - n.lineno)
        return chain

    @staticmethod
    def _names(node) -> List[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return [node.name]
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = []
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.append(sub.id)
        return names

    def _uses(self, name, rel, definition):  # -> [(file, line)] mentioning `name` outside its definition
        pattern = re.compile(r"\b" + re.escape(name) + r"\b")
        if not hasattr(self, "_sources"):
            self._sources = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8").splitlines()
                             for p in package_files()}
        out = []
        for use_rel, lines in self._sources.items():
            for i, text in enumerate(lines, 1):
                if pattern.search(text) and not (use_rel == rel and definition.lineno <= i <= definition.end_lineno):
                    out.append((use_rel, i))
        return out


# ---------------------------------------------------------------------------------------------------
# Running mutants


def load_equivalents() -> Dict[str, str]:
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                ident, _, reason = line.partition(" ")
                out[ident.strip()] = reason.strip()
    return out


_LOCKS = []  # open lock files of this process's scratch copies, held until it exits


def _lock(work: Path) -> None:
    """One run per scratch copy: a second run of the same checkout would apply its mutants to the copy
    the first is testing (and restore the file under it)."""
    import fcntl
    handle = open(work / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another mutate.py run is using {work}; wait for it, or run from another checkout")
    _LOCKS.append(handle)


def scratch_copy(worker: int = 0) -> Path:
    """A copy of the repository's package and tests in a fixed scratch directory (per checkout and
    worker), with golden/ linked; files keep their times so Numba's cache stays valid between runs."""
    import hashlib
    tag = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
    work = Path(tempfile.gettempdir()) / f"refimpl-mutation-{tag}-{worker}"
    work.mkdir(exist_ok=True)
    _lock(work)
    for name in (PACKAGE, "tests"):
        src, dst = ROOT / name, work / name
        for path in src.rglob("*"):
            if "__pycache__" in path.parts or path.is_dir() or path.name.endswith((".pyc", ".json.tmp")):
                continue
            if name == "tests" and path.parent.name == "mutation":
                continue
            target = dst / path.relative_to(src)
            if not target.exists() or target.stat().st_mtime != path.stat().st_mtime \
                    or target.stat().st_size != path.stat().st_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    for name in ("golden", "bench", "setup.cfg", "pyproject.toml", "README.md"):
        link = work / name
        if (ROOT / name).exists() and not link.exists():
            link.symlink_to(ROOT / name)
    return work


def run_mutant(m: Mutant, tests: List[str], work: Path, timeout: float):
    target = work / m.file
    original = (ROOT / m.file).read_text(encoding="utf-8")
    stat = (ROOT / m.file).stat()
    mutated = apply(original, m)
    try:
        ast.parse(mutated)
    except SyntaxError:
        return "invalid", 0.0, ""
    target.write_text(mutated, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
           "-o", "addopts=", *tests]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = {0: "survived", 1: "killed"}.get(proc.returncode, f"error{proc.returncode}")
        if proc.returncode not in (0, 1):  # interrupted, internal error, usage error, no tests
            status = "killed" if proc.returncode == 2 and b"Interrupted" in out else status
            # a test module that no longer imports, asked for by node id: pytest exits 4 ("found no
            # collectors"), not 2; a node id that does not exist says "not found" and stays an error
            status = "killed" if proc.returncode == 4 and b"found no collectors" in out else status
            # the test process died (a signal, or an exit status pytest never uses, e.g. 127 when a library
            # aborts the process): the tests noticed
            status = "killed" if proc.returncode < 0 or proc.returncode > 5 else status
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        status = "timeout"
    finally:
        target.write_text(original, encoding="utf-8")
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    tail = out.decode(errors="replace").strip().splitlines()[-1:] if out else [""]
    return status, time.perf_counter() - start, tail[0]


def cmd_list(args) -> None:
    for m in all_mutants():
        print(m.ident)


def cmd_run(args) -> None:
    mutants = all_mutants()
    if args.only:
        wanted = set(args.only)
        mutants = [m for m in mutants if m.ident in wanted or m.file in wanted]
    if args.sample:
        mutants = random.Random(args.seed).sample(mutants, min(args.sample, len(mutants)))
    tmap = None if args.tests else TestMap()
    works = [scratch_copy(w) for w in range(args.jobs)]
    print(f"{len(mutants)} mutants (sample {args.sample} seed {args.seed}); scratch copies {works[0]}...",
          flush=True)
    free = list(works)
    lock = threading.Lock()
    done = [0]

    def one(m):
        tests = list(args.tests) if args.tests else tmap.tests_for(m)
        with lock:
            work = free.pop()
        try:
            status, took, tail = run_mutant(m, tests, work, args.timeout) if tests else ("uncovered", 0.0, "")
            expected = sum(tmap.durations.get(t, 1.0) for t in tests) if tmap else None
            if status == "timeout" and expected is not None and args.timeout > HANG_FACTOR * expected + 60:
                status = "hang"  # tests that took `expected` s unmutated never finished: the mutant loops
        finally:
            with lock:
                free.append(work)
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{len(mutants)}] {status:10s} {took:6.1f}s {len(tests):4d} tests  {m.ident}", flush=True)
        return {"mutant": m.ident, "status": status, "tests": len(tests), "seconds": round(took, 1),
                "expected_seconds": None if expected is None else round(expected, 1), "last_line": tail}

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, mutants))
    report(results, args.sample, args.seed, Path(args.output))


def report(results, sample, seed, out: Path) -> None:
    """Counts, score and survivors of a run (equivalents as listed now in equivalent.txt), saved to `out`."""
    equivalents = load_equivalents()
    for r in results:
        if r["status"] in ("survived", "timeout", "uncovered") and r["mutant"] in equivalents:
            r["status"], r["reason"] = "equivalent", equivalents[r["mutant"]]
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    # a hang (see HANG_FACTOR) is noticed: the suite would never finish; a plain timeout is not counted as a
    # kill (it may be a slow survivor)
    killed = counts.get("killed", 0) + counts.get("hang", 0)
    scored = sum(v for k, v in counts.items() if k not in ("equivalent", "invalid"))
    score = killed / scored if scored else float("nan")
    summary = {"sample": sample, "seed": seed, "possible": len(all_mutants()), "counts": counts,
               "score": score, "results": results}
    out.write_text(json.dumps(summary, indent=1))
    print(f"\n{counts}\nscore: killed {killed} / {scored} (equivalents and invalid left out) = {score:.1%}")
    for r in results:
        if r["status"] in ("survived", "uncovered", "timeout", "hang", "equivalent"):
            print(f"  {r['status']}: {r['mutant']}" + (f"  ({r['reason']})" if "reason" in r else ""))


def cmd_merge(args) -> None:
    """Union of maps written by `map` runs over different test files (MUTATION_MAP=part.json)."""
    lines, durations = {}, {}
    for part in args.parts:
        data = json.loads(Path(part).read_text())
        for rel, by_line in data["lines"].items():
            for n, ctx in by_line.items():
                lines.setdefault(rel, {}).setdefault(n, set()).update(ctx)
        durations.update(data["durations"])
    lines = {rel: {n: sorted(c) for n, c in by.items()} for rel, by in lines.items()}
    MAP.write_text(json.dumps({"lines": lines, "durations": durations}))
    print(f"wrote {MAP}: {sum(len(v) for v in lines.values())} lines, {len(durations)} tests")


def cmd_score(args) -> None:
    """The score of a saved run, with the equivalents listed now."""
    data = json.loads(Path(args.run).read_text())
    for r in data["results"]:
        if r["status"] == "equivalent" and "reason" not in r:
            r["status"] = "survived"
    report(data["results"], data["sample"], data["seed"], Path(args.run))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("map", help="one coverage run: which tests execute which line")
    p.add_argument("tests", nargs="*", help="test files to (re-)map; default: the whole suite")
    p.set_defaults(func=cmd_map)
    p = sub.add_parser("score", help="re-score a saved run with the equivalents listed now")
    p.add_argument("run", nargs="?", default=str(HERE / "last_run.json"))
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("merge", help="union of maps (MUTATION_MAP=part.json mutate.py map FILES, ...)")
    p.add_argument("parts", nargs="+")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("list", help="print every possible mutant's identity")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("run", help="run mutants against the tests that execute their line")
    p.add_argument("--sample", type=int, default=0, help="draw N mutants uniformly (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a timeout counts as surviving)")
    p.add_argument("--jobs", type=int, default=1, help="mutants run at once (each in its own scratch copy)")
    p.add_argument("--only", nargs="*", help="mutant identities or files to run")
    p.add_argument("--output", default=str(HERE / "last_run.json"))
    p.add_argument("--tests", nargs="*", help="run these tests (files or node ids) for every mutant instead of the map's")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
