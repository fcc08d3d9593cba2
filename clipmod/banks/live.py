"""The banks a policy matches against, resolved to stacked matrices: for workers and backtests.

Bank changes must take effect without a restart or a new policy version (adding a known-bad
image is urgent), so a worker's `LiveBanks` polls `registry.stamp` at most every `refresh_s`,
like policy activations. Versions are immutable, so a snapshot is cached per bank and a newer
version is read incrementally from it (`registry.advance`). A reference that cannot be honoured
(no such bank, another model revision, a missing pinned version) is left out with a reason: the
worker logs it, a backtest reports it, and `clipmod policy lint` calls each an error before
publishing. `resolve` is the one place that decides, so backtests match what workers match.
A worker's sets also carry the int8 prefilter (`clipmod.banks.prefilter`), built here once per
bank change: it changes how fast a batch is matched, never what matches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.banks import prefilter, registry
from clipmod.errors import ClipmodError
from clipmod.models import Bank
from clipmod.policy.banks import BankSet, BankSnapshot, stack
from clipmod.policy.schema import Policy

log = logging.getLogger(__name__)

Reader = Callable[[Session, Bank, int | None], BankSnapshot]


def resolve(
    session: Session,
    policy: Policy,
    revision: str,
    *,
    read: Reader = registry.snapshot,
    overrides: Mapping[str, BankSnapshot] | None = None,
    device: Any = None,
    prefilter_at: int | None = None,
) -> tuple[BankSet, list[str]]:
    """The policy's banks as one `BankSet`, and why any reference was left out.

    `overrides` replaces a bank's snapshot (a backtest of a bank change before making it);
    `prefilter_at` is passed to `stack` (workers: `prefilter.WORTH_FROM`).
    """
    pairs, skipped = [], []
    for ref in policy.banks:
        if overrides and ref.name in overrides:
            pairs.append((overrides[ref.name], ref.threshold))
            continue
        bank = session.scalar(select(Bank).where(Bank.name == ref.name))
        if bank is None:
            skipped.append(f"bank {ref.name!r} does not exist")
            continue
        if bank.model_revision != revision:
            skipped.append(
                f"bank {ref.name!r} holds model revision {bank.model_revision}, not {revision}"
            )
            continue
        try:
            pairs.append((read(session, bank, ref.version), ref.threshold))
        except ClipmodError as exc:
            skipped.append(exc.message)
    return stack(pairs, device, prefilter_at=prefilter_at), skipped


class LiveBanks:
    """One worker's banks, refreshed when any bank gets a new version."""

    def __init__(self, revision: str, refresh_s: float, device: Any = None):
        self.revision = revision
        self.refresh_s = refresh_s
        self.device = device
        self.prefilter_at: int | None = prefilter.WORTH_FROM  # None: float32 only (benchmarks)
        self._sets: dict[tuple[tuple[str, int | None, float], ...], BankSet] = {}
        self._newest: dict[int, BankSnapshot] = {}  # bank id -> newest snapshot read
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

    def _read(self, session: Session, bank: Bank, version: int | None) -> BankSnapshot:
        wanted = registry.resolve_version(session, bank, version)
        base = self._newest.get(bank.id)
        snap = (
            registry.advance(session, bank, base, wanted)
            if base is not None
            else registry.snapshot(session, bank, wanted)
        )
        if version is None:
            self._newest[bank.id] = snap
        return snap

    def for_policy(self, session: Session, policy: Policy) -> BankSet | None:
        """The policy's banks at their current (or pinned) versions; None if it has none."""
        if not policy.banks:
            return None
        self._maybe_refresh(session)
        key = tuple((r.name, r.version, r.threshold) for r in policy.banks)
        if key not in self._sets:
            started = time.perf_counter()
            found, skipped = resolve(
                session,
                policy,
                self.revision,
                read=self._read,
                device=self.device,
                prefilter_at=self.prefilter_at,
            )
            for reason in skipped:
                log.error("policy %s: %s: not matched", policy.name, reason)
            self._sets[key] = found
            log.info(
                "banks for %s ready in %.0f ms: %s; matched with the %s",
                policy.name,
                (time.perf_counter() - started) * 1000,
                ", ".join(f"{s.label} ({len(s)} entries)" for s in found.banks) or "none",
                "int8 prefilter" if found.prefilter is not None else "float32",
            )
        return self._sets[key]
