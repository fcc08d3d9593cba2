"""Background jobs for the dashboard: a backtest that outlasts a request, with its progress.

A backtest of 100k items takes about a second, but a bigger history or a slower disk takes
longer, and a request that hangs without a word reads as a broken page. So the work runs in a
thread of the API process under a job id; the page polls the job and draws a progress bar.

Jobs live in the memory of the process that started them (a few, for minutes): a deployment
with several API replicas needs sticky sessions for the editor, or the poll may land on a
replica that never heard of the job (it then says so: `job_not_found`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clipmod.errors import ClipmodError, NotFound
from clipmod.policy.loader import PolicyError

log = logging.getLogger(__name__)

Work = Callable[["Job"], dict[str, Any]]


@dataclass
class Job:
    id: str
    owner: int
    total: int  # units of work expected (stored items to read); 0 when unknown
    done: int = 0
    phase: str = "starting"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)

    def advance(self, units: int) -> None:
        """Progress callback: `units` more done (called from the worker thread)."""
        self.done += units

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job": self.id,
            "status": "done" if self.result is not None else "failed" if self.error else "running",
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "elapsed_s": round(time.monotonic() - self.started, 3),
        }
        if self.result is not None:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        return body


class Jobs:
    """The jobs of one process: at most `per_owner` running per person, the newest `keep` kept."""

    def __init__(self, keep: int = 32, per_owner: int = 1):
        self.keep = keep
        self.per_owner = per_owner
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, owner: int, total: int, work: Work) -> Job:
        with self._lock:
            running = [
                j for j in self._jobs.values() if j.owner == owner and not j.finished.is_set()
            ]
            if len(running) >= self.per_owner:
                raise ClipmodError(
                    "a backtest of yours is still running: wait for it to finish",
                    code="job_running",
                    status=409,
                )
            job = Job(uuid.uuid4().hex, owner, total)
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs.values()))
                if not oldest.finished.is_set():
                    break
                self._jobs.popitem(last=False)
        threading.Thread(target=self._run, args=(job, work), daemon=True).start()
        return job

    def get(self, owner: int, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise NotFound(
                "this job is unknown here (finished long ago, or started by another API "
                "process): run it again",
                code="job_not_found",
            )
        return job

    @staticmethod
    def _run(job: Job, work: Work) -> None:
        try:
            job.result = work(job)
        except PolicyError as exc:
            job.error = exc.to_dict()["error"]
        except ClipmodError as exc:
            job.error = {"code": exc.code, "message": exc.message}
        except Exception:
            log.exception("job %s failed", job.id)
            job.error = {"code": "internal_error", "message": "the job failed; see the server log"}
        finally:
            job.phase = "done"
            job.finished.set()
