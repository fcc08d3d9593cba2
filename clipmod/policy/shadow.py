"""Shadow report: how a shadow version's verdicts differ from the real ones on live traffic.

A backtest answers "what would this have done to past traffic"; shadow mode answers the same on
traffic as it arrives, through the real worker path (decoding, windows, the model), before the
version is made active. The worker writes a `ShadowVerdict` beside each real `Verdict`
(`workers.pipeline`); this module only compares the two rows per item.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.models import PolicyVersion, ShadowVerdict, Verdict


@dataclass
class CategoryDiff:
    id: str
    compared: int = 0
    disagreements: int = 0
    transitions: dict[str, int] = field(default_factory=dict)  # "allow->review": count
    mean_score_delta: float = 0.0  # shadow minus real


@dataclass
class VersionDiff:
    """One shadow version against whatever real verdicts the same items got."""

    shadow: str
    real: dict[str, int]  # label of the real verdicts' version -> items
    compared: int = 0
    agreed: int = 0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    categories: list[CategoryDiff] = field(default_factory=list)

    @property
    def disagreed(self) -> int:
        return self.compared - self.agreed


@dataclass(frozen=True)
class ShadowReport:
    versions: list[VersionDiff]
    since: str | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for v, d in zip(self.versions, out["versions"], strict=True):
            d["disagreed"] = v.disagreed
        return out

    def render(self) -> str:
        if not self.versions:
            return "no shadow verdicts yet: publish with --shadow and let traffic arrive"
        lines = []
        for v in self.versions:
            real = ", ".join(f"{k} ({n})" for k, n in v.real.items())
            lines += [
                f"shadow {v.shadow} vs real {real}: {v.compared} items, "
                f"{v.disagreed} disagree ({100 * v.disagreed / max(v.compared, 1):.1f}%)",
            ]
            for t in v.transitions:
                lines.append(
                    f"  {t['from']}->{t['to']}: {t['count']}  e.g. {', '.join(t['examples'])}"
                )
            for c in v.categories:
                moves = ", ".join(f"{k} {n}" for k, n in c.transitions.items()) or "-"
                lines.append(
                    f"  {c.id:<20} {c.disagreements:>6} differ  mean Δscore "
                    f"{c.mean_score_delta:+.4f}  {moves}"
                )
            lines.append("")
        return "\n".join(lines).rstrip()


def shadow_report(
    session: Session,
    *,
    version: PolicyVersion | None = None,
    since: datetime | None = None,
    examples: int = 5,
) -> ShadowReport:
    """Compare every shadow verdict (of `version`, or all) with its item's real verdict."""
    stmt = (
        select(
            ShadowVerdict.item_id,
            ShadowVerdict.policy_version_id,
            ShadowVerdict.action,
            ShadowVerdict.categories,
            Verdict.policy_version_id,
            Verdict.action,
            Verdict.categories,
        )
        .join(Verdict, Verdict.item_id == ShadowVerdict.item_id)
        .order_by(ShadowVerdict.policy_version_id, ShadowVerdict.id)
    )
    if version is not None:
        stmt = stmt.where(ShadowVerdict.policy_version_id == version.id)
    if since is not None:
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
        stmt = stmt.where(ShadowVerdict.scored_at >= since)
    rows = session.execute(stmt).all()
    ids = {r[1] for r in rows} | {r[4] for r in rows}
    labels = {
        v.id: v.label
        for v in session.scalars(select(PolicyVersion).where(PolicyVersion.id.in_(ids)))
    }
    by_version: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_version[row[1]].append(row)
    return ShadowReport(
        versions=[_diff(labels[vid], group, labels, examples) for vid, group in by_version.items()],
        since=since.isoformat() if since else None,
    )


def _diff(shadow: str, rows: list[Any], labels: dict[int, str], examples: int) -> VersionDiff:
    real = Counter(labels[r[4]] for r in rows)
    diff = VersionDiff(shadow=shadow, real=dict(real), compared=len(rows))
    moves: dict[tuple[str, str], list[str]] = defaultdict(list)
    cats: dict[str, CategoryDiff] = {}
    deltas: dict[str, float] = defaultdict(float)
    for item_id, _, s_action, s_cats, _, r_action, r_cats in rows:
        r_action = str(r_action)
        if s_action == r_action:
            diff.agreed += 1
        else:
            moves[(r_action, s_action)].append(item_id)
        real_by_id = {c["id"]: c for c in r_cats}
        for c in s_cats:
            r = real_by_id.get(c["id"])
            if r is None:
                continue  # a category the real version does not have
            d = cats.setdefault(c["id"], CategoryDiff(c["id"]))
            d.compared += 1
            deltas[c["id"]] += float(c["score"]) - float(r["score"])
            if c["action"] != r["action"]:
                d.disagreements += 1
                key = f"{r['action']}->{c['action']}"
                d.transitions[key] = d.transitions.get(key, 0) + 1
    for cid, d in cats.items():
        d.mean_score_delta = round(deltas[cid] / max(d.compared, 1), 6)
    diff.transitions = [
        {"from": a, "to": b, "count": len(items), "examples": items[:examples]}
        for (a, b), items in sorted(moves.items(), key=lambda kv: -len(kv[1]))
    ]
    diff.categories = list(cats.values())
    return diff
