"""Delivering callbacks: dispatch, one attempt, backoff with jitter, dead letters, redelivery.

The schedule lives in the `deliveries` table. A dispatcher (`workers.delivery`, any number of
them) claims due rows with a conditional UPDATE that sets a fresh lock token and a lease, and
sends `(id, token)` on the delivery queue; the task claims the row again under that token
before it POSTs, so a duplicated message or a second dispatcher never sends a callback twice,
and a message lost with its worker is re-dispatched when the lease runs out. Retries wait
`base · 2^(n-1)` seconds (capped), of which a random half is jitter, so a receiver that comes
back is not hit by every retry at once; after `retry_for_s` (24 h by default) the delivery is
dead until someone asks to redeliver it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod import netguard, signing, tenants
from clipmod.db import transaction
from clipmod.errors import ClipmodError, NotFound
from clipmod.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    SecretPurpose,
    Tenant,
    as_utc,
    new_id,
    utcnow,
)
from clipmod.secretbox import SecretBox
from clipmod.settings import Settings
from clipmod.views import iso

USER_AGENT = "clipmod-callbacks/1"
MAX_RESPONSE_BYTES = 4096  # read and dropped: we only want the status
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class DeliveryRules:
    policy: netguard.AddressPolicy
    timeouts: netguard.Timeouts
    backoff_s: float
    backoff_max_s: float
    retry_for_s: float
    lease_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryRules:
        t = settings.delivery_timeout_s
        return cls(
            policy=netguard.AddressPolicy.parse(settings.fetch_allow),
            timeouts=netguard.Timeouts(min(settings.fetch_connect_timeout_s, t), t, t),
            backoff_s=settings.delivery_backoff_s,
            backoff_max_s=settings.delivery_backoff_max_s,
            retry_for_s=settings.delivery_retry_for_s,
            # Longer than one attempt can take, so a live attempt is never taken over.
            lease_s=max(60.0, 3 * t),
        )

    def delay(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2.0 ** max(attempts - 1, 0))
        return ceiling / 2 + rng() * ceiling / 2


def _unlocked(now: datetime) -> Any:
    return or_(Delivery.locked_until.is_(None), Delivery.locked_until < now)


def dispatch_due(
    sessions: sessionmaker[Session], lease_s: float, limit: int = 100
) -> list[tuple[str, str]]:
    """Claim due deliveries; returns `(id, token)` pairs for the caller to send as tasks."""
    now = utcnow()
    claimed = []
    with transaction(sessions) as session:
        due = session.scalars(
            select(Delivery.id)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= now,
                _unlocked(now),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
        ).all()
        for delivery_id in due:
            token = new_id()
            moved = session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.status == DeliveryStatus.PENDING,
                    _unlocked(now),
                )
                .values(lock_token=token, locked_until=now + timedelta(seconds=lease_s))
            )
            if moved.rowcount:  # type: ignore[attr-defined]
                claimed.append((delivery_id, token))
    return claimed


@dataclass(frozen=True)
class _Job:
    url: str
    body: bytes
    secrets: list[str]
    token: str


def _claim(
    sessions: sessionmaker[Session], box: SecretBox, delivery_id: str, token: str, lease_s: float
) -> _Job | None:
    """Trade the dispatch token for a private one; only one holder of a message gets it."""
    mine = new_id()
    with transaction(sessions) as session:
        moved = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.lock_token == token,
                Delivery.status == DeliveryStatus.PENDING,
            )
            .values(lock_token=mine, locked_until=utcnow() + timedelta(seconds=lease_s))
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            return None
        row = session.get(Delivery, delivery_id)
        assert row is not None
        secrets = tenants.active_secrets(session, box, row.tenant_id, SecretPurpose.CALLBACK)
        body = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
        return _Job(row.url, body, secrets, mine)


def _post(job: _Job, delivery_id: str, rules: DeliveryRules) -> tuple[int | None, str | None]:
    if not job.secrets:
        return None, "the tenant has no active callback signing secret"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.DELIVERY_HEADER: delivery_id,
        signing.SIGNATURE_HEADER: signing.header(job.secrets, int(time.time()), job.body),
    }
    try:
        with netguard.request(
            job.url,
            policy=rules.policy,
            timeouts=rules.timeouts,
            method="POST",
            body=job.body,
            headers=headers,
        ) as resp:
            resp.read(MAX_RESPONSE_BYTES)
            status = resp.status
    except ClipmodError as exc:
        return None, f"{exc.code}: {exc.message}"[:MAX_ERROR_CHARS]
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"


def attempt(
    sessions: sessionmaker[Session],
    box: SecretBox,
    rules: DeliveryRules,
    delivery_id: str,
    token: str,
    rng: Callable[[], float] = random.random,
) -> DeliveryStatus | None:
    """One try; returns the delivery's new status, or None when it was not ours to try."""
    job = _claim(sessions, box, delivery_id, token, rules.lease_s)
    if job is None:
        return None
    started = time.monotonic()
    code, error = _post(job, delivery_id, rules)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    with transaction(sessions) as session:
        row = session.get(Delivery, delivery_id)
        if row is None or row.lock_token != job.token:
            return None
        now = utcnow()
        row.attempts += 1
        session.add(
            DeliveryAttempt(
                delivery_id=delivery_id,
                number=row.attempts,
                attempted_at=now,
                status_code=code,
                error=error,
                duration_ms=elapsed_ms,
            )
        )
        row.last_status_code, row.last_error = code, error
        row.lock_token = row.locked_until = None
        if error is None:
            row.status, row.delivered_at = DeliveryStatus.SUCCEEDED, now
        else:
            retry_at = now + timedelta(seconds=rules.delay(row.attempts, rng))
            give_up = as_utc(row.window_started_at) + timedelta(seconds=rules.retry_for_s)
            if retry_at > give_up:
                row.status = DeliveryStatus.DEAD
            else:
                row.next_attempt_at = retry_at
        return row.status


def find(session: Session, tenant_id: int, delivery_id: str) -> Delivery:
    row = session.get(Delivery, delivery_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
    return row


def redeliver(session: Session, tenant_id: int, delivery_id: str) -> Delivery:
    """Send a finished (dead or delivered) callback again, to the tenant's current URL, with a
    fresh retry window; its attempts keep counting in the same log."""
    row = find(session, tenant_id, delivery_id)
    if row.status == DeliveryStatus.PENDING:
        raise ClipmodError(
            f"delivery {delivery_id} is still being retried", code="delivery_pending", status=409
        )
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or not tenant.callback_url:
        raise ClipmodError(
            "the tenant has no callback URL; set one first", code="no_callback_url", status=409
        )
    now = utcnow()
    row.url = tenant.callback_url
    row.status = DeliveryStatus.PENDING
    row.next_attempt_at = row.window_started_at = now
    row.lock_token = row.locked_until = None
    session.flush()
    return row


def attempts_of(session: Session, delivery_id: str) -> list[DeliveryAttempt]:
    query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
    return list(session.scalars(query.order_by(DeliveryAttempt.number)))


def delivery_json(row: Delivery, attempts: list[DeliveryAttempt] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "event": row.event,
        "item_id": row.item_id,
        "url": row.url,
        "status": str(row.status),
        "attempts": row.attempts,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at)
        if row.status == DeliveryStatus.PENDING
        else None,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at) if row.delivered_at else None,
    }
    if attempts is not None:
        body["attempt_log"] = [
            {
                "number": a.number,
                "attempted_at": iso(a.attempted_at),
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
            }
            for a in attempts
        ]
    return body
