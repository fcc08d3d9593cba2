"""What a backtest found, as data (`to_dict`, for the API) and as text (`render`, for the CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from clipmod.actions import Action

I8 = npt.NDArray[np.int8]


@dataclass(frozen=True)
class Transition:
    before: str
    after: str
    count: int
    examples: list[str]


@dataclass(frozen=True)
class CategoryReport:
    """Per side (draft, baseline): `flagged` (review or above), `rate`, and tp/fp/fn,
    precision and recall over the judged items; None where that side has no such category."""

    id: str
    labelled: int
    draft: dict[str, Any] | None
    baseline: dict[str, Any] | None


@dataclass(frozen=True)
class BacktestReport:
    draft: str
    baselines: dict[str, int]  # version label -> items it applies to
    model_revision: str
    since: str | None
    items: int
    actions: dict[str, dict[str, int]]  # {"draft": {...}, "baseline": {...}}
    categories: list[CategoryReport]
    transitions: list[Transition]
    # {"draft"|"baseline": {"bank@version": items whose verdict that bank decided}}
    bank_matches: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # bank references that could not be matched
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """The human summary `clipmod policy backtest` prints."""
        base = ", ".join(f"{k} ({v} items)" for k, v in self.baselines.items()) or "none"
        lines = [
            f"backtest of {self.draft} against {base}",
            f"{self.items} stored items (model revision {self.model_revision}"
            + (f", since {self.since}" if self.since else "")
            + f") in {self.elapsed_s:.2f} s",
            "",
            f"{'category':<20} {'active':>9} {'draft':>9} {'labelled':>8}  draft P/R",
        ]
        for c in self.categories:
            d, b = c.draft or {}, c.baseline or {}
            pr = "-" if d.get("precision") is None else f"{d['precision']:.2f}/{d['recall']:.2f}"
            lines.append(
                f"{c.id:<20} {_pct(b.get('rate')):>9} {_pct(d.get('rate')):>9} "
                f"{c.labelled:>8}  {pr}"
            )
        lines += ["", "actions (active -> draft):"]
        for a in Action:
            lines.append(
                f"  {a:<6} {self.actions['baseline'].get(a, 0):>8} -> {self.actions['draft'][a]}"
            )
        for t in self.transitions:
            lines.append(f"  {t.before}->{t.after}: {t.count}  e.g. {', '.join(t.examples)}")
        for side, hits in self.bank_matches.items():
            if hits:
                per = ", ".join(f"{label} {count}" for label, count in sorted(hits.items()))
                lines.append(f"bank matches ({side}): {per}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}%"


def counts(action: I8) -> dict[str, int]:
    """How many items got each action, every action present (zeros included)."""
    per = np.bincount(action, minlength=len(Action))
    return {a.value: int(per[a.severity]) for a in Action}


def transitions(before: I8, after: I8, ids: Sequence[str], examples: int) -> list[Transition]:
    """Counts of items whose action changed (allow→review, review→block, …) with example ids."""
    n = len(Action)
    code = before.astype(np.int64) * n + after
    per = np.bincount(code, minlength=n * n)
    out = []
    for k in np.flatnonzero(per):
        b, a = divmod(int(k), n)
        if a == b:
            continue
        sample = np.flatnonzero(code == k)[:examples]
        out.append(Transition(Action.of(b), Action.of(a), int(per[k]), [ids[i] for i in sample]))
    return sorted(out, key=lambda t: -t.count)
