"""Backtest a bank change on stored traffic, like a policy change: before you make it, or after.

A change is two snapshots of one bank: `before` and `after` (two existing versions, or the
newest plus entries a person is about to add or remove). Stored items are matched against both
(one product over the traffic store's image rows), which says what would newly match and what
would stop matching at the policy's threshold; then the policy backtest runs the active policy
with `before` on the baseline side and `after` on the draft side, so the action transitions
come from the very verdict rule the workers apply.

The active policy for everyone supplies the threshold (or `threshold` does, for a bank no
active policy references yet; then only matches are reported). Tenants with their own active
version are judged under the global one here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from clipmod.banks import registry
from clipmod.banks.history import match_history
from clipmod.errors import ClipmodError, InvalidInput
from clipmod.models import Bank
from clipmod.policy import backtest, versions
from clipmod.policy.banks import BankSnapshot, stack
from clipmod.policy.report import BacktestReport
from clipmod.policy.scoring import TextEncoder
from clipmod.policy.traffic import load_embeddings
from clipmod.traffic.sync import TrafficStore


@dataclass(frozen=True)
class BankBacktest:
    bank: str
    kind: str
    before: str  # bank@version, or "bank@N+1 (proposed)"
    after: str
    threshold: float
    items: int
    matched_before: int
    matched_after: int
    newly_matched: int
    stopped_matching: int
    examples: dict[str, list[dict[str, Any]]]  # {"newly_matched"|"stopped_matching": [...]}
    policy: BacktestReport | None = None  # action transitions under the active policy
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [
            f"bank {self.bank} ({self.kind}): {self.before} -> {self.after} at threshold "
            f"{self.threshold} over {self.items} stored items",
            f"  matched: {self.matched_before} -> {self.matched_after} "
            f"(+{self.newly_matched} new, -{self.stopped_matching} no longer)",
        ]
        for key, rows in self.examples.items():
            for row in rows:
                lines.append(
                    f"  {key.replace('_', ' ')}: {row['item']} (entry {row['entry']}, "
                    f"cosine {row['similarity']:.3f})"
                )
        if self.policy is not None:
            lines += ["", self.policy.render()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def proposed(
    session: Session,
    bank: Bank,
    base: BankSnapshot,
    *,
    add_items: Sequence[str] = (),
    remove_entries: Sequence[int] = (),
) -> BankSnapshot:
    """`base` with items added and entries removed, as the next version would hold them
    (new entries get ids -1, -2, …: they have none yet). Nothing is written."""
    fresh = registry.from_items(session, bank, add_items) if add_items else []
    unknown = sorted(set(remove_entries) - set(base.entry_ids.tolist()))
    if unknown:
        raise ClipmodError(
            f"bank {bank.name!r} has no entry {', '.join(map(str, unknown))} in {base.label}",
            code="bank_entry_not_found",
            status=404,
        )
    keep = ~np.isin(base.entry_ids, np.asarray(list(remove_entries), dtype=np.int64))
    added = np.array([np.asarray(e.embedding, dtype=np.float32) for e in fresh]).reshape(
        -1, bank.dim
    )
    ids = np.concatenate([base.entry_ids[keep], -np.arange(1, len(fresh) + 1)]).astype(np.int64)
    matrix = np.concatenate([base.embeddings[keep], added], axis=0).astype(np.float32)
    return BankSnapshot(bank.name, base.version + 1, bank.kind, bank.model_revision, ids, matrix)


def backtest_change(
    session: Session,
    bank: Bank,
    encoder: TextEncoder,
    *,
    before: BankSnapshot,
    after: BankSnapshot,
    after_label: str | None = None,
    threshold: float | None = None,
    store: TrafficStore | None = None,
    examples: int = 5,
) -> BankBacktest:
    if bank.model_revision != encoder.revision:
        raise registry.mismatch(bank, encoder.revision, "the model loaded here")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InvalidInput(
            f"threshold {threshold} is not a cosine: it must lie in [-1, 1]",
            code="invalid_threshold",
        )
    active = versions.resolve(session, None)
    policy = versions.load(active) if active is not None else None
    ref = next((r for r in policy.banks if r.name == bank.name), None) if policy else None
    if threshold is None and ref is None:
        raise ClipmodError(
            f"no active policy references bank {bank.name!r}: pass a threshold",
            code="bank_not_referenced",
            status=409,
        )
    if threshold is not None:
        cut = float(threshold)
    else:
        assert ref is not None  # checked above
        cut = ref.threshold
    emb = load_embeddings(session, encoder.revision, store=store)
    was, now = match_history(emb, [stack([(before, cut)]), stack([(after, cut)])])
    hit_before = was.similarity[:, 0] >= cut
    hit_after = now.similarity[:, 0] >= cut
    newly, stopped = hit_after & ~hit_before, hit_before & ~hit_after

    def sample(mask: np.ndarray, snap: BankSnapshot, scores: Any) -> list[dict[str, Any]]:
        return [
            {
                "item": emb.ids[i],
                "entry": int(snap.entry_ids[scores.entry[i, 0]]),
                "similarity": float(scores.similarity[i, 0]),
            }
            for i in np.flatnonzero(mask)[:examples].tolist()
        ]

    report = None
    if ref is not None and active is not None and policy is not None and len(emb):
        report = backtest.backtest(
            session,
            policy,
            encoder,
            draft_label=f"{active.label} with {after_label or after.label}",
            against=active,
            examples=examples,
            store=store,
            draft_banks={bank.name: after},
            baseline_banks={bank.name: before},
        )
    return BankBacktest(
        bank=bank.name,
        kind=bank.kind.value,
        before=before.label,
        after=after_label or after.label,
        threshold=cut,
        items=len(emb),
        matched_before=int(hit_before.sum()),
        matched_after=int(hit_after.sum()),
        newly_matched=int(newly.sum()),
        stopped_matching=int(stopped.sum()),
        examples={
            "newly_matched": sample(newly, after, now),
            "stopped_matching": sample(stopped, before, was),
        },
        policy=report,
        notes=[] if ref is not None else ["no active policy references this bank"],
    )


def backtest_request(
    session: Session,
    bank: Bank,
    encoder: TextEncoder,
    *,
    from_version: int | None,
    to_version: int | None,
    add_items: Sequence[str],
    remove_entries: Sequence[int],
    threshold: float | None,
    store: TrafficStore | None,
    examples: int,
) -> BankBacktest:
    """What the CLI and the API ask for: versions `from` → `to` (default: the newest and the one
    before), or `to` plus a proposed change (`add_items`, `remove_entries`) that is not made."""
    proposal = bool(add_items or remove_entries)
    to = registry.resolve_version(session, bank, to_version)
    after = registry.snapshot(session, bank, to)
    if proposal:
        after = proposed(
            session, bank, after, add_items=list(add_items), remove_entries=list(remove_entries)
        )
    start = from_version if from_version is not None else (to if proposal else max(to - 1, 0))
    return backtest_change(
        session,
        bank,
        encoder,
        before=registry.snapshot(session, bank, start),
        after=after,
        after_label=f"{after.label} (proposed)" if proposal else None,
        threshold=threshold,
        store=store,
        examples=examples,
    )
