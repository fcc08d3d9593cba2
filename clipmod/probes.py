"""Live reachability checks for readiness endpoints: the database and the broker, with a deadline.

Readiness is computed from live state on every request (HMA's `status()`), never a flag set
once: a load balancer or orchestrator polls it to route traffic away from a replica whose
database or broker is gone, and back when they return. A check that hangs (a blackholed host)
must not hang the probe, so each runs in a small thread pool and counts as failed after
`timeout` seconds. Failures are logged here with their detail; callers publish only the name
of what failed, since readiness endpoints answer without authentication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from celery import Celery
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool  # one pool per process, made lazily: importing starts no threads
    if _pool is None:
        _pool = ThreadPoolExecutor(4, thread_name_prefix="probe")
    return _pool


def within(check: Callable[[], object], name: str, timeout: float) -> bool:
    """True when `check` returns within `timeout` seconds without raising."""
    future = _executor().submit(check)
    try:
        future.result(timeout=timeout)
    except FutureTimeout:
        log.warning("readiness: %s did not answer within %.1f s", name, timeout)
        return False
    except Exception as exc:
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        log.warning("readiness: %s unavailable: %s: %s", name, type(exc).__name__, detail)
        return False
    return True


def database(engine: Engine, timeout: float = 2.0) -> bool:
    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return within(check, "database", timeout)


def broker(app: Celery, timeout: float = 2.0) -> bool:
    def check() -> None:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)

    return within(check, "broker", timeout)
