"""The embedded default: SQLite + the SQLite-backed broker + a real worker process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item, ItemStatus
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from tests.conftest import make_settings
from tests.e2e import scenarios
from tests.e2e.conftest import Stack, start_worker, wait_for

pytestmark = pytest.mark.e2e


def test_full_path(embedded_stack: Stack, runtime: ClipRuntime) -> None:
    scenarios.full_path(embedded_stack, runtime)


def test_hot_reload(embedded_stack: Stack) -> None:
    scenarios.hot_reload(embedded_stack)


def test_items_of_a_killed_worker_are_not_lost(settings: Settings, tmp_path: Path) -> None:
    """SIGKILL a worker holding prefetched messages and leased items; none is lost.

    kombu's SQLite transport loses the messages a SIGKILLed worker had taken: without the
    reconciler (and the claims of the next worker) those items would stay
    `processing`/`queued` forever.
    """
    fast = make_settings(settings.data_dir, stuck_after_s="3", sweep_every_s="0.5", lease_s="3")
    engine = make_engine(fast.database_url)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        key = keys.create_key(session, "acme")
    samples = scenarios.upload_world_images(Stack(fast, sessions, key, None), 120)  # type: ignore[arg-type]
    first = start_worker(fast, tmp_path / "first.log", settle=0)
    while scenarios.count_scored(sessions) == 0:
        time.sleep(0.01)
    first.proc.send_signal(signal.SIGKILL)
    first.stop()
    left = len(samples) - scenarios.count_scored(sessions)
    assert left > 0, "the worker finished everything before it was killed: upload more items"
    with sessions() as session:
        stranded = set(session.scalars(select(Item.id).where(Item.status == ItemStatus.PROCESSING)))
    second = start_worker(fast, tmp_path / "second.log")
    try:
        rows = wait_for(sessions, list(samples), timeout=90)
        assert {r.status for r in rows} == {ItemStatus.SCORED}
        # Items the dead worker held under its lease were claimed again once it ran out: by
        # the reconciler's re-queue, or by their own message if the dead worker had claimed
        # them from the database before taking it (whether the kill caught a batch
        # mid-flight depends on timing).
        assert {r.attempts for r in rows if r.id in stranded} <= {2}
    finally:
        second.stop()
        engine.dispose()
