"""Fixtures shared by the LittleHorse tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lh.fake_server import FakeLittleHorse


@pytest.fixture
def fake() -> Iterator[FakeLittleHorse]:
    """A fake LittleHorse server for one test (files defining their own `fake` keep it)."""
    with FakeLittleHorse() as server:
        yield server
