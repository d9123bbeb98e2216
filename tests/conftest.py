"""Fixtures shared by the tests (plain helpers live in helpers.py)."""

import pytest

from helpers import TINY


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides that shrink any run to a few seconds."""
    return list(TINY)
