"""Decisions: allow, remove or escalate, one chain per item, never erased.

A decision answers the verdict it was shown: it stores the verdict, its action and the policy
version, so we can later measure where people and policy disagree. To decide, a person must
not be blocked by someone else's claim, and the item must still be as they saw it (the page
sends a state token; a decision or verdict that arrived meanwhile makes it stale, and the
person is told instead of overwriting). Moderators make the first decision; escalations and
re-decisions belong to admins, whose decision supersedes the previous one.

Labels (`{category: bool}`) are what `policy suggest` learns from. A person may set them per
category; when they do not (keyboard and bulk decisions), they follow from the action:
allow → no category was a violation; remove → the categories the verdict flagged were (and
the others were not); remove of an audit sample that flagged nothing → its top-scoring
category was, the others unknown; escalate → no labels (an escalation is not a judgment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clipmod.errors import ClipmodError, InvalidInput
from clipmod.models import Decision, DecisionAction, Item, User, Verdict, utcnow
from clipmod.review import audit, claims
from clipmod.review.access import visible_item
from clipmod.review.queue import current_decisions

MAX_REASON_CHARS = 2000
MAX_BULK = 200


class Conflict(ClipmodError):
    code, status = "item_changed", 409


def current(session: Session, item_id: str) -> Decision | None:
    return session.scalars(current_decisions().where(Decision.item_id == item_id)).first()


def history(session: Session, item_id: str) -> list[Decision]:
    """Oldest first: the chain of decisions, each superseding the one before."""
    return list(
        session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id))
    )


def state_token(verdict: Verdict | None, decision: Decision | None) -> str:
    """What the page saw: which verdict and which current decision."""
    return f"{verdict.id if verdict else 0}.{decision.id if decision else 0}"


def default_labels(verdict: Verdict, action: DecisionAction) -> dict[str, bool]:
    cats = verdict.categories or []
    if action is DecisionAction.ESCALATE:
        return {}
    if action is DecisionAction.ALLOW:
        return {c["id"]: False for c in cats}
    flagged = {c["id"] for c in cats if c.get("action") in ("review", "block")}
    if flagged:
        return {c["id"]: c["id"] in flagged for c in cats}
    top = max(cats, key=lambda c: float(c["score"]), default=None)
    return {top["id"]: True} if top else {}


def _labels(
    verdict: Verdict, given: Mapping[str, bool | None] | None, action: DecisionAction
) -> dict[str, bool]:
    if given is None:
        return default_labels(verdict, action)
    known = {c["id"] for c in verdict.categories or []}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidInput(
            f"labels: unknown categories {', '.join(unknown)}", code="invalid_labels"
        )
    return {k: bool(v) for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class DecisionRequest:
    action: DecisionAction
    labels: Mapping[str, bool | None] | None = None  # None: follow from the action
    reason: str | None = None
    expected: str | None = None  # `state_token` of what the page showed; None: don't check


def decide(
    session: Session,
    user: User,
    item_id: str,
    request: DecisionRequest,
    *,
    lease: timedelta,
    now: datetime | None = None,
    bulk: bool = False,
) -> Decision:
    """Record a decision (see module doc); raises NotFound, ClaimConflict or Conflict."""
    now = now or utcnow()
    item = visible_item(session, user, item_id)
    verdict = item.verdict
    if verdict is None:
        raise Conflict("this item has no verdict yet: it cannot be decided", code="not_scored")
    previous = current(session, item.id)
    if request.expected is not None and request.expected != state_token(verdict, previous):
        who = f" by {previous.moderator}" if previous else ""
        raise Conflict(f"this item changed since you opened it (decided{who}); reload it")
    if previous is not None and not user.is_admin:
        if previous.action is DecisionAction.ESCALATE:
            raise Conflict("this item was escalated: an admin decides it now", code="escalated")
        raise Conflict(
            f"already decided ({previous.action.value}) by {previous.moderator}",
            code="already_decided",
        )
    claims.claim(session, item, user, lease, now=now)
    decision = _store(
        session,
        item,
        verdict,
        request,
        previous,
        moderator=user.email,
        user=user,
        source="dashboard",
        now=now,
        conflict="someone decided this item at the same moment; reload it",
        extra={"bulk": True} if bulk else {},
    )
    claims.release(session, item.id, user)
    return decision


def _store(
    session: Session,
    item: Item,
    verdict: Verdict,
    request: DecisionRequest,
    previous: Decision | None,
    *,
    moderator: str,
    user: User | None,
    source: str,
    now: datetime,
    conflict: str,
    extra: dict[str, object],
) -> Decision:
    """Write one decision (superseding `previous`) and its audit row: dashboard and platform."""
    reason = (request.reason or "").strip() or None
    if reason and len(reason) > MAX_REASON_CHARS:
        raise InvalidInput(f"reason: at most {MAX_REASON_CHARS} characters", code="invalid_reason")
    labels = _labels(verdict, request.labels, request.action)
    decision = Decision(
        item_id=item.id,
        moderator=moderator,
        user_id=user.id if user else None,
        labels=labels,
        action=request.action,
        reason=reason,
        source=source,
        decided_at=now,
        verdict_id=verdict.id,
        verdict_action=verdict.action.value,
        policy_version_id=verdict.policy_version_id,
        supersedes_id=previous.id if previous else None,
    )
    try:
        with session.begin_nested():
            session.add(decision)
    except IntegrityError:
        raise Conflict(conflict) from None
    audit.record(
        session,
        "decide",
        user=user,
        actor=None if user else moderator,
        item=item,
        detail={
            "action": request.action.value,
            "labels": labels,
            "reason": reason,
            "decision_id": decision.id,
            "supersedes": decision.supersedes_id,
            "verdict": verdict.action.value,
            **extra,
        },
    )
    return decision


@dataclass
class BulkReport:
    action: str
    decided: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, why)


def decide_many(
    session: Session,
    user: User,
    items: Sequence[tuple[str, str | None]],
    action: DecisionAction,
    *,
    reason: str | None,
    lease: timedelta,
    now: datetime | None = None,
) -> BulkReport:
    """Decide each (item id, state token) that is still as the page showed it; skip the rest.

    Each item runs in its own savepoint, so one stale or claimed item never undoes the others,
    and the report names every skipped item and why.
    """
    if not items:
        raise InvalidInput("select at least one item", code="nothing_selected")
    if len(items) > MAX_BULK:
        raise InvalidInput(f"at most {MAX_BULK} items at once", code="too_many_items")
    now = now or utcnow()
    report = BulkReport(action.value)
    for item_id, token in dict(items).items():
        try:
            with session.begin_nested():
                decide(
                    session,
                    user,
                    item_id,
                    DecisionRequest(action, reason=reason, expected=token),
                    lease=lease,
                    now=now,
                    bulk=True,
                )
            report.decided.append(item_id)
        except ClipmodError as exc:
            report.skipped.append((item_id, exc.message))
    audit.record(
        session,
        "bulk_decide",
        user=user,
        detail={
            "action": action.value,
            "decided": report.decided,
            "skipped": [{"item": i, "why": w} for i, w in report.skipped],
        },
    )
    return report


def tokens(session: Session, item_ids: Sequence[str]) -> dict[str, str]:
    """State tokens for many items at once (the queue page embeds one per row)."""
    verdicts: dict[str, int] = dict(
        session.execute(
            select(Verdict.item_id, Verdict.id).where(Verdict.item_id.in_(item_ids))
        ).all()
    )
    decided: dict[str, int] = dict(
        session.execute(
            current_decisions()
            .where(Decision.item_id.in_(item_ids))
            .with_only_columns(Decision.item_id, Decision.id)
        ).all()
    )
    return {i: f"{verdicts.get(i, 0)}.{decided.get(i, 0)}" for i in item_ids}


def record_platform_decision(
    session: Session, item: Item, request: DecisionRequest, *, tenant: str, moderator: str
) -> Decision:
    """A decision the platform's own moderators made, sent over the API.

    The platform owns its content, so its decision is final: it supersedes whatever decision
    the item had (a dashboard one included) rather than being refused like a second moderator.
    It is stored like any other decision (the verdict it answered, labels that follow from the
    action unless given), so `policy suggest` and backtests learn from it too.
    """
    verdict = item.verdict
    if verdict is None:
        raise Conflict("this item has no verdict yet: it cannot be decided", code="not_scored")
    previous = current(session, item.id)
    decision = _store(
        session,
        item,
        verdict,
        request,
        previous,
        moderator=f"api:{tenant}:{moderator}",
        user=None,
        source="api",
        now=utcnow(),
        conflict="another decision was recorded at the same moment; retry",
        extra={"source": "api"},
    )
    claims.release_any(session, item.id)
    return decision
