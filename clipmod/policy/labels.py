"""Moderators' decisions as labels: the ground truth that suggestions and backtests measure.

A category missing from a decision is unknown, not "no": moderators label what they looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.models import Decision
from clipmod.traffic.ids import ItemIds

I8 = npt.NDArray[np.int8]


def load_labels(session: Session, ids: Sequence[str], category_ids: list[str]) -> I8:
    """Moderator labels as an (n, C) matrix: 1 yes, 0 no, -1 not judged.

    A category missing from a decision is unknown, not "no": moderators label what they looked
    at. Decisions apply oldest first, so a later decision overrides an earlier one per category.
    """
    labels = np.full((len(ids), len(category_ids)), -1, dtype=np.int8)
    rows = session.execute(
        select(Decision.item_id, Decision.labels).order_by(Decision.decided_at, Decision.id)
    ).all()
    if not rows or not ids:
        return labels
    # Decisions are few; items may be millions: look the decided ids up, never index them all.
    where = ItemIds.of(ids).positions([item_id for item_id, _ in rows]).tolist()
    column = {cid: j for j, cid in enumerate(category_ids)}
    for i, (_, judged) in zip(where, rows, strict=True):
        for cid, value in (judged or {}).items() if i >= 0 else ():
            j = column.get(cid)
            if j is not None:
                labels[i, j] = 1 if value else 0
    return labels


def judged(
    flagged: npt.NDArray[np.bool_],
    labels: I8,
    present: npt.NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    """Flag rate over the items a side applies to, and precision/recall over the judged ones."""
    has = np.ones(len(flagged), dtype=bool) if present is None else present
    known = (labels >= 0) & has
    positive = labels == 1
    tp = int((flagged & positive & known).sum())
    fp = int((flagged & ~positive & known).sum())
    fn = int((~flagged & positive & known).sum())
    return {
        "flagged": int(flagged[has].sum()),
        "rate": float(flagged[has].mean()) if has.any() else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "labelled": int(known.sum()),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }
