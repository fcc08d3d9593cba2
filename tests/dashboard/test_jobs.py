"""The editor's background jobs: progress while running, one at a time per person, errors kept."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from api.dashboard.jobs import Job, Jobs
from clipmod.errors import ClipmodError, NotFound
from clipmod.policy.loader import PolicyError, Problem


def test_progress_then_result_and_one_running_job_per_person() -> None:
    jobs = Jobs()
    go = threading.Event()
    halfway = threading.Event()

    def work(job: Job) -> dict[str, Any]:
        job.phase = "reading"
        job.advance(40)
        halfway.set()
        go.wait(5)
        job.advance(60)
        return {"answer": 42}

    job = jobs.start(owner=1, total=100, work=work)
    assert halfway.wait(5)
    state = jobs.get(1, job.id).state()
    assert (state["status"], state["phase"], state["done"], state["total"]) == (
        "running",
        "reading",
        40,
        100,
    )
    with pytest.raises(ClipmodError, match="still running"):
        jobs.start(owner=1, total=1, work=work)
    other = jobs.start(owner=2, total=1, work=lambda j: {})  # someone else may run theirs
    with pytest.raises(NotFound):
        jobs.get(1, other.id)  # but not read it
    go.set()
    assert job.finished.wait(5)
    assert job.state()["status"] == "done" and job.state()["result"] == {"answer": 42}


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
def test_failures_become_the_jobs_error(error: Exception, expected: dict[str, Any]) -> None:
    def work(job: Job) -> dict[str, Any]:
        raise error

    job = Jobs().start(owner=1, total=0, work=work)
    assert job.finished.wait(5)
    assert (job.state()["status"], job.state()["error"]) == ("failed", expected)


def test_only_the_newest_finished_jobs_are_kept() -> None:
    jobs = Jobs(keep=3)
    started = []
    for _ in range(5):
        job = jobs.start(owner=1, total=0, work=lambda j: {})
        assert job.finished.wait(5)
        started.append(job.id)
    with pytest.raises(NotFound, match="run it again"):
        jobs.get(1, started[0])
    assert jobs.get(1, started[-1]).result == {}
