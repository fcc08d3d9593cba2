"""The worker's view of policies: the active (and shadow) version per tenant, and its prompts.

Kept in memory per worker process; the claim, the verdicts and the heartbeat all read it, from
their own threads (see `workers.overlap`).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session

from clipmod.models import ActivationMode, PolicyVersion
from clipmod.policy import scoring, versions
from clipmod.runtime import ClipRuntime

log = logging.getLogger(__name__)


class PolicyCache:
    """Active versions per tenant and their prompt banks, refreshed when activations change.

    The database is asked for a cheap activation stamp at most every `refresh_s`; only when it
    moved are tenants re-resolved. Banks are keyed by version id, so prompt embeddings are
    computed once per version per worker, and an item is always scored under one version.
    """

    def __init__(self, runtime: ClipRuntime, refresh_s: float):
        self.runtime = runtime
        self.refresh_s = refresh_s
        self._banks: dict[int, scoring.PromptBank] = {}
        self._resolved: dict[tuple[int, ActivationMode], int | None] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.refreshed_at: float | None = None  # monotonic time of the last successful check

    def refresh(self, session: Session) -> None:
        """Check activations now if due; the worker's heartbeat calls this while idle too."""
        self._maybe_refresh(session)

    def _maybe_refresh(self, session: Session) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        stamp = versions.activation_stamp(session)
        self.refreshed_at = now
        if stamp != self._stamp:
            if self._stamp is not None:
                log.info("policy activations changed; re-resolving")
            self._stamp = stamp
            self._resolved.clear()

    def version_for(self, session: Session, tenant_id: int, mode: ActivationMode) -> int | None:
        self._maybe_refresh(session)
        key = (tenant_id, mode)
        if key in self._resolved:
            return self._resolved[key]
        # Returned from the local: the heartbeat thread may clear the cache meanwhile.
        row = versions.resolve(session, tenant_id, mode)
        self._resolved[key] = version_id = row.id if row else None
        return version_id

    def bank(self, session: Session, version_id: int) -> scoring.PromptBank:
        if version_id not in self._banks:
            row = session.get(PolicyVersion, version_id)
            assert row is not None
            policy = versions.load(row)
            started = time.perf_counter()
            self._banks[version_id] = scoring.build_bank(
                policy, self.runtime.encode_texts, self.runtime.logit_scale
            )
            log.info(
                "prompt embeddings for %s ready in %.0f ms",
                row.label,
                (time.perf_counter() - started) * 1000,
            )
        return self._banks[version_id]
