"""A worker claims from the database: the named items first, then the oldest queued ones.

The broker only wakes a worker (see `clipmod.queue`); these tests drive the claim and the
overlapped claiming loop (`workers.overlap`) directly against a real SQLite database and the
real bundled model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.models import ItemStatus, Verdict
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.unit.test_leases import add_items, rows
from workers import overlap, store
from workers.pipeline import Scorer
from workers.tasks import Spread


def claim(
    sessions: sessionmaker[Session], ids: list[str], worker: str, fill: int = 0
) -> list[store.Claimed]:
    with transaction(sessions) as session:
        return store.claim(session, ids, worker, 30, fill)


def test_a_fill_claim_takes_the_named_items_then_the_oldest_queued(
    sessions: sessionmaker[Session],
) -> None:
    ids = add_items(sessions, 6)
    with_hint = claim(sessions, [ids[4]], "a")
    assert [c.id for c in with_hint] == [ids[4]]
    taken = claim(sessions, [ids[3], ids[4]], "b", fill=3)
    # ids[4] is a's: b gets the named ids[3], then the two oldest still queued.
    assert [c.id for c in taken] == [ids[3], ids[0], ids[1]]
    rest = claim(sessions, [], "c", fill=10)
    assert [c.id for c in rest] == [ids[2], ids[5]]
    assert claim(sessions, [], "d", fill=10) == []
    held = rows(sessions, ids)
    assert [held[i].claimed_by for i in ids] == ["b", "b", "c", "b", "a", "c"]
    assert {h.status for h in held.values()} == {ItemStatus.PROCESSING}


@pytest.fixture
def scorer(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> Iterator[Scorer]:  # type: ignore[no-untyped-def]
    small = Settings(**{**vars(settings), "batch_size": 4})
    s = Scorer(small, runtime, sessions, BlobStore(settings.blob_dir), worker_id="w1")
    yield s
    s.close()


def score_queued(
    scorer: Scorer,
    ids: list[str],
    before_claim: Callable[[], None] = lambda: None,
    budget_s: float = 60.0,
    on_full: Callable[[], None] = lambda: None,
) -> tuple[list[str], bool]:
    with ThreadPoolExecutor(1) as ahead, ThreadPoolExecutor(1) as writer:
        return overlap.score_queued(
            scorer, ids, before_claim, budget_s, ahead, writer, on_full=on_full
        )


def test_score_queued_claims_full_batches_until_the_queue_is_empty(
    scorer: Scorer, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 10)
    rung: list[int] = []
    full: list[int] = []
    requeued, more = score_queued(
        scorer, [ids[9]], lambda: rung.append(1), on_full=lambda: full.append(1)
    )
    assert (requeued, more) == ([], False)
    # 4 + 4 + 2: the short third claim says the queue is empty; each claim answered the bell,
    # and each full one called for another worker.
    assert len(rung) == 3 and len(full) == 2
    assert {r.status for r in rows(sessions, ids).values()} == {ItemStatus.SCORED}
    with sessions() as session:
        assert session.scalar(select(func.count(Verdict.id))) == 10


def test_score_queued_stops_at_its_budget_and_says_more_may_wait(
    scorer: Scorer, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 6)
    assert score_queued(scorer, [], budget_s=0) == ([], True)
    held = rows(sessions, ids)
    assert [held[i].status for i in ids] == [ItemStatus.SCORED] * 4 + [ItemStatus.QUEUED] * 2


class Outage(Scorer):
    """The database goes away after the claim: the write fails, and so does the hand-back."""

    down = False

    def _store(self, scored, failed):  # type: ignore[no-untyped-def]
        if self.down:
            raise ConnectionError("database unavailable")
        super()._store(scored, failed)

    def _release(self, work):  # type: ignore[no-untyped-def]
        if self.down:
            raise ConnectionError("database unavailable")
        return super()._release(work)


@pytest.mark.parametrize("n", [3, 8], ids=["one-batch", "with-a-batch-claimed-ahead"])
def test_items_a_failed_hand_back_left_claimed_are_claimed_again_by_the_same_worker(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int, n: int
) -> None:  # type: ignore[no-untyped-def]
    ids = add_items(sessions, n)
    small = Settings(**{**vars(settings), "batch_size": 4})
    scorer = Outage(small, runtime, sessions, BlobStore(settings.blob_dir), worker_id="w1")
    try:
        scorer.down = True
        with pytest.raises(ConnectionError):
            score_queued(scorer, [ids[0]])
        # No message names the others (with 8, the second batch was claimed ahead while the
        # first failed), and the fill claim takes only queued items.
        held = rows(sessions, ids)
        assert {r.status for r in held.values()} == {ItemStatus.PROCESSING}
        assert scorer.held == set(ids)
        scorer.down = False
        assert score_queued(scorer, []) == ([], False)
    finally:
        scorer.close()
    assert {r.status for r in rows(sessions, ids).values()} == {ItemStatus.SCORED}
    assert scorer.held == set()


class FirstForwardFails(Scorer):
    failed = False

    def _forward(self, work):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            # Fail only once the next batch is claimed ahead (else the hand-back could come
            # first and the claim ahead take these same items again: correct, not this test).
            deadline = time.monotonic() + 10
            while len(self.held) < 2 * len(work) and time.monotonic() < deadline:
                time.sleep(0.005)
            raise RuntimeError("CUDA out of memory")
        super()._forward(work)


def test_a_failed_batch_still_finishes_the_batch_claimed_ahead_then_stops(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> None:  # type: ignore[no-untyped-def]
    ids = add_items(sessions, 10)
    small = Settings(**{**vars(settings), "batch_size": 4})
    scorer = FirstForwardFails(small, runtime, sessions, BlobStore(settings.blob_dir), "w1")
    try:
        requeued, more = score_queued(scorer, [])
    finally:
        scorer.close()
    # Batch 2 was claimed (and decoded) while batch 1 was on the model.
    assert (sorted(requeued), more) == (sorted(ids[:4]), True)
    held = rows(sessions, ids)
    assert [held[i].status for i in ids] == (
        [ItemStatus.QUEUED] * 4 + [ItemStatus.SCORED] * 4 + [ItemStatus.QUEUED] * 2
    )
    assert scorer.held == set()


class SecondWriteFails(Scorer):
    """The write of the second batch fails (a constraint, a serialisation error): only the
    write, so the hand-back works."""

    writes = 0

    def _store(self, scored, failed):  # type: ignore[no-untyped-def]
        self.writes += 1
        if self.writes == 2:
            # Fail only once batch 4 is claimed ahead (batches 2, 3 and 4 held), else the
            # hand-back could come first and that claim take these same items again: correct,
            # not this test.
            deadline = time.monotonic() + 10
            while len(self.held) < 12 and time.monotonic() < deadline:
                time.sleep(0.005)
            raise RuntimeError("could not serialize access")
        super()._store(scored, failed)


def test_a_failed_write_hands_back_only_its_batch_and_keeps_the_others_verdicts(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> None:  # type: ignore[no-untyped-def]
    ids = add_items(sessions, 20)
    small = Settings(**{**vars(settings), "batch_size": 4})
    scorer = SecondWriteFails(small, runtime, sessions, BlobStore(settings.blob_dir), "w1")
    try:
        requeued, more = score_queued(scorer, [])
    finally:
        scorer.close()
    # The write behind learns of batch 2's failure while batch 3 is on the model and batch 4 is
    # claimed ahead: both are still scored, then the loop stops.
    assert (sorted(requeued), more) == (sorted(ids[4:8]), True)
    held = rows(sessions, ids)
    assert [held[i].status for i in ids] == (
        [ItemStatus.SCORED] * 4
        + [ItemStatus.QUEUED] * 4
        + [ItemStatus.SCORED] * 8
        + [ItemStatus.QUEUED] * 4
    )
    assert {held[i].attempts for i in ids[4:8]} == {1}
    assert scorer.held == set()
    with sessions() as session:
        assert session.scalar(select(func.count(Verdict.id))) == 12


def test_spread_rings_at_most_once_per_interval() -> None:
    rings: list[float] = []
    spread = Spread(lambda: rings.append(time.monotonic()), every_s=0.2)
    for _ in range(5):
        spread()
    assert len(rings) == 1  # a burst of full claims: one wake-up
    time.sleep(0.25)
    spread()
    assert len(rings) == 2  # and again once the interval has passed
