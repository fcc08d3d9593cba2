"""Rate-limit leases on real Redis: a fast tenant's uploads are admitted from entries taken
several at a time, without letting any moving window admit more than the limit across
replicas, and a slow tenant's uploads each make their own call, exactly as without leases."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from api.limits import LEASE_LIFE, IntakeLimiter, lease_cap
from tests.e2e.conftest import required_env

pytestmark = pytest.mark.postgres  # the production configuration's Redis


@pytest.fixture
def url() -> Iterator[str]:
    url = required_env("CLIPMOD_TEST_REDIS_URL")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def script_calls(url: str) -> int:
    """Lua calls Redis has run, failed ones included (its own count, not ours)."""
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(
        stats.get(name, {}).get(kind, 0)
        for name in ("cmdstat_evalsha", "cmdstat_eval")
        for kind in ("calls", "failed_calls", "rejected_calls")
    )


def stored(url: str) -> list[float]:
    client = redis.Redis.from_url(url)
    (key,) = client.keys("*")
    return [float(v) for v in client.lrange(key, 0, -1)]


def test_two_replicas_under_load_never_admit_more_than_the_limit_in_any_window(
    url: str,
) -> None:
    spec, limit, window = "200/3 seconds", 200, 3.0
    cap = lease_cap(parse(spec))
    replicas = [IntakeLimiter(url, spec), IntakeLimiter(url, spec)]
    admitted: list[tuple[float, float]] = []  # (before, after) the call: admission is between
    refused: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop = time.time() + window + 2.5  # fill, be refused, then slide past the first window

    def client(limiter: IntakeLimiter) -> None:
        while time.time() < stop:
            before = time.time()
            outcome = limiter.hit("tenant:1", spec)
            after = time.time()
            assert outcome is not None
            with lock:
                (admitted if outcome[0] else refused).append((before, after))
            time.sleep(0.04)

    threads = [threading.Thread(target=client, args=(r,)) for r in replicas for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    admitted.sort()
    befores = [b for b, _ in admitted]
    # For each admission i, the uploads certainly inside [its moment, its moment + window).
    worst = 0
    for i, (before_i, after_i) in enumerate(admitted):
        end = bisect.bisect_left(befores, before_i + window)
        inside = 1 + sum(
            1
            for j in range(i + 1, end)
            if admitted[j][0] >= after_i and admitted[j][1] < before_i + window
        )
        worst = max(worst, inside)
    assert worst <= limit, f"{worst} uploads admitted inside one {window}-s window"
    assert len(admitted) > limit + 50, "the run never slid past its first window"

    # Refusing early costs at most the unused part of the other replica's lease.
    first_refusal = min(refused)
    before_it = sum(1 for b, _ in admitted if b < first_refusal[1])
    assert first_refusal[0] < admitted[0][0] + window  # still inside the first window
    assert limit - (cap - 1) * (len(replicas) - 1) <= before_it <= limit


def test_a_fast_tenant_makes_far_fewer_script_calls_than_uploads(url: str) -> None:
    spec = "100000/minute"
    limiter = IntakeLimiter(url, spec)
    assert limiter.hit("tenant:warm-up", spec)  # loads the script: not part of the count
    calls = script_calls(url)
    counts = [0] * 4

    def client(n: int) -> None:
        for _ in range(500):
            outcome = limiter.hit("tenant:1", spec)
            assert outcome is not None and outcome[0]
            counts[n] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_upload = (script_calls(url) - calls) / sum(counts)
    assert per_upload < 0.1, per_upload  # 1, 2, 4, ... 32 a lease: ~0.035
    redis.Redis.from_url(url).delete(*redis.Redis.from_url(url).keys("*warm-up*"))
    entries = stored(url)
    assert sum(counts) <= len(entries) < sum(counts) + lease_cap(parse(spec))  # the unused rest
    assert entries == sorted(entries, reverse=True)  # the order the script's search relies on


def test_a_lease_never_takes_more_than_a_twentieth_of_the_limit(url: str) -> None:
    limiter = IntakeLimiter(url, "600/minute")
    calls = script_calls(url)
    for n in range(1, 301):
        outcome = limiter.hit("tenant:1", "600/minute")
        assert outcome is not None and outcome[0]
        assert outcome[1].remaining == 600 - n  # counts down through a lease, one replica
    made = script_calls(url) - calls
    assert 300 / 30 <= made < 300 / 10  # leases of at most 30 (600 / 20), growing to 30
    stamps = stored(url)
    assert max(stamps.count(s) for s in set(stamps)) == 30


def test_a_slow_tenant_takes_one_entry_a_call_with_todays_window(url: str) -> None:
    """One upload, then a pause longer than a lease lives: no lease ever, so every answer is
    what the library's own strategy reports for the same keys, and entries carry the moment
    they were taken (not a lease's end)."""
    spec = "600/minute"
    limiter = IntakeLimiter(url, spec)
    library = MovingWindowRateLimiter(RedisStorage(url))
    item = parse(spec)
    for n in range(1, 4):
        calls, before = script_calls(url), time.time()
        outcome = limiter.hit("tenant:1", spec)
        assert outcome is not None
        acquired, window = outcome
        assert acquired and script_calls(url) - calls == 1
        entries = stored(url)
        assert len(entries) == n and before <= entries[0] <= time.time()
        stats = library.get_window_stats(item, "clipmod", "tenant:1", "intake")
        assert window.remaining == stats.remaining == 600 - n
        assert window.reset_at == int(entries[-1] + 60 + 1) == int(stats.reset_time + 1)
        time.sleep(LEASE_LIFE + 0.1)


def test_unused_entries_go_back_and_one_replica_is_never_refused_early(url: str) -> None:
    spec = "100/minute"  # leases of at most 5
    limiter = IntakeLimiter(url, spec)

    def hit() -> bool:
        outcome = limiter.hit("tenant:1", spec)
        assert outcome is not None
        return outcome[0]

    assert all(hit() for _ in range(4))  # leases of 1, 2 and 4: three of the 4 unused
    assert len(stored(url)) == 7
    time.sleep(LEASE_LIFE + 0.1)
    assert hit()  # the lease expired: its 3 unused entries go back, and this one takes 1
    assert len(stored(url)) == 5
    admitted = 5
    while hit():
        admitted += 1
    assert admitted == 100  # its own lease's entries are used before it asks Redis again
    entries = stored(url)
    assert len(entries) == 100 and entries == sorted(entries, reverse=True)


def test_a_single_entry_after_another_replicas_lease_keeps_the_list_sorted(url: str) -> None:
    spec = "100/minute"
    fast, slow = IntakeLimiter(url, spec), IntakeLimiter(url, spec)
    for _ in range(3):  # leases of 1 and 2: the last one's entries are stamped a second ahead
        assert fast.hit("tenant:1", spec) is not None
    assert max(stored(url)) > time.time()
    assert slow.hit("tenant:1", spec) is not None  # its first call: one entry
    entries = stored(url)
    assert len(entries) == 4 and entries == sorted(entries, reverse=True)
