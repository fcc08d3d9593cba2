"""The editor's background jobs: progress while running, one at a time per person, errors kept,
and the state in the database, so another API replica answers a poll and a job whose process
died says so instead of running forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from api.dashboard.jobs import Job, Jobs
from clipmod.db import transaction
from clipmod.errors import ClipmodError, NotFound
from clipmod.models import DashboardJob, JobStatus, Role, User, utcnow
from clipmod.policy.loader import PolicyError, Problem
from clipmod.settings import Settings
from tests.conftest import join_job_threads
from tests.e2e.conftest import either_database, postgres_url  # noqa: F401

ANN, BEN = 1, 2


@pytest.fixture
def db(either_database: Settings) -> Iterator[sessionmaker[Session]]:  # noqa: F811
    """A migrated database (SQLite, or PostgreSQL in CI) with two dashboard users."""
    engine = create_engine(either_database.database_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with transaction(sessions) as s:
        for uid in (ANN, BEN):
            s.add(User(id=uid, email=f"{uid}@x.test", password_hash="-", role=Role.ADMIN))
    yield sessions
    join_job_threads()
    engine.dispose()


def finished(jobs: Jobs, owner: int, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (state := jobs.state(owner, job_id, 0.1))["status"] == "running":
        assert time.monotonic() < deadline, state
    return state


def test_progress_then_result_and_one_running_job_per_person(
    db: sessionmaker[Session],
) -> None:
    jobs = Jobs(db, heartbeat_s=0.05)
    replica = Jobs(db)  # another API process on the same database
    go = threading.Event()
    halfway = threading.Event()

    def work(job: Job) -> dict[str, Any]:
        job.phase = "reading"
        job.advance(40)
        halfway.set()
        go.wait(10)
        job.advance(60)
        return {"answer": 42}

    job = jobs.start(owner=ANN, total=100, work=work)
    assert halfway.wait(5)
    state = jobs.state(ANN, job.id)
    assert (state["status"], state["phase"], state["done"], state["total"]) == (
        "running",
        "reading",
        40,
        100,
    )
    deadline = time.monotonic() + 5  # the replica sees what the last heartbeat wrote
    while replica.state(ANN, job.id)["done"] != 40:
        assert time.monotonic() < deadline
    assert replica.state(ANN, job.id)["phase"] == "reading"
    for anywhere in (jobs, replica):
        with pytest.raises(ClipmodError, match="still running"):
            anywhere.start(owner=ANN, total=1, work=work)
    other = jobs.start(owner=BEN, total=1, work=lambda j: {})  # someone else may run theirs
    with pytest.raises(NotFound):
        jobs.state(ANN, other.id)  # but not read it
    go.set()
    for anywhere in (jobs, replica):
        state = finished(anywhere, ANN, job.id)
        assert (state["status"], state["result"], state["done"]) == ("done", {"answer": 42}, 100)
        assert state["phase"] == "done" and "error" not in state


def test_a_poll_waits_for_the_job_to_end(db: sessionmaker[Session]) -> None:
    jobs = Jobs(db)
    job = jobs.start(owner=ANN, total=0, work=lambda j: time.sleep(0.2) or {"ok": True})
    assert jobs.state(ANN, job.id, wait_s=5)["result"] == {"ok": True}
    started = time.monotonic()
    assert Jobs(db).state(ANN, job.id, wait_s=5)["status"] == "done"
    assert time.monotonic() - started < 1  # a finished job answers at once


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ClipmodError("no tenant", code="unknown_tenant"),
            {"code": "unknown_tenant", "message": "no tenant"},
        ),
        (
            PolicyError([Problem("draft", 2, 3, "name", "bad")]),
            {
                "code": "invalid_policy",
                "message": "draft:2:3 name: bad",
                "problems": [
                    {"source": "draft", "line": 2, "column": 3, "field": "name", "message": "bad"}
                ],
            },
        ),
        (
            RuntimeError("boom"),
            {"code": "internal_error", "message": "the job failed; see the server log"},
        ),
    ],
)
def test_failures_become_the_jobs_error(
    db: sessionmaker[Session], error: Exception, expected: dict[str, Any]
) -> None:
    def work(job: Job) -> dict[str, Any]:
        raise error

    jobs = Jobs(db)
    job = jobs.start(owner=ANN, total=0, work=work)
    state = finished(Jobs(db), ANN, job.id)
    assert (state["status"], state["error"]) == ("failed", expected)
    job = jobs.start(owner=ANN, total=0, work=lambda j: {})  # a failed job does not block this
    assert finished(jobs, ANN, job.id)["status"] == "done"


def test_a_result_the_database_cannot_store_fails_the_job(db: sessionmaker[Session]) -> None:
    jobs = Jobs(db)
    job = jobs.start(owner=ANN, total=0, work=lambda j: {"not json": object()})
    state = finished(jobs, ANN, job.id)
    assert (state["status"], state["error"]["code"]) == ("failed", "internal_error")


def test_a_job_whose_process_died_reads_as_interrupted(db: sessionmaker[Session]) -> None:
    """What a killed replica leaves behind: a running row nobody refreshes any more."""
    old = utcnow() - timedelta(seconds=31)
    with transaction(db) as s:
        s.add(
            DashboardJob(
                id="d" * 32,
                owner_id=ANN,
                kind="backtest",
                status=JobStatus.RUNNING,
                phase="scoring",
                done=7,
                total=10,
                runner="api-1:4242",
                created_at=old,
                updated_at=old,
            )
        )
    jobs = Jobs(db)
    state = jobs.state(ANN, "d" * 32, wait_s=0.05)
    assert (state["status"], state["phase"], state["error"]["code"]) == (
        "failed",
        "interrupted",
        "job_interrupted",
    )
    assert "api-1:4242" in state["error"]["message"]
    job = jobs.start(owner=ANN, total=0, work=lambda j: {})  # it no longer blocks a new one
    assert finished(jobs, ANN, job.id)["status"] == "done"


def test_a_live_job_is_not_declared_dead(db: sessionmaker[Session]) -> None:
    """The heartbeat keeps a long job's row fresh, so a short staleness bound still holds."""
    jobs = Jobs(db, heartbeat_s=0.05, stale_s=1.5)
    go = threading.Event()
    job = jobs.start(owner=ANN, total=0, work=lambda j: go.wait(10) and {})
    time.sleep(2.0)  # past the bound; a stall of over a second would still read as dead
    assert Jobs(db, stale_s=1.5).state(ANN, job.id)["status"] == "running"
    go.set()
    assert finished(jobs, ANN, job.id)["status"] == "done"


def test_only_the_newest_finished_jobs_are_kept(db: sessionmaker[Session]) -> None:
    jobs = Jobs(db, keep=3)
    started = []
    for _ in range(5):
        job = jobs.start(owner=ANN, total=0, work=lambda j: {})
        finished(jobs, ANN, job.id)
        started.append(job.id)
        time.sleep(0.01)  # distinct creation times
    with pytest.raises(NotFound, match="run it again"):
        jobs.state(ANN, started[0])
    assert jobs.state(ANN, started[-1])["result"] == {}
    with db() as s:
        assert s.query(DashboardJob).count() == 3
