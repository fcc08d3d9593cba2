"""The banks a worker matches: each policy's references resolved to stacked matrices.

Bank changes must take effect without a restart or a new policy version (adding a known-bad
image is urgent), so the worker polls `registry.stamp` at most every `refresh_s`, like policy
activations. Versions are immutable, so a snapshot is cached by (bank, version) and a new
version is read incrementally from the one before (`registry.advance`). A reference the worker
cannot honour (no such bank, another model revision, a missing pinned version) is logged as an
error and left out; `clipmod policy lint` reports the same conditions as errors before publishing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.banks import registry
from clipmod.errors import ClipmodError
from clipmod.models import Bank
from clipmod.policy.banks import BankSet, BankSnapshot, stack
from clipmod.policy.schema import Policy

log = logging.getLogger(__name__)


class LiveBanks:
    def __init__(self, revision: str, refresh_s: float, device: Any = None):
        self.revision = revision
        self.refresh_s = refresh_s
        self.device = device
        self._sets: dict[tuple[tuple[str, int | None, float], ...], BankSet] = {}
        self._snapshots: dict[int, BankSnapshot] = {}  # bank id -> newest snapshot read
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def _maybe_refresh(self, session: Session) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        stamp = registry.stamp(session)
        if stamp != self._stamp:
            self._stamp = stamp
            self._sets.clear()

    def for_policy(self, session: Session, policy: Policy) -> BankSet | None:
        """The policy's banks at their current (or pinned) versions; None if it has none."""
        if not policy.banks:
            return None
        self._maybe_refresh(session)
        key = tuple((r.name, r.version, r.threshold) for r in policy.banks)
        if key not in self._sets:
            started = time.perf_counter()
            pairs = []
            for ref in policy.banks:
                snap = self._snapshot(session, ref.name, ref.version, policy.name)
                if snap is not None:
                    pairs.append((snap, ref.threshold))
            self._sets[key] = stack(pairs, self.device)
            log.info(
                "banks for %s ready in %.0f ms: %s",
                policy.name,
                (time.perf_counter() - started) * 1000,
                ", ".join(f"{s.label} ({len(s)} entries)" for s, _ in pairs) or "none usable",
            )
        return self._sets[key]

    def _snapshot(
        self, session: Session, name: str, version: int | None, policy: str
    ) -> BankSnapshot | None:
        bank = session.scalar(select(Bank).where(Bank.name == name))
        if bank is None:
            log.error("policy %s references bank %r, which does not exist: skipped", policy, name)
            return None
        if bank.model_revision != self.revision:
            log.error(
                "bank %r holds model revision %s but this worker runs %s: skipped",
                name,
                bank.model_revision,
                self.revision,
            )
            return None
        try:
            wanted = registry.resolve_version(session, bank, version)
        except ClipmodError as exc:
            log.error("policy %s: %s: skipped", policy, exc.message)
            return None
        base = self._snapshots.get(bank.id)
        snap = (
            registry.advance(session, bank, base, wanted)
            if base is not None
            else registry.snapshot(session, bank, wanted)
        )
        if version is None:
            self._snapshots[bank.id] = snap
        return snap
