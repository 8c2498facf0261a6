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
