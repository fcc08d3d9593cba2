"""Real worker processes against a real broker and database, in two configurations.

- embedded: SQLite + kombu's SQLAlchemy transport on SQLite (what `clipmod up` runs);
- production: PostgreSQL + Redis, started by `.ci/services` (CLIPMOD_TEST_PG_URL and
  CLIPMOD_TEST_REDIS_URL). Without them these tests skip locally and FAIL under CI=true, so CI
  can never pass by silently skipping them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPMOD_")}
    env.update(
        CLIPMOD_DATA_DIR=str(settings.data_dir),
        CLIPMOD_DATABASE_URL=settings.database_url,
        CLIPMOD_BROKER_URL=settings.broker_url,
        CLIPMOD_MODEL=settings.model,
        CLIPMOD_POLICY=str(settings.policy),
        CLIPMOD_DEVICE="cpu",
        CLIPMOD_POLICY_REFRESH_S="0.5",
        CLIPMOD_STUCK_AFTER_S=str(settings.stuck_after_s),
        CLIPMOD_SWEEP_EVERY_S=str(settings.sweep_every_s),
        CLIPMOD_BATCH_SIZE=str(settings.batch_size),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    health: str
    log: Path
    log_file: IO[bytes]

    def ready(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.health}/readyz", timeout=2) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def start_worker(
    settings: Settings, log: Path, timeout: float = 120, settle: float = 0.5
) -> Worker:
    port = free_port()
    fh = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipmod.cli", "worker", "--health-port", str(port)],
        env=env_for(settings),
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    worker = Worker(proc, f"http://127.0.0.1:{port}", log, fh)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fh.close()
            pytest.fail(f"worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if worker.ready().get("status") == "ready":
                # Ready means model loaded; give the consumer a moment to attach to the queue.
                time.sleep(settle)
                return worker
        except OSError:
            pass
        time.sleep(0.2)
    worker.stop()
    pytest.fail(f"worker not ready in {timeout} s:\n{log.read_text()[-3000:]}")


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
    worker: Worker


def _stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        key = keys.create_key(session, "acme")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        yield Stack(settings, sessions, key, worker)
    finally:
        worker.stop()
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
