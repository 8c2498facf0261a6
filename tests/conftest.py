import functools

import pytest

import refimpl


@functools.lru_cache(maxsize=64)
def _load(directory, architecture, dtype):
    return refimpl.from_pretrained(directory, architecture=architecture, dtype=dtype)


@pytest.fixture(scope="session")
def load_model():
    """Cached refimpl.from_pretrained(directory, architecture, dtype)."""
    return _load


def pytest_collection_modifyitems(items):
    """Every test in a `*_live.py` file compares against live upstream: it carries the `upstream` marker
    (`pytest -m "not upstream"` runs the rest)."""
    for item in items:
        if item.path.name.endswith("_live.py"):
            item.add_marker(pytest.mark.upstream)
