"""Dashboard jobs: a policy backtest that outlasts the request that started it.

The row, not the process that runs the job, is what a poll reads, so any API replica can
answer it: an editor behind a load balancer needs no sticky sessions. The process running the
job refreshes `updated_at` while it works (its heartbeat); a running row whose heartbeat stopped
belongs to a process that died, and reads as failed instead of running forever.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from clipmod.models.base import Base, Timestamp, enum_by_value, utcnow


class JobStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class DashboardJob(Base):
    __tablename__ = "dashboard_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(enum_by_value(JobStatus))
    phase: Mapped[str] = mapped_column(String(64))
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # host:pid of the API process running it: where to look in the logs when it failed.
    runner: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
