"""`api.groupcommit`: concurrent jobs share commits, and each job gets its own answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from api.groupcommit import GroupCommit


def run_all(submit: Callable[[int], object], jobs: list[int]) -> dict[int, object]:
    """Every job from its own thread, released at once; job -> its result or its exception."""
    answers: dict[int, object] = {}
    start = threading.Barrier(len(jobs))

    def one(job: int) -> None:
        start.wait()
        try:
            answers[job] = submit(job)
        except Exception as exc:
            answers[job] = exc

    threads = [threading.Thread(target=one, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a submitter was never answered"
    return answers


def slow_double(batches: list[list[int]]) -> Callable[[list[int]], list[int | BaseException]]:
    def commit(jobs: list[int]) -> list[int | BaseException]:
        batches.append(list(jobs))
        time.sleep(0.01)  # a database round trip: what lets the others queue up
        return [job * 2 for job in jobs]

    return commit


def test_a_lone_job_is_committed_at_once_by_its_own_thread() -> None:
    threads: list[str] = []

    def commit(jobs: list[int]) -> list[int | BaseException]:
        threads.append(threading.current_thread().name)
        return [job + 1 for job in jobs]

    group = GroupCommit(commit)
    assert group.submit(41) == 42
    assert threads == [threading.current_thread().name]
    assert (group.batches, group.jobs) == (1, 1)


def test_concurrent_jobs_share_commits_and_each_gets_its_own_result() -> None:
    batches: list[list[int]] = []
    group = GroupCommit(slow_double(batches))
    answers = run_all(group.submit, list(range(32)))
    assert answers == {job: job * 2 for job in range(32)}
    assert sorted(job for batch in batches for job in batch) == list(range(32))  # each once
    assert len(batches) < 16, batches


def test_max_batch_bounds_every_batch() -> None:
    batches: list[list[int]] = []
    group = GroupCommit(slow_double(batches), max_batch=3)
    answers = run_all(group.submit, list(range(20)))
    assert answers == {job: job * 2 for job in range(20)}
    assert max(len(batch) for batch in batches) <= 3
    assert sum(len(batch) for batch in batches) == 20


def test_an_error_for_one_job_is_raised_only_for_that_job() -> None:
    def commit(jobs: list[int]) -> list[int | BaseException]:
        time.sleep(0.01)
        return [ValueError(f"job {job}") if job == 3 else job for job in jobs]

    answers = run_all(GroupCommit(commit).submit, list(range(8)))
    assert isinstance(answers.pop(3), ValueError)
    assert answers == {job: job for job in range(8) if job != 3}


def test_a_commit_that_raises_fails_its_batch_and_the_next_one_still_runs() -> None:
    calls = []

    def commit(jobs: list[int]) -> list[int | BaseException]:
        calls.append(jobs)
        if len(calls) == 1:
            raise RuntimeError("database gone")
        return list(jobs)

    group = GroupCommit(commit)
    with pytest.raises(RuntimeError, match="database gone"):
        group.submit(1)
    assert group.submit(2) == 2


def test_a_commit_that_answers_too_few_jobs_fails_them_all() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda jobs: [])
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        group.submit(1)


def test_jobs_that_queued_during_a_batch_are_led_by_one_of_their_own_threads() -> None:
    """The first leader answers its own request instead of writing the next batch too."""
    first_in, queued = threading.Event(), threading.Event()
    leaders: list[tuple[str, list[int]]] = []

    def commit(jobs: list[int]) -> list[int | BaseException]:
        leaders.append((threading.current_thread().name, list(jobs)))
        if jobs == [0]:
            first_in.set()
            assert queued.wait(10)
        return list(jobs)

    group = GroupCommit(commit)
    first = threading.Thread(target=group.submit, args=(0,), name="first")
    first.start()
    assert first_in.wait(10)
    later = [threading.Thread(target=group.submit, args=(n,), name=f"t{n}") for n in (1, 2, 3)]
    for t in later:
        t.start()
    while len(group._queue) < 3:  # all three are waiting behind the first batch
        time.sleep(0.001)
    queued.set()
    for t in [first, *later]:
        t.join(10)
    assert leaders[0] == ("first", [0])
    assert sorted(n for _, jobs in leaders[1:] for n in jobs) == [1, 2, 3]
    assert all(name != "first" for name, _ in leaders[1:])
