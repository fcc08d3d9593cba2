"""Suggest thresholds from what moderators decided.

For each category, the labelled items (latest `Decision` per item and category; see
`load_labels`) are re-scored from their stored embeddings under the policy's prompts,
and a precision-recall curve is drawn over every distinct score as a threshold ("flag if score ≥
t"). The rule, chosen so that it is easy to explain to an editor:

- `block_at`: the LOWEST threshold whose precision ≥ the target (e.g. 0.95) — of the thresholds
  that are precise enough to act on without a human, the one that catches most;
- `review_at`: the lowest threshold whose precision ≥ a lower floor (default 0.5) — humans look
  at everything that is at least as likely bad as good, so recall stays high. Because the floor
  is lower, review_at ≤ block_at always holds.

A chosen threshold is rounded down to the fewest decimals (2 to 6) that still flag exactly the
same labelled items, so it reads well in YAML. Scores are the raw category scores: escalation
and tenant overrides are not part of the suggestion. The labels also give the backtest its
precision and recall (`load_labels`, `judged`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from clipmod.errors import InvalidInput
from clipmod.policy.labels import load_labels
from clipmod.policy.rescore import BankCache, item_scores
from clipmod.policy.schema import Policy
from clipmod.policy.scoring import TextEncoder
from clipmod.policy.traffic import Progress, load_embeddings
from clipmod.traffic.sync import TrafficStore

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]
MIN_LABELS = 30  # below this, a suggestion is a hint and says so


@dataclass(frozen=True)
class Curve:
    """Precision and recall when flagging score ≥ thresholds[k]; thresholds descending."""

    thresholds: npt.NDArray[np.float64]
    precision: npt.NDArray[np.float64]
    recall: npt.NDArray[np.float64]
    next_lower: npt.NDArray[np.float64]  # the next lower distinct score (-inf past the last)
    positives: int

    def lowest_with_precision(self, target: float) -> int | None:
        ok = np.flatnonzero(self.precision >= target)
        return int(ok[-1]) if len(ok) else None


def pr_curve(scores: F32, labels: npt.NDArray[np.int8]) -> Curve:
    """The curve over the judged items (label 0 or 1) of one category."""
    known = labels >= 0
    s = scores[known].astype(np.float64)
    y = labels[known] == 1
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last_of_tie = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.zeros(0, int)
    thresholds = s[last_of_tie]
    positives = int(y.sum())
    flagged = (tp + fp)[last_of_tie]
    return Curve(
        thresholds=thresholds,
        precision=tp[last_of_tie] / np.maximum(flagged, 1),
        recall=tp[last_of_tie] / positives if positives else np.zeros(len(thresholds)),
        next_lower=np.append(thresholds[1:], -np.inf),
        positives=positives,
    )


def _readable(threshold: float, next_lower: float) -> float:
    """Round down to few decimals while no lower labelled score gets flagged."""
    for digits in (2, 3, 4, 6):
        rounded = math.floor(threshold * 10**digits) / 10**digits
        if rounded > next_lower:
            return rounded
    return threshold


@dataclass(frozen=True)
class Suggestion:
    id: str
    labelled: int
    positives: int
    current: dict[str, float]
    review_at: float | None
    block_at: float | None
    review_quality: dict[str, float] | None
    block_quality: dict[str, float] | None
    note: str | None
    curve: list[dict[str, float]]


@dataclass(frozen=True)
class SuggestReport:
    policy: str
    model_revision: str
    target_precision: float
    review_precision: float
    labelled_items: int
    categories: list[Suggestion]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _point(curve: Curve, k: int, threshold: float) -> dict[str, float]:
    return {
        "threshold": threshold,
        "precision": round(float(curve.precision[k]), 4),
        "recall": round(float(curve.recall[k]), 4),
    }


def _sampled(curve: Curve, points: int) -> list[dict[str, float]]:
    n = len(curve.thresholds)
    if not n:
        return []
    picks = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return [_point(curve, int(k), round(float(curve.thresholds[k]), 6)) for k in picks]


def suggest_category(
    cat_id: str,
    current: dict[str, float],
    scores: F32,
    labels: npt.NDArray[np.int8],
    *,
    target_precision: float,
    review_precision: float,
    points: int = 20,
) -> Suggestion:
    curve = pr_curve(scores, labels)
    labelled = int((labels >= 0).sum())
    picks: dict[str, tuple[float, dict[str, float]] | None] = {}
    for name, target in (("block", target_precision), ("review", review_precision)):
        k = curve.lowest_with_precision(target) if curve.positives else None
        if k is None:
            picks[name] = None
            continue
        t = _readable(float(curve.thresholds[k]), float(curve.next_lower[k]))
        picks[name] = (t, _point(curve, k, t))
    notes = []
    if not curve.positives:
        notes.append("no positive labels")
    elif picks["block"] is None:
        notes.append(f"no threshold reaches precision {target_precision}")
    if labelled < MIN_LABELS:
        notes.append(f"only {labelled} labelled items: a hint, not a calibration")
    block, review = picks["block"], picks["review"]
    return Suggestion(
        id=cat_id,
        labelled=labelled,
        positives=curve.positives,
        current=current,
        review_at=review[0] if review else None,
        block_at=block[0] if block else None,
        review_quality=review[1] if review else None,
        block_quality=block[1] if block else None,
        note="; ".join(notes) or None,
        curve=_sampled(curve, points),
    )


def suggest(
    session: Session,
    policy: Policy,
    encoder: TextEncoder,
    *,
    policy_label: str = "policy",
    target_precision: float = 0.95,
    review_precision: float = 0.5,
    points: int = 20,
    banks: BankCache | None = None,
    progress: Progress | None = None,
    store: TrafficStore | None = None,
) -> SuggestReport:
    """Suggested review_at/block_at per category of `policy`, from labelled stored traffic."""
    if not 0 < review_precision <= target_precision <= 1:
        raise InvalidInput(
            "need 0 < review precision ≤ target precision ≤ 1", code="invalid_precision"
        )
    emb = load_embeddings(
        session, encoder.revision, labelled_only=True, progress=progress, store=store
    )
    scores = item_scores((banks or BankCache()).get(policy, encoder), emb)
    ids = [c.id for c in policy.categories]
    labels = load_labels(session, emb.ids, ids)
    return SuggestReport(
        policy=policy_label,
        model_revision=encoder.revision,
        target_precision=target_precision,
        review_precision=review_precision,
        labelled_items=len(emb),
        categories=[
            suggest_category(
                cat.id,
                {"review_at": cat.review_at, "block_at": cat.block_at},
                scores[:, c],
                labels[:, c],
                target_precision=target_precision,
                review_precision=review_precision,
                points=points,
            )
            for c, cat in enumerate(policy.categories)
        ],
    )
