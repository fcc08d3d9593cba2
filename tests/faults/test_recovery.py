"""Faults mid-load through real processes: every accepted item ends scored exactly once.

Each test runs `clipmod serve` and `clipmod worker` as processes against a real broker and a
real database, drives them with clients that retry 503s and connection errors (same
external_id), breaks one thing at ~40% of the load, and then asserts:

- every item the clients were told was accepted has exactly one verdict, and the database
  holds no item the clients do not know of;
- no client saw an error other than a retryable 503 or a connection error;
- recovery (all scored) within a stated bound after the fault is repaired.

Short leases and reconcile intervals keep the suite fast (LEASE_S=2, STUCK_AFTER_S=2,
SWEEP_EVERY_S=0.5); the README gives the defaults' bounds (~20 s).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli.supervise import WorkerProcess
from clipmod import keys, migrate
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item, ItemStatus, Verdict
from clipmod.settings import Settings
from tests.conftest import make_settings
from tests.e2e.conftest import start_worker
from tests.faults.conftest import PrivateRedis
from tests.faults.servers import Api, Load, PrivatePostgres, private_postgres

pytestmark = [pytest.mark.e2e]

FAST = {"lease_s": "2", "stuck_after_s": "2", "sweep_every_s": "0.5", "batch_size": "8"}
# After the fault is repaired: a lease (2 s) + the grace (2 s) + a reconcile pass, a worker's
# reconnect backoff (Celery: up to ~2 s) and the scoring itself, with room for a slow CI box.
RECOVERY_BOUND_S = 30.0


def fault_settings(tmp_path: Path, database_url: str, broker_url: str) -> Settings:
    settings = make_settings(tmp_path, database_url=database_url, broker_url=broker_url, **FAST)
    migrate.upgrade(settings)
    return settings


def kind(settings: Settings) -> str:
    return "embedded" if settings.uses_embedded_broker else "PostgreSQL + Redis"


def tenant_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return keys.create_key(session, "acme")


def assert_scored_once(
    sessions: sessionmaker[Session], load: Load, since: float, what: str
) -> float:
    """Wait for every accepted item; returns the seconds from `since` until all were scored."""
    assert load.errors == [], load.errors[:5]
    ids = set(load.accepted.values())
    assert len(load.accepted) == load.n
    deadline = since + RECOVERY_BOUND_S
    while True:
        with sessions() as session:
            pending = session.scalar(
                select(func.count(Item.id)).where(
                    Item.id.in_(ids), Item.status != ItemStatus.SCORED
                )
            )
        if not pending:
            break
        assert time.monotonic() < deadline, (
            f"{what}: {pending} of {len(ids)} accepted items not scored "
            f"{RECOVERY_BOUND_S:.0f} s after the fault was repaired"
        )
        time.sleep(0.1)
    recovered = time.monotonic() - since
    with sessions() as session:
        per_item = dict(
            session.execute(select(Verdict.item_id, func.count()).group_by(Verdict.item_id)).all()
        )
        stored = set(session.scalars(select(Item.id)))
    assert stored == ids, "the database holds items no client was told about (or lost some)"
    assert {per_item.get(i, 0) for i in ids} == {1}
    print(f"\n{what}: all {len(ids)} scored {recovered:.1f} s after repair; retries {load.retried}")
    return recovered


@pytest.fixture
def db(postgres_url: str) -> Iterator[tuple[str, sessionmaker[Session]]]:
    engine = make_engine(postgres_url)
    yield postgres_url, make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture(
    params=["production", "embedded"],
)
def stack(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Settings, sessionmaker[Session], int]]:
    """(settings, sessions, uploads) on PostgreSQL + a private Redis, or on the embedded default
    (SQLite + kombu's SQLite broker, ~35 items/s: fewer uploads)."""
    if request.param == "production":
        url = request.getfixturevalue("postgres_url")
        redis = request.getfixturevalue("private_redis")
        settings, uploads = fault_settings(tmp_path, url, redis.url), 300
    else:
        template = request.getfixturevalue("migrated_template")
        shutil.copy(template, tmp_path / "clipmod.db")
        settings, uploads = make_settings(tmp_path, **FAST), 100
    engine = make_engine(settings.database_url)
    yield settings, make_sessionmaker(engine), uploads
    engine.dispose()


def test_worker_sigkilled_mid_batch(
    db: tuple[str, sessionmaker[Session]], private_redis: PrivateRedis, tmp_path: Path
) -> None:
    url, sessions = db
    settings = fault_settings(tmp_path, url, private_redis.url)
    api = Api(settings, tmp_path / "api.log")
    api.start()
    first = start_worker(settings, tmp_path / "first.log")
    second = None
    try:
        load = Load(api.url, tenant_key(sessions), n=300).start()
        load.wait_accepted(0.4)
        first.proc.send_signal(signal.SIGKILL)
        first.stop()
        with sessions() as session:
            held = session.scalar(
                select(func.count(Item.id)).where(Item.status != ItemStatus.SCORED)
            )
        assert held, "nothing was in flight when the worker died: the test proves nothing"
        second = start_worker(settings, tmp_path / "second.log", settle=0)
        repaired = time.monotonic()
        load.join()
        assert_scored_once(sessions, load, repaired, "worker SIGKILL")
    finally:
        if second is not None:
            second.stop()
        api.stop()


def test_redis_restarted_mid_load(
    db: tuple[str, sessionmaker[Session]], redis_aof_or_not: PrivateRedis, tmp_path: Path
) -> None:
    url, sessions = db
    redis = redis_aof_or_not
    settings = fault_settings(tmp_path, url, redis.url)
    api = Api(settings, tmp_path / "api.log")
    api.start()
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        load = Load(api.url, tenant_key(sessions), n=300).start()
        load.wait_accepted(0.4)
        redis.stop()
        time.sleep(2)
        redis.start()
        repaired = time.monotonic()
        load.join()
        assert_scored_once(
            sessions, load, repaired, f"Redis restart, appendonly={redis.appendonly}"
        )
    finally:
        worker.stop()
        api.stop()


def test_api_sigkilled_mid_load(
    stack: tuple[Settings, sessionmaker[Session], int], tmp_path: Path
) -> None:
    settings, sessions, uploads = stack
    api = Api(settings, tmp_path / "api.log")
    api.start()
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        load = Load(api.url, tenant_key(sessions), n=uploads).start()
        load.wait_accepted(0.4)
        api.kill()
        time.sleep(0.5)
        api.start()  # same port: the clients' retries find it again
        repaired = time.monotonic()
        load.join()
        assert load.retried, "no client noticed the API dying: the test proves nothing"
        assert_scored_once(sessions, load, repaired, f"API SIGKILL, {kind(settings)}")
    finally:
        worker.stop()
        api.stop()


def test_duplicate_deliveries_are_harmless(
    stack: tuple[Settings, sessionmaker[Session], int], tmp_path: Path
) -> None:
    """Each upload sent by three clients at once (same external_id): extra messages."""
    settings, sessions, uploads = stack
    api = Api(settings, tmp_path / "api.log")
    api.start()
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        key = tenant_key(sessions)
        loads = [Load(api.url, key, n=uploads // 2, threads=2, pause_s=0).start() for _ in range(3)]
        for load in loads:
            load.join()
        assert loads[0].accepted == loads[1].accepted == loads[2].accepted
        started = time.monotonic()
        assert_scored_once(sessions, loads[0], started, f"duplicates, {kind(settings)}")
        with sessions() as session:
            attempts = set(session.scalars(select(Item.attempts)))
        # Nobody scored an item twice, and no innocent batch-mate spent an attempt.
        assert attempts == {1}
        log = (tmp_path / "worker.log").read_text()
        assert "Loading weights" not in log and "[queues]" not in log  # no bar, no banner
    finally:
        worker.stop()
        api.stop()


def readiness(url: str) -> tuple[int, dict[str, object]]:
    resp = requests.get(url, timeout=10)
    return resp.status_code, resp.json()


def scrape_metrics(api: Api, worker: WorkerProcess, sessions: sessionmaker[Session]) -> None:
    """Both `/metrics` answer Prometheus' text format with the numbers the README promises."""
    with transaction(sessions) as session:
        admin = keys.create_key(session, "ops", admin=True)
    assert requests.get(f"{api.url}/metrics", timeout=10).status_code == 401
    resp = requests.get(
        f"{api.url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10
    )
    assert resp.status_code == 200
    api_metrics = {f.name: f for f in text_string_to_metric_families(resp.text)}
    posts = [
        s.value
        for s in api_metrics["clipmod_http_requests"].samples
        if s.labels.get("route") == "/v1/items" and s.labels.get("status") == "202"
    ]
    assert sum(posts) > 0
    assert "clipmod_http_request_seconds" in api_metrics
    text = requests.get(f"{worker.health_url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    scored = families["clipmod_items_scored"].samples[0].value
    assert scored > 0
    stages = {s.labels["stage"] for s in families["clipmod_batch_stage_seconds"].samples}
    assert {"claim", "decode", "forward", "write"} <= stages
    for name in ("clipmod_batch_size", "clipmod_queue_depth", "clipmod_oldest_queued_age_seconds"):
        assert name in families, name


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PrivatePostgres]:
    server = private_postgres()
    if server is None:
        pytest.skip("PostgreSQL is not installed (`.ci/services install` installs it)")
    yield server
    server.remove()


def test_postgres_down_for_10_s_mid_load(
    own_postgres: PrivatePostgres, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = fault_settings(tmp_path, own_postgres.url, private_redis.url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    api = Api(settings, tmp_path / "api.log")
    api.start()
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        load = Load(api.url, tenant_key(sessions), n=300).start()
        load.wait_accepted(0.4)
        own_postgres.stop()
        down = time.monotonic()
        # Readiness is live on both sides, and tells an unauthenticated caller only what failed.
        api_ready = readiness(f"{api.url}/readyz")
        worker_ready = readiness(f"{worker.health_url}/readyz")
        assert api_ready == (503, {"status": "unavailable", "failing": ["database"]})
        assert worker_ready[0] == 503 and "database" in worker_ready[1]["failing"]
        time.sleep(max(0.0, 10 - (time.monotonic() - down)))
        own_postgres.start()
        repaired = time.monotonic()
        load.join()
        assert any(k.startswith("503 database_unavailable") for k in load.retried), load.retried
        assert_scored_once(sessions, load, repaired, "PostgreSQL down 10 s")
        assert readiness(f"{worker.health_url}/readyz")[0] == 200
        assert readiness(f"{api.url}/readyz")[0] == 200
        scrape_metrics(api, worker, sessions)
    finally:
        worker.stop()
        api.stop()
        engine.dispose()
