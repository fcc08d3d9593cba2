"""Background jobs for the dashboard: a backtest that outlasts a request, with its progress.

A backtest of 100k items takes about a second, but a bigger history or a slower disk takes
longer, and a request that hangs without a word reads as a broken page. So the work runs in a
thread of the API process under a job id, and the page polls the job and draws a progress bar.

The job's state lives in a `dashboard_jobs` row, not in the process's memory: production runs
several API replicas behind a load balancer, and a poll that lands on another replica must find
the job (it used to answer `job_not_found` there). The running process writes the progress
every `HEARTBEAT_S`; that write is also its heartbeat, so a job whose process died (a deploy,
an OOM kill) reads as failed with `job_interrupted` once its row is `STALE_S` old, instead of
"running" forever, and no longer counts against its owner's one running job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.errors import ClipmodError, NotFound
from clipmod.models import DashboardJob, JobStatus, as_utc, new_id, utcnow
from clipmod.policy.loader import PolicyError

log = logging.getLogger(__name__)

# The progress bar moves this often, and a live job's row is never older than this.
HEARTBEAT_S = 0.5
# A running row older than this belongs to a process that stopped: dozens of missed heartbeats,
# so a database hiccup or a long GIL-bound step does not declare a live job dead.
STALE_S = 30.0
# A job runs on a thread named this plus its id; its heartbeat's name adds "-heartbeat".
THREAD_PREFIX = "clipmod-job-"

Work = Callable[["Job"], dict[str, Any]]

_INTERNAL = {"code": "internal_error", "message": "the job failed; see the server log"}


def _runner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


@dataclass
class Job:
    """The running side of a job, in the process that runs it: the work reports its progress
    here (cheap, from its own thread) and the heartbeat copies it to the row."""

    id: str
    owner: int
    total: int  # units of work expected (stored items to read); 0 when unknown
    done: int = 0
    phase: str = "starting"
    finished: threading.Event = field(default_factory=threading.Event)

    def advance(self, units: int) -> None:
        """Progress callback: `units` more done (called from the job's thread)."""
        self.done += units


def _error(exc: BaseException, job_id: str) -> dict[str, Any]:
    if isinstance(exc, PolicyError):
        return exc.to_dict()["error"]  # type: ignore[no-any-return]
    if isinstance(exc, ClipmodError):
        return {"code": exc.code, "message": exc.message}
    log.error("job %s failed", job_id, exc_info=exc)
    return dict(_INTERNAL)


class Jobs:
    """Jobs of one kind: at most `per_owner` running per person, the newest `keep` kept each.

    The per-person limit is checked under a lock in this process and against the rows, so two
    replicas starting a job for the same person at the same instant may both run it; the limit
    is there to stop a second click from doubling the work, not as a security boundary.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        kind: str = "backtest",
        *,
        keep: int = 16,
        per_owner: int = 1,
        heartbeat_s: float = HEARTBEAT_S,
        stale_s: float = STALE_S,
    ):
        self.sessions = sessions
        self.kind = kind
        self.keep = keep
        self.per_owner = per_owner
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self._local: dict[str, Job] = {}  # the jobs this process is running
        self._lock = threading.Lock()

    def start(self, owner: int, total: int, work: Work) -> Job:
        job = Job(new_id(), owner, total)
        now = utcnow()
        with self._lock:
            self._insert(job, now)
            self._local[job.id] = job
        # Named, so a thread dump (and a test's teardown) can tell the job's threads apart.
        name = f"{THREAD_PREFIX}{job.id}"
        threading.Thread(target=self._run, args=(job, work), name=name, daemon=True).start()
        return job

    def _insert(self, job: Job, now: datetime) -> None:
        with transaction(self.sessions) as s:
            running = s.scalar(
                select(func.count())
                .select_from(DashboardJob)
                .where(DashboardJob.owner_id == job.owner, DashboardJob.kind == self.kind)
                .where(self._alive(now))
            )
            if (running or 0) >= self.per_owner:
                raise ClipmodError(
                    "a backtest of yours is still running: wait for it to finish",
                    code="job_running",
                    status=409,
                )
            s.add(
                DashboardJob(
                    id=job.id,
                    owner_id=job.owner,
                    kind=self.kind,
                    status=JobStatus.RUNNING,
                    phase=job.phase,
                    done=0,
                    total=job.total,
                    runner=_runner(),
                    created_at=now,
                    updated_at=now,
                )
            )
            self._prune(s, job.owner, now)

    def state(self, owner: int, job_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """The job as the page shows it; a running job is first given up to `wait_s` to end
        (a short long-poll: the page's next poll comes back with the result, not a beat late)."""
        row = self._read(owner, job_id)
        if row.status is JobStatus.RUNNING and wait_s > 0:
            local = self._local.get(job_id)
            if local is not None:
                local.finished.wait(wait_s)
            else:
                time.sleep(wait_s)  # run by another replica: its row is all we can watch
            row = self._read(owner, job_id)
        return self._body(row, self._local.get(job_id))

    def _read(self, owner: int, job_id: str) -> DashboardJob:
        with self.sessions() as s:
            row = s.get(DashboardJob, job_id)
        if row is None or row.owner_id != owner or row.kind != self.kind:
            raise NotFound(
                "this job is unknown (finished long ago, or not yours): run it again",
                code="job_not_found",
            )
        return row

    def _body(self, row: DashboardJob, local: Job | None) -> dict[str, Any]:
        now = utcnow()
        status, phase, done = row.status.value, row.phase, row.done
        error = row.error
        if row.status is JobStatus.RUNNING:
            if local is not None:  # fresher than the last heartbeat
                phase, done = local.phase, local.done
            elif as_utc(row.updated_at) < now - timedelta(seconds=self.stale_s):
                status, phase = JobStatus.FAILED.value, "interrupted"
                error = {
                    "code": "job_interrupted",
                    "message": f"the API process running this job ({row.runner}) stopped "
                    "before it finished: run it again",
                }
        end = now if status == JobStatus.RUNNING.value else as_utc(row.updated_at)
        body: dict[str, Any] = {
            "job": row.id,
            "status": status,
            "phase": phase,
            "done": done,
            "total": row.total,
            "elapsed_s": round((end - as_utc(row.created_at)).total_seconds(), 3),
        }
        if row.status is JobStatus.DONE:
            body["result"] = row.result
        if error is not None:
            body["error"] = error
        return body

    def _alive(self, now: datetime) -> Any:
        return (DashboardJob.status == JobStatus.RUNNING) & (
            DashboardJob.updated_at >= now - timedelta(seconds=self.stale_s)
        )

    def _prune(self, s: Session, owner: int, now: datetime) -> None:
        """Forget the owner's finished (or dead) jobs beyond the newest `keep`."""
        newest = (
            select(DashboardJob.id)
            .where(DashboardJob.owner_id == owner, DashboardJob.kind == self.kind)
            .order_by(DashboardJob.created_at.desc())
            .limit(self.keep)
            .scalar_subquery()
        )
        s.execute(
            delete(DashboardJob)
            .where(DashboardJob.owner_id == owner, DashboardJob.kind == self.kind)
            .where(DashboardJob.id.not_in(newest))
            .where(or_(DashboardJob.status != JobStatus.RUNNING, ~self._alive(now)))
        )

    def _run(self, job: Job, work: Work) -> None:
        name = f"{THREAD_PREFIX}{job.id}-heartbeat"
        beat = threading.Thread(target=self._heartbeat, args=(job,), name=name, daemon=True)
        beat.start()
        values: dict[str, Any]
        try:
            values = {"status": JobStatus.DONE, "result": work(job)}
        except Exception as exc:
            values = {"status": JobStatus.FAILED, "error": _error(exc, job.id)}
        try:
            self._write(job, phase="done", **values)
        except Exception:
            # Most likely a result the database would not take, or the database is down; the
            # row then reads as interrupted once its heartbeat is stale.
            log.exception("job %s: could not store its outcome", job.id)
            try:
                self._write(job, phase="done", status=JobStatus.FAILED, error=dict(_INTERNAL))
            except Exception:
                log.exception("job %s: could not store its failure either", job.id)
        finally:
            job.finished.set()
            beat.join()  # a beat already writing finishes, so the job's thread ends last
            with self._lock:
                self._local.pop(job.id, None)

    def _heartbeat(self, job: Job) -> None:
        while not job.finished.wait(self.heartbeat_s):
            try:
                self._write(job, phase=job.phase)
            except Exception as exc:  # the next beat tries again; STALE_S allows for many
                log.warning("job %s: heartbeat failed: %s", job.id, exc)

    def _write(self, job: Job, **values: Any) -> None:
        """Progress (and the outcome, when given) onto the row, only while it is running: a
        late heartbeat never overwrites a finished job."""
        with transaction(self.sessions) as s:
            s.execute(
                update(DashboardJob)
                .where(DashboardJob.id == job.id, DashboardJob.status == JobStatus.RUNNING)
                .values(done=job.done, updated_at=utcnow(), **values)
            )
