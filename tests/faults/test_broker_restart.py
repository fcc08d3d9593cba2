"""A broker restart must not leave partial batches unflushed (celery-batches' dead timer)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.settings import Settings
from tests.e2e.conftest import start_worker, wait_for
from tests.e2e.scenarios import api_client
from tests.faults.conftest import PrivateRedis

pytestmark = pytest.mark.e2e


def _upload(settings: Settings, key: str, n: int, start: int) -> list[str]:
    with api_client(settings) as client:
        ids = []
        for i in range(start, start + n):
            resp = client.post(
                "/v1/items",
                json={"text": f"a harmless caption number {i}"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert resp.status_code == 202, resp.get_json()
            ids.append(resp.get_json()["id"])
        return ids


def test_partial_batch_flushes_after_broker_restart(
    settings: Settings, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    # A long flush interval keeps the batch timer running across the outage: the case where
    # Celery's reconnect wiped the timer out from under celery-batches.
    settings = Settings(
        **{**vars(settings), "broker_url": private_redis.url, "batch_wait_ms": 2000}
    )
    engine = make_engine(settings.database_url)
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    with transaction(sessions) as session:
        key = keys.create_key(session, "acme")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        before = _upload(settings, key, 1, 0)  # buffered; its flush timer is now running
        private_redis.stop()
        time.sleep(1.0)
        private_redis.start()
        time.sleep(2.0)  # the worker reconnects (Celery retries every ~1-2 s)
        after = _upload(settings, key, 2, 1)  # a partial batch on the new connection
        wait_for(sessions, before + after, timeout=30)
    finally:
        worker.stop()
        engine.dispose()
