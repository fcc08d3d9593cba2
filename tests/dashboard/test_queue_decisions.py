"""The queue, claims and decisions against the real database (no browser, no worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.errors import ClipmodError, NotFound
from clipmod.models import AuditEvent, Decision, DecisionAction, Item, User, utcnow
from clipmod.policy.suggest import load_labels
from clipmod.review import claims, decisions, queue
from clipmod.review.decisions import DecisionRequest
from tests.dashboard.conftest import LEASE, MakeItem

ALLOW, REMOVE, ESCALATE = DecisionAction.ALLOW, DecisionAction.REMOVE, DecisionAction.ESCALATE


def _decide(
    sessions: sessionmaker[Session], user: User, item_id: str, action: DecisionAction, **kw
):  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return decisions.decide(session, user, item_id, DecisionRequest(action, **kw), lease=LEASE)


def _waiting(sessions: sessionmaker[Session], user: User, **filt: object) -> list[str]:
    with sessions() as session:
        return [i for i, _ in queue.waiting_ids(session, user, queue.QueueFilter(**filt))]  # type: ignore[arg-type]


def test_queue_holds_review_and_audit_items_of_my_tenants_oldest_first(
    make_item: MakeItem, alice: User, admin: User, sessions: sessionmaker[Session]
) -> None:
    first = make_item(scores={"weapons": 0.6})
    audit = make_item(scores={}, audit=True)
    make_item(scores={"weapons": 0.9})  # blocked: the policy acted, nobody needs to look
    make_item(scores={})  # allowed
    theirs = make_item("globex", scores={"drugs": 0.7})
    assert _waiting(sessions, alice) == [first, audit]
    assert _waiting(sessions, admin) == [first, audit, theirs]
    assert _waiting(sessions, admin, tenant="globex") == [theirs]
    with sessions() as session:
        assert queue.counts(session, alice) == {"waiting": 2}
        assert queue.counts(session, admin) == {"waiting": 3, "escalated": 0}


def test_category_and_score_band_filters(
    make_item: MakeItem, alice: User, sessions: sessionmaker[Session]
) -> None:
    low = make_item(scores={"weapons": 0.55})
    high = make_item(scores={"weapons": 0.75, "drugs": 0.6})
    drugs = make_item(scores={"drugs": 0.65})
    assert _waiting(sessions, alice, category="weapons") == [low, high]
    assert _waiting(sessions, alice, category="drugs") == [high, drugs]
    assert _waiting(sessions, alice, min_score=0.6) == [high, drugs]
    assert _waiting(sessions, alice, category="weapons", max_score=0.6) == [low]


def test_a_claim_blocks_others_until_it_expires(
    make_item: MakeItem, alice: User, bob: User, sessions: sessionmaker[Session]
) -> None:
    item_id = make_item()
    now = utcnow()
    with transaction(sessions) as session:
        item = session.get(Item, item_id)
        assert item is not None
        assert claims.claim(session, item, alice, LEASE, now=now) is True
        assert claims.claim(session, item, alice, LEASE, now=now) is False  # renewed
        with pytest.raises(claims.ClaimConflict) as err:
            claims.claim(session, item, bob, LEASE, now=now + timedelta(minutes=4))
        assert err.value.status == 409 and "alice@example.com" in err.value.message
        # Nobody renewed it: after the lease the item is anyone's again.
        later = now + LEASE + timedelta(seconds=1)
        assert claims.claim(session, item, bob, LEASE, now=later) is True
        held = claims.holder(session, item_id, now=later)
        assert held is not None and held.holder == "bob@example.com"


def test_next_skips_items_someone_else_holds(
    make_item: MakeItem, alice: User, bob: User, sessions: sessionmaker[Session]
) -> None:
    a, b, c = make_item(), make_item(), make_item()
    with transaction(sessions) as session:
        claims.claim(session, session.get(Item, b), bob, LEASE)  # type: ignore[arg-type]
    with sessions() as session:
        now, filt = utcnow(), queue.QueueFilter()
        assert queue.next_waiting(session, alice, filt, now=now) == a
        assert queue.next_waiting(session, alice, filt, now=now, after=a) == c
        assert queue.next_waiting(session, alice, filt, now=now, after=c) is None
        assert queue.next_waiting(session, alice, filt, now=now, before=c) == a


def test_deciding_someone_elses_claimed_item_is_a_409_naming_them(
    make_item: MakeItem, alice: User, bob: User, sessions: sessionmaker[Session]
) -> None:
    item_id = make_item()
    with transaction(sessions) as session:
        claims.claim(session, session.get(Item, item_id), alice, LEASE)  # type: ignore[arg-type]
    with pytest.raises(claims.ClaimConflict, match=r"alice@example\.com is reviewing"):
        _decide(sessions, bob, item_id, ALLOW)
    decision = _decide(sessions, alice, item_id, REMOVE, reason="knife for sale")
    assert decision.moderator == "alice@example.com" and decision.reason == "knife for sale"
    assert decision.verdict_action == "review" and decision.policy_version_id is not None
    with sessions() as session:
        assert claims.holder(session, item_id) is None  # released on decision
    assert _waiting(sessions, alice) == []
    with pytest.raises(ClipmodError, match="already decided") as err:
        _decide(sessions, bob, item_id, ALLOW)
    assert err.value.status == 409


def test_another_tenants_item_is_not_found(
    make_item: MakeItem, alice: User, sessions: sessionmaker[Session]
) -> None:
    theirs = make_item("globex")
    with pytest.raises(NotFound):
        _decide(sessions, alice, theirs, ALLOW)


def test_a_stale_page_cannot_overwrite_a_newer_decision(
    make_item: MakeItem, alice: User, admin: User, sessions: sessionmaker[Session]
) -> None:
    item_id = make_item()
    with sessions() as session:
        seen = decisions.tokens(session, [item_id])[item_id]
    _decide(sessions, alice, item_id, ESCALATE)
    with pytest.raises(decisions.Conflict, match="changed since you opened it"):
        _decide(sessions, admin, item_id, ALLOW, expected=seen)


def test_escalation_goes_to_admins_and_their_decision_supersedes_it(
    make_item: MakeItem, alice: User, admin: User, sessions: sessionmaker[Session]
) -> None:
    item_id = make_item(scores={"weapons": 0.6, "drugs": 0.1})
    escalation = _decide(sessions, alice, item_id, ESCALATE, reason="not sure")
    assert escalation.labels == {}
    assert _waiting(sessions, alice) == [] and _waiting(sessions, admin) == []
    assert _waiting(sessions, admin, escalated=True) == [item_id]
    with pytest.raises(ClipmodError, match="escalated"):
        _decide(sessions, alice, item_id, REMOVE)
    final = _decide(sessions, admin, item_id, REMOVE)
    assert final.supersedes_id == escalation.id
    assert final.labels == {"weapons": True, "drugs": False, "gore": False}
    again = _decide(sessions, admin, item_id, ALLOW, labels={"weapons": False})
    assert again.supersedes_id == final.id
    assert _waiting(sessions, admin, escalated=True) == []
    with sessions() as session:
        chain = decisions.history(session, item_id)
        assert [d.action for d in chain] == [ESCALATE, REMOVE, ALLOW]  # nothing erased
        # `policy suggest` reads the newest judgment per category.
        labels = load_labels(session, [item_id], ["weapons", "drugs", "gore"])
        assert labels.tolist() == [[0, 0, 0]]


@pytest.mark.parametrize(
    ("scores", "action", "expected"),
    [
        ({"weapons": 0.6}, ALLOW, {"weapons": False, "drugs": False, "gore": False}),
        ({"weapons": 0.6, "gore": 0.55}, REMOVE, {"weapons": True, "drugs": False, "gore": True}),
        ({"drugs": 0.3}, REMOVE, {"drugs": True}),  # an audit sample: only its top category
        ({"weapons": 0.6}, ESCALATE, {}),
    ],
)
def test_default_labels_follow_the_action(
    make_item: MakeItem,
    alice: User,
    sessions: sessionmaker[Session],
    scores: dict[str, float],
    action: DecisionAction,
    expected: dict[str, bool],
) -> None:
    item_id = make_item(scores=scores, audit=max(scores.values()) < 0.5)
    assert _decide(sessions, alice, item_id, action).labels == expected


def test_unknown_label_categories_are_refused(
    make_item: MakeItem, alice: User, sessions: sessionmaker[Session]
) -> None:
    item_id = make_item()
    with pytest.raises(ClipmodError, match="unknown categories nudity"):
        _decide(sessions, alice, item_id, REMOVE, labels={"nudity": True})
    with sessions() as session:
        assert session.scalar(select(Decision)) is None


def test_bulk_decides_what_is_unchanged_and_reports_the_rest(
    make_item: MakeItem, alice: User, bob: User, sessions: sessionmaker[Session]
) -> None:
    ids = [make_item() for _ in range(4)]
    theirs = make_item("globex")
    with sessions() as session:
        seen = decisions.tokens(session, ids)
    _decide(sessions, bob, ids[1], ALLOW)  # decided meanwhile
    with transaction(sessions) as session:
        claims.claim(session, session.get(Item, ids[2]), bob, LEASE)  # type: ignore[arg-type]
    picked = [(i, seen[i]) for i in ids] + [(theirs, "1.0")]
    with transaction(sessions) as session:
        report = decisions.decide_many(session, alice, picked, REMOVE, reason=None, lease=LEASE)
    assert report.decided == [ids[0], ids[3]]
    why = dict(report.skipped)
    assert set(why) == {ids[1], ids[2], theirs}
    assert "changed since you opened it" in why[ids[1]]
    assert "bob@example.com is reviewing" in why[ids[2]]
    assert "no item" in why[theirs]
    with sessions() as session:
        bulk = session.scalar(select(AuditEvent).where(AuditEvent.action == "bulk_decide"))
        assert bulk is not None and bulk.detail["decided"] == [ids[0], ids[3]]
        assert len(bulk.detail["skipped"]) == 3
        rows = session.scalars(select(Decision).where(Decision.item_id == ids[1])).all()
        assert [d.moderator for d in rows] == ["bob@example.com"]  # untouched


def test_bulk_refuses_too_many_or_none(alice: User, sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        with pytest.raises(ClipmodError, match="at most 200"):
            decisions.decide_many(
                session,
                alice,
                [(str(i), None) for i in range(201)],
                ALLOW,
                reason=None,
                lease=LEASE,
            )
        with pytest.raises(ClipmodError, match="select at least one"):
            decisions.decide_many(session, alice, [], ALLOW, reason=None, lease=LEASE)
