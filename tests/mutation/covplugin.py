"""pytest plugin for the mutation map: names coverage's context after the running test (its node id)
and records each test's duration, so `mutate.py` knows which tests execute which line and which are fast.

Loaded by `mutate.py map` as `-p tests.mutation.covplugin` under `coverage run`; does nothing otherwise.
A subprocess started by a test inherits PYTEST_CURRENT_TEST, and `sitecustomize.py` (beside this file,
put on PYTHONPATH by `mutate.py map`) names its context after the same test.
"""
from __future__ import annotations

import json
import os
import time

import pytest

_durations = {}


def _coverage():
    try:
        import coverage
    except ImportError:
        return None
    return coverage.Coverage.current()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = _coverage()
    if cov is not None:
        cov.switch_context(item.nodeid)
    start = time.perf_counter()
    yield
    _durations[item.nodeid] = time.perf_counter() - start
    if cov is not None:
        cov.switch_context("")


def pytest_sessionfinish(session):
    out = os.environ.get("MUTATION_DURATIONS")
    if out:
        with open(out, "w") as f:
            json.dump(_durations, f)
