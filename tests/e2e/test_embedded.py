"""The embedded default: SQLite + the SQLite-backed broker + a real worker process."""

from __future__ import annotations

import pytest

from tests.e2e import scenarios
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


def test_full_path(embedded_stack: Stack) -> None:
    scenarios.full_path(embedded_stack)


def test_hot_reload(embedded_stack: Stack) -> None:
    scenarios.hot_reload(embedded_stack)
