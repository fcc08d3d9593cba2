"""Claims under a lease, conflict-free bulk writes, and the reconciler, against a real database.

The broker here is the embedded one (kombu's SQLite transport) in the test's own folder, so
message counts are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import Celery
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item, ItemStatus, Verdict, utcnow
from clipmod.queue import SCORE_QUEUE, enqueue_scoring, make_celery, prepare_broker
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import store, sweeper
from workers.pipeline import Scorer


@pytest.fixture
def broker(settings: Settings) -> Celery:
    app = make_celery(settings)
    prepare_broker(app)
    return app


def waiting(app: Celery) -> list[str]:
    """Drain the scoring queue; returns the item ids its messages carried."""
    ids = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(SCORE_QUEUE)
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                break
            ids.append(message.payload[0][0])
            message.ack()
        queue.close()
    return ids


def add_items(sessions: sessionmaker[Session], n: int, text: str = "a photo of a cup") -> list[str]:
    with transaction(sessions) as session:
        tenant = keys.get_or_create_tenant(session, "acme")
        items = [Item(tenant_id=tenant.id, text=f"{text} {i}") for i in range(n)]
        session.add_all(items)
        session.flush()
        return [i.id for i in items]


def claim(sessions: sessionmaker[Session], ids: list[str], worker: str, lease_s: float = 30):
    with transaction(sessions) as session:
        return store.claim(session, ids, worker, lease_s)


def rows(sessions: sessionmaker[Session], ids: list[str]) -> dict[str, Item]:
    with sessions() as session:
        return {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}


def age(sessions: sessionmaker[Session], ids: list[str], seconds: float) -> None:
    """Pretend these items were last touched `seconds` ago (and their leases ran out then)."""
    then = utcnow() - timedelta(seconds=seconds)
    with transaction(sessions) as session:
        session.execute(
            update(Item).where(Item.id.in_(ids)).values(updated_at=then, lease_until=then)
        )


# -- claims -----------------------------------------------------------------------------------


def test_two_workers_never_hold_the_same_item(sessions: sessionmaker[Session]) -> None:
    ids = add_items(sessions, 3)
    assert [c.id for c in claim(sessions, ids, "a")] == ids
    assert claim(sessions, ids, "b") == []
    held = rows(sessions, ids)
    assert {(i.status, i.claimed_by, i.attempts) for i in held.values()} == {
        (ItemStatus.PROCESSING, "a", 1)
    }
    assert all(i.lease_until is not None for i in held.values())


def test_an_expired_lease_is_claimable_and_an_own_claim_is_renewable(
    sessions: sessionmaker[Session],
) -> None:
    first, second = add_items(sessions, 2)
    claim(sessions, [first, second], "a")
    # Worker a's own message came back after a failed batch: it may take its items again.
    assert [c.id for c in claim(sessions, [first], "a")] == [first]
    age(sessions, [second], 5)  # a died: its lease on `second` ran out
    assert [c.id for c in claim(sessions, [first, second], "b")] == [second]
    held = rows(sessions, [first, second])
    assert (held[first].claimed_by, held[first].attempts) == ("a", 2)
    assert (held[second].claimed_by, held[second].attempts) == ("b", 2)


def test_renew_extends_only_the_workers_own_leases(sessions: sessionmaker[Session]) -> None:
    mine, theirs = add_items(sessions, 2)
    claim(sessions, [mine], "a", lease_s=1)
    claim(sessions, [theirs], "b", lease_s=1)
    with transaction(sessions) as session:
        assert store.renew(session, "a", lease_s=60) == 1
    held = rows(sessions, [mine, theirs])
    lease_mine, lease_theirs = held[mine].lease_until, held[theirs].lease_until
    assert lease_mine is not None and lease_theirs is not None
    assert lease_mine - lease_theirs > timedelta(seconds=50)


# -- writes -----------------------------------------------------------------------------------


@pytest.fixture
def scorer(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> Iterator[Scorer]:  # type: ignore[no-untyped-def]
    s = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir), worker_id="w1")
    yield s
    s.close()


def count_statements(sessions: sessionmaker[Session]) -> list[str]:
    statements: list[str] = []
    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    return statements


def test_the_write_is_a_fixed_number_of_statements_whatever_the_batch_size(
    scorer: Scorer, sessions: sessionmaker[Session]
) -> None:
    small, large = add_items(sessions, 2), add_items(sessions, 8, "a photo of a knife")
    work_small = scorer._claim(small)
    work_large = scorer._claim(large)
    scorer._prepare(work_small + work_large)
    scorer._forward(work_small + work_large)
    statements = count_statements(sessions)
    scorer._write(work_small)
    n_small = len(statements)
    scorer._write(work_large)
    assert len(statements) - n_small == n_small, statements
    # One SELECT per write, whatever its size: the outbox asking whether any tenant takes
    # callbacks (none here, so nothing more). No per-item SELECT.
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2 and all("callback_url" in s for s in selects), selects
    with sessions() as session:
        assert session.scalar(select(func.count(Verdict.id))) == 10


def test_a_second_write_of_the_same_items_writes_nothing(
    scorer: Scorer, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 3)
    work = scorer._claim(ids)
    scorer._prepare(work)
    scorer._forward(work)
    scorer._write(work)
    # A slower worker whose lease had run out writes the same items: nothing changes.
    with transaction(sessions) as session:
        assert store.write(session, [scorer._rows(w, *_outcome(scorer, w)) for w in work], []) == []
    # And if the UPDATE could not see the first write (a race it lost under another isolation
    # level), ON CONFLICT DO NOTHING still keeps one verdict per item instead of failing.
    with transaction(sessions) as session:
        session.execute(update(Item).where(Item.id.in_(ids)).values(status=ItemStatus.PROCESSING))
        written = store.write(session, [scorer._rows(w, *_outcome(scorer, w)) for w in work], [])
    assert sorted(written) == sorted(ids)
    with sessions() as session:
        assert session.scalar(select(func.count(Verdict.id))) == 3


def _outcome(scorer: Scorer, w):  # type: ignore[no-untyped-def]
    with scorer.sessions() as session:
        return scorer._outcomes(session, [w], lambda x: x.version_id)[w.id], None


class FailingForward(Scorer):
    """The model stage blows up (e.g. CUDA out of memory): only the stage is replaced."""

    def _forward(self, work):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA out of memory")


def test_a_failed_batch_hands_its_items_back_then_fails_them(
    settings: Settings,
    sessions: sessionmaker[Session],
    runtime,
    seeded: int,  # type: ignore[no-untyped-def]
) -> None:
    ids = add_items(sessions, 2)
    failing = FailingForward(settings, runtime, sessions, BlobStore(settings.blob_dir), "w1")
    try:
        for attempt in range(1, store.MAX_ATTEMPTS + 1):
            requeued = failing.score_batch(ids)
            if attempt < store.MAX_ATTEMPTS:
                assert sorted(requeued) == sorted(ids)
                held = rows(sessions, ids)
                assert {(i.status, i.claimed_by) for i in held.values()} == {
                    (ItemStatus.QUEUED, None)
                }
    finally:
        failing.close()
    held = rows(sessions, ids)
    assert {(i.status, i.error_code) for i in held.values()} == {
        (ItemStatus.FAILED, "scoring_error")
    }


def test_release_leaves_another_workers_items_alone(sessions: sessionmaker[Session]) -> None:
    (item,) = add_items(sessions, 1)
    claim(sessions, [item], "a")
    age(sessions, [item], 5)
    claim(sessions, [item], "b")
    with transaction(sessions) as session:
        assert store.release(session, "a", [item]) == ([], [])
    assert rows(sessions, [item])[item].claimed_by == "b"


def test_database_down_at_the_claim_raises(settings: Settings, runtime) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine("sqlite:////nonexistent/dir/x.db")
    scorer = Scorer(settings, runtime, make_sessionmaker(engine), BlobStore(settings.blob_dir))
    try:
        with pytest.raises(Exception, match="unable to open database"):
            scorer.score_batch(["a"])
    finally:
        scorer.close()
        engine.dispose()


# -- the reconciler ---------------------------------------------------------------------------


def test_expired_leases_are_requeued_once(sessions: sessionmaker[Session], broker: Celery) -> None:
    alive, dead = add_items(sessions, 2)
    claim(sessions, [alive, dead], "a")
    age(sessions, [dead], 5)
    claim(sessions, [alive], "a")  # a live worker's lease (renewed)
    done = sweeper.reconcile(sessions, broker, stuck_after_s=60)
    again = sweeper.reconcile(sessions, broker, stuck_after_s=60)
    assert (done.expired, again.expired) == ([dead], [])
    assert waiting(broker) == [dead]
    held = rows(sessions, [alive, dead])
    assert (held[dead].status, held[dead].claimed_by) == (ItemStatus.QUEUED, None)
    assert held[alive].status == ItemStatus.PROCESSING


def test_an_item_whose_worker_keeps_dying_is_failed(
    sessions: sessionmaker[Session], broker: Celery
) -> None:
    (item,) = add_items(sessions, 1)
    for _ in range(store.MAX_ATTEMPTS):
        age(sessions, [item], 5)
        claim(sessions, [item], "a")
    age(sessions, [item], 5)
    assert sweeper.reconcile(sessions, broker, stuck_after_s=60).failed == 1
    assert rows(sessions, [item])[item].error_code == "scoring_error"


def test_queued_items_missing_from_the_broker_are_resent_after_the_grace(
    sessions: sessionmaker[Session], broker: Celery
) -> None:
    lost = add_items(sessions, 3)
    sent = add_items(sessions, 2, "a photo of a gun")
    enqueue_scoring(broker, sent)
    assert sweeper.reconcile(sessions, broker, stuck_after_s=60).missing == []  # too young
    age(sessions, lost + sent, 120)
    done = sweeper.reconcile(sessions, broker, stuck_after_s=60)
    # 5 queued, 2 messages: the 3 oldest are re-sent (which 3 the counts cannot tell; here the
    # lost ones are the oldest because they were created first).
    assert len(done.missing) == 3
    assert sweeper.reconcile(sessions, broker, stuck_after_s=60).missing == []
    assert sorted(waiting(broker)) == sorted(sent + done.missing)


def test_two_reconcilers_resend_an_item_once(
    settings: Settings, sessions: sessionmaker[Session], broker: Celery
) -> None:
    ids = add_items(sessions, 4)
    age(sessions, ids, 120)
    other = make_engine(settings.database_url)
    try:
        first = sweeper.reconcile(sessions, broker, stuck_after_s=60)
        second = sweeper.reconcile(make_sessionmaker(other), broker, stuck_after_s=60)
    finally:
        other.dispose()
    assert sorted(first.missing) == sorted(ids) and second.missing == []
    assert sorted(waiting(broker)) == sorted(ids)
