"""Verifying a platform's signed webhook: the secret check, the replay window, replay memory.

A signature is accepted once. Its digest is inserted into `seen_signatures` in a transaction
of its own, committed before the upload is processed: a primary-key collision means another
request (on any API replica: they share the database) already used it. Rows older than twice
the window can never match again (their timestamps are refused first), so each call deletes
them; the table stays the size of one window of traffic.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clipmod import signing, tenants
from clipmod.db import transaction
from clipmod.models import SecretPurpose, SeenSignature, Tenant, utcnow
from clipmod.secretbox import SecretBox


def verify(
    sessions: sessionmaker[Session],
    box: SecretBox,
    tenant_name: str,
    header: str | None,
    body: bytes,
    tolerance_s: float,
    now: float | None = None,
) -> Tenant:
    """The tenant whose active webhook secret signed `body`, or a `SignatureError` (401).

    An unknown tenant gets the same answer as a bad signature, so the endpoint does not tell
    strangers which tenant names exist.
    """
    now = time.time() if now is None else now
    with sessions() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
        secrets = (
            tenants.active_secrets(session, box, tenant.id, SecretPurpose.WEBHOOK)
            if tenant is not None
            else []
        )
    if tenant is None or not secrets:
        # Still parse and time-check the header, so the answer's code matches what a known
        # tenant with a wrong secret would get.
        signing.verify(header, body, [signing.new_secret()], now, tolerance_s)
        raise signing.SignatureError("no signature matches an active signing secret")
    matched = signing.verify(header, body, secrets, now, tolerance_s)
    _remember(sessions, tenant.id, matched, tolerance_s)
    return tenant


def _remember(
    sessions: sessionmaker[Session], tenant_id: int, signature: str, tolerance_s: float
) -> None:
    digest = hashlib.sha256(f"{tenant_id}:{signature}".encode()).hexdigest()
    try:
        with transaction(sessions) as session:
            cutoff = utcnow() - timedelta(seconds=2 * tolerance_s)
            session.execute(delete(SeenSignature).where(SeenSignature.seen_at < cutoff))
            session.add(SeenSignature(digest=digest))
    except IntegrityError:
        raise signing.SignatureError(
            "this signature was already used; sign every request anew",
            code="signature_replayed",
        ) from None
