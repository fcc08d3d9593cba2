"""The write of batch N runs behind the forward pass of batch N+1 (`workers.overlap`).

Pure logic: a fake scorer records when each stage starts and ends, so the tests can check the
order of events across the loop's three threads. The database side of a failed write is in
`tests/unit/test_drain.py`, against the real store.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from workers import overlap
from workers.metrics import StageTimer
from workers.pipeline import Batch

WAIT_S = 5.0


class FakeScorer:
    """Hands out batches of the given sizes; `hold_write[k]` makes batch k's write wait for an
    event (with a timeout, so a serial loop is seen as a timeout, not a hang)."""

    def __init__(self, sizes: list[int], size: int = 4):
        self.settings = SimpleNamespace(batch_size=size)
        self.held: set[str] = set()
        self.sizes = list(sizes)
        self.events: list[str] = []
        self.claims = 0
        self.writing = 0
        self.most_writing = 0
        self.lock = threading.Lock()
        self.forward_started: dict[int, threading.Event] = {}
        self.write_started: dict[int, threading.Event] = {}
        # A forward first waits (bounded) for the previous batch's write to start, so an overlap
        # is seen however late the writer thread is scheduled; a serial loop still is not.
        self.forward_waits_for_write = False
        self.claim_error: dict[int, Exception] = {}
        self.write_fails: set[int] = set()
        self.write_s = 0.0
        self.at_return: list[str] = []

    def note(self, event: str) -> None:
        with self.lock:
            self.events.append(event)

    def begin(self, ids: list[str], fill: int) -> Batch:
        self.claims += 1
        k = self.claims
        if k in self.claim_error:
            raise self.claim_error[k]
        n = self.sizes[k - 1] if k <= len(self.sizes) else 0
        work = [SimpleNamespace(id=f"{k}.{i}", error=None) for i in range(n)]
        self.held.update(w.id for w in work)
        self.forward_started[k] = threading.Event()
        self.write_started[k] = threading.Event()
        return Batch(work, StageTimer())  # type: ignore[arg-type]

    @staticmethod
    def number(batch: Batch) -> int:
        return int(batch.work[0].id.split(".")[0])

    def compute(self, batch: Batch) -> None:
        k = self.number(batch)
        self.note(f"forward {k} start")
        self.forward_started[k].set()
        previous = self.write_started.get(k - 1)
        if self.forward_waits_for_write and previous is not None:
            previous.wait(WAIT_S)
        time.sleep(0.05)
        self.note(f"forward {k} end")

    def settle(self, batch: Batch) -> list[str]:
        k = self.number(batch)
        with self.lock:
            self.writing += 1
            self.most_writing = max(self.most_writing, self.writing)
        self.note(f"write {k} start")
        self.write_started[k].set()
        try:
            nxt = self.forward_started.get(k + 1)
            if nxt is not None and not nxt.wait(WAIT_S):
                self.note(f"write {k} saw no forward of {k + 1}")
            time.sleep(self.write_s)
            ids = [w.id for w in batch.work]
            self.held.difference_update(ids)
            if k in self.write_fails:
                batch.error = RuntimeError("write failed")
                self.note(f"write {k} handed back")
                return ids
            self.note(f"write {k} end")
            return []
        finally:
            with self.lock:
                self.writing -= 1


def run(scorer: FakeScorer, budget_s: float = 60.0) -> tuple[list[str], bool]:
    """One task call. The events are copied the moment it ends: the pools' shutdown (a `with`
    block) would itself wait for a write still in flight and hide it."""
    ahead, writer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    try:
        return overlap.score_queued(scorer, [], lambda: None, budget_s, ahead, writer)  # type: ignore[arg-type]
    finally:
        scorer.at_return = list(scorer.events)
        ahead.shutdown()
        writer.shutdown()


def test_the_write_of_a_batch_overlaps_the_forward_of_the_next() -> None:
    scorer = FakeScorer([4, 4, 4, 1])
    scorer.forward_waits_for_write = True
    assert run(scorer) == ([], False)
    ev = scorer.events
    assert not [e for e in ev if "saw no forward" in e], ev
    for k in (1, 2, 3):
        # Batch k's write starts before batch k+1's forward ends, and ends after it started.
        assert ev.index(f"write {k} start") < ev.index(f"forward {k + 1} end"), ev
        assert ev.index(f"forward {k + 1} start") < ev.index(f"write {k} end"), ev
        # Bounded: batch k+1 is handed to the writer only once batch k's write ended.
        assert ev.index(f"write {k} end") < ev.index(f"write {k + 1} start"), ev
    assert scorer.most_writing == 1
    assert scorer.held == set()


def test_a_failing_write_hands_back_only_its_batch_and_the_others_are_written() -> None:
    scorer = FakeScorer([4, 4, 4, 4, 4])
    scorer.write_fails = {2}
    requeued, more = run(scorer)
    # Batch 2's failure is known when batch 3 is handed over; batch 4 was claimed by then, so
    # it is finished too, and no fifth batch is claimed.
    assert (sorted(requeued), more) == ([f"2.{i}" for i in range(4)], True)
    ends = [e for e in scorer.events if e.startswith("write") and not e.endswith("start")]
    assert ends == ["write 1 end", "write 2 handed back", "write 3 end", "write 4 end"]
    assert scorer.claims == 4
    assert scorer.held == set()


def test_the_call_returns_only_after_the_last_write_ended() -> None:
    scorer = FakeScorer([4, 2])
    scorer.write_s = 0.3
    assert run(scorer) == ([], False)
    assert scorer.at_return[-1] == "write 2 end"
    assert scorer.held == set()


def test_a_failed_claim_raises_only_after_the_write_in_flight_ended() -> None:
    scorer = FakeScorer([4, 4])
    scorer.write_s = 0.3
    scorer.claim_error[2] = ConnectionError("database unavailable")
    with pytest.raises(ConnectionError):
        run(scorer)
    assert "write 1 end" in scorer.at_return
    assert scorer.held == set()


class HandBackRaises(FakeScorer):
    """The database goes away under batch 1's write: its hand-back raises."""

    def settle(self, batch: Batch) -> list[str]:
        if self.number(batch) == 1:
            self.note("write 1 raised")
            raise ConnectionError("database unavailable")
        return super().settle(batch)


def test_a_raising_hand_back_ends_the_call_after_the_batch_already_computed_is_written() -> None:
    scorer = HandBackRaises([4, 4, 4])
    with pytest.raises(ConnectionError):
        run(scorer)
    # Batch 2 was on the model during batch 1's write: its verdicts are still offered to the
    # writer. Batch 3, claimed ahead, stays held for the next call; no fourth claim.
    assert "write 2 end" in scorer.at_return
    assert "forward 3 start" not in scorer.events
    assert scorer.held == {f"1.{i}" for i in range(4)} | {f"3.{i}" for i in range(4)}
    assert scorer.claims == 3
