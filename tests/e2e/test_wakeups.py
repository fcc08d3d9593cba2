"""On Redis a message wakes a worker, and the worker claims from PostgreSQL (`clipmod.queue`).

Against the real servers from `.ci/services`: the doorbell sends one message until a worker
answers it, concurrent claims skip each other's locked rows instead of waiting on them, and the
reconciler wakes a worker once for any number of stuck items; a backlog wakes every idle worker.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from celery import Celery
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod import retry
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item, ItemStatus
from clipmod.queue import (
    SCORE_QUEUE,
    answer_bell,
    doorbell,
    enqueue_scoring,
    make_celery,
    prepare_broker,
    wake_another,
)
from clipmod.settings import Settings
from tests.e2e.conftest import start_worker, wait_for
from tests.unit.test_leases import add_items, age
from workers import store, sweeper

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def broker(production_settings: Settings) -> Celery:
    app = make_celery(production_settings)
    prepare_broker(app)
    return app


@pytest.fixture
def sessions(production_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(production_settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def messages(app: Celery) -> int:
    """Messages waiting in the scoring queue (a Redis list; no key at all when empty)."""
    client = doorbell(app)
    assert client is not None
    return int(client.llen(SCORE_QUEUE))


def test_the_doorbell_sends_one_message_until_a_worker_answers_it(broker: Celery) -> None:
    enqueue_scoring(broker, ["a"])
    enqueue_scoring(broker, ["b"])
    enqueue_scoring(broker, ["c"])
    assert messages(broker) == 1
    answer_bell(broker)  # a worker, right before its claim
    enqueue_scoring(broker, ["d"])
    enqueue_scoring(broker, ["e"])
    assert messages(broker) == 2
    enqueue_scoring(broker, ["f"], force=True)  # the reconciler and hand-backs always send
    assert messages(broker) == 3


def test_a_full_claim_rings_for_another_worker_unless_the_bell_rings(broker: Celery) -> None:
    answer_bell(broker)  # the claiming worker's own delete, right before its claim
    assert wake_another(broker) is True and messages(broker) == 1
    assert wake_another(broker) is False and messages(broker) == 1  # one is on its way
    enqueue_scoring(broker, ["a"])
    assert messages(broker) == 1  # an upload finds the bell set: that message will claim it


def test_concurrent_claims_skip_locked_rows_instead_of_waiting(
    sessions: sessionmaker[Session],
) -> None:
    ids = add_items(sessions, 6)
    with transaction(sessions) as first:
        mine = store.claim(first, [], "a", 30, fill=3)
        # `first` still holds its row locks. Without SKIP LOCKED the second claim would wait on
        # them (here: fail at the timeout) and then find those rows taken.
        with transaction(sessions) as second:
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            theirs = store.claim(second, [], "b", 30, fill=3)
    assert [c.id for c in mine] == ids[:3]
    assert [c.id for c in theirs] == ids[3:]


def test_the_reconciler_wakes_a_worker_once_for_any_number_of_stuck_items(
    sessions: sessionmaker[Session], broker: Celery
) -> None:
    ids = add_items(sessions, 5)
    assert sweeper.reconcile(sessions, broker, stuck_after_s=60).missing == []  # too young
    assert messages(broker) == 0
    age(sessions, ids, 120)
    done = sweeper.reconcile(sessions, broker, stuck_after_s=60)
    assert len(done.missing) == 1 and messages(broker) == 1


def scored_by(health_url: str) -> int:
    text = requests.get(f"{health_url}/metrics", timeout=10).text
    found = re.search(r"^clipmod_items_scored_total (\S+)$", text, re.MULTILINE)
    assert found, text[:2000]
    return int(float(found.group(1)))


def test_a_backlog_wakes_every_idle_worker(
    production_settings: Settings,
    sessions: sessionmaker[Session],
    broker: Celery,
    tmp_path: Path,
) -> None:
    """Workers back after an outage find a backlog and no new uploads: one wake-up reaches one
    of them. Its full claims ring the bell (`clipmod.queue.wake_another`), so the idle one joins
    at once. Without that it joined only when the first one's task budget ran out, or at the
    reconciler's next wake-up; both are set far beyond this test here, so only the ring can
    bring the second worker in."""
    settings = dataclasses.replace(production_settings, score_budget_s=60.0, stuck_after_s=600.0)
    workers = [start_worker(settings, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        ids = add_items(sessions, 50 * settings.batch_size)
        enqueue_scoring(broker, [], force=True)  # the one wake-up the burst left behind
        wait_for(sessions, ids)
        scored = [scored_by(w.health_url) for w in workers]
        assert sum(scored) == len(ids) and min(scored) > 0, scored
    finally:
        for w in workers:
            w.stop()


def test_retried_failures_are_queued_once_and_wake_one_worker(
    sessions: sessionmaker[Session], broker: Celery
) -> None:
    ids = add_items(sessions, 4)
    codes = ["url_timeout", "url_timeout", "scoring_error", "corrupt_image"]
    with transaction(sessions) as session:
        for item_id, code in zip(ids, codes, strict=True):
            session.execute(
                update(Item)
                .where(Item.id == item_id)
                .values(status=ItemStatus.FAILED, error_code=code, attempts=3)
            )
    transient = retry.FailedFilter(codes=retry.TRANSIENT_CODES)
    with transaction(sessions) as session:
        assert retry.by_code(session, retry.FailedFilter()) == {
            "url_timeout": 2,
            "corrupt_image": 1,
            "scoring_error": 1,
        }
        again = retry.requeue(session, transient)
        assert sorted(again) == sorted(ids[:3])
        assert retry.requeue(session, transient) == []  # each failure is queued once
    assert retry.wake(broker, again) and messages(broker) == 1
    with sessions() as session:
        rows = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
    assert [rows[i].status for i in ids] == [ItemStatus.QUEUED] * 3 + [ItemStatus.FAILED]
    assert {(rows[i].attempts, rows[i].error_code) for i in ids[:3]} == {(0, None)}
