"""Real worker processes against a real broker and database, in two configurations.

- embedded: SQLite + kombu's SQLAlchemy transport on SQLite (what `clipmod up` runs);
- production: PostgreSQL + Redis, started by `.ci/services` (CLIPMOD_TEST_PG_URL and
  CLIPMOD_TEST_REDIS_URL). Without them these tests skip locally and FAIL under CI=true, so CI
  can never pass by silently skipping them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from cli.supervise import WorkerFailed, WorkerProcess, settings_env
from clipmod import keys, migrate
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item, ItemStatus
from clipmod.settings import Settings
from tests.conftest import make_settings


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    message = f"{name} is not set: start the servers with `.ci/services start` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = settings_env(settings)
    env.update(CLIPMOD_DEVICE="cpu", CLIPMOD_POLICY_REFRESH_S="0.5", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def start_worker(
    settings: Settings, log: Path, timeout: float = 120, settle: float = 0.5
) -> WorkerProcess:
    """A real `clipmod worker`, started and awaited exactly as `clipmod up` does it."""
    worker = WorkerProcess.start(env_for(settings), log=log)
    try:
        worker.wait_ready(timeout, settle=settle)
    except WorkerFailed as exc:
        worker.stop()
        pytest.fail(str(exc))
    return worker


def wait_for(sessions: sessionmaker[Session], ids: list[str], timeout: float = 60) -> list[Item]:
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            rows = list(session.scalars(select(Item).where(Item.id.in_(ids))))
            done = [r for r in rows if r.status in (ItemStatus.SCORED, ItemStatus.FAILED)]
            if len(done) == len(ids):
                return rows
        if time.monotonic() > deadline:
            pending = [r.id for r in rows if r not in done]
            pytest.fail(f"{len(pending)} of {len(ids)} items not scored in {timeout} s")
        time.sleep(0.1)


@dataclass
class Stack:
    settings: Settings
    sessions: sessionmaker[Session]
    key: str
    worker: WorkerProcess


def _stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    engine = make_engine(settings.database_url)
    try:  # disposed even when the worker fails to start, so no connection outlives the test
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            key = keys.create_key(session, "acme")
        worker = start_worker(settings, tmp_path / "worker.log")
        try:
            yield Stack(settings, sessions, key, worker)
        finally:
            worker.stop()
    finally:
        engine.dispose()


@pytest.fixture
def embedded_stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    assert settings.uses_embedded_broker and settings.database_url.startswith("sqlite")
    yield from _stack(settings, tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    admin_url = required_env("CLIPMOD_TEST_PG_URL")
    name = f"clipmod_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def either_database(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Migrated settings on SQLite, then on a fresh PostgreSQL database (CI): for code whose SQL
    differs between the two. A module using it imports `postgres_url` too."""
    overrides: dict[str, str] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    settings = make_settings(tmp_path, **overrides)
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def production_settings(tmp_path: Path, postgres_url: str) -> Settings:
    redis_url = required_env("CLIPMOD_TEST_REDIS_URL")
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    settings = make_settings(tmp_path, database_url=postgres_url, broker_url=redis_url)
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def production_stack(production_settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(production_settings, tmp_path)


Submit = Callable[..., str]
