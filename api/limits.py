"""Per-tenant rate limits on intake: a moving window from the `limits` library.

A tenant's limit is its `rate_limit` (set by an admin: `clipmod tenants set --rate-limit`, or
`PATCH /v1/tenants/<name>`), else `CLIPMOD_RATE_LIMIT`. `POST /v1/items` and the signed webhook
share one budget per tenant (scope "intake"); the webhook is counted only after its signature
is verified, so strangers cannot spend a tenant's budget. Counters live in Redis in production
(every API replica shares them) and in memory on the embedded default, which runs one API
process. If the counter store fails, requests are let through and the failure is logged:
intake is worth more than the limit.

A refusal is `429 too_many_requests` in the JSON error shape with `Retry-After` (seconds) and
the `X-RateLimit-*` headers, which every counted request carries.

Why not Flask-Limiter, which this used to be: it cost a quarter of an upload's CPU. It ran a
hook before every request of the app (limits or none), and on Redis it made two round trips
per upload: one Lua call to take an entry, another to read the window back for the headers.
Here one Lua call does both, on the same keys and the same list layout as the `limits`
library's own moving window (`LIMITS:LIMITER/clipmod/tenant:<id>/intake/<n>/<m>/<unit>`), so
counters written by either agree. The memory store uses the library's own strategy.

Why leases: that one call was still ~8% of an upload's server CPU, and the round trip's GIL
hand-offs cost more with 8 request threads. So when one process sees a tenant upload fast, a
call takes several entries at once (a lease) and the next uploads in that process are admitted
from it without a round trip, for at most `LEASE_LIFE` (1 s). Its size adapts: 1 at first (so at
a low rate every upload makes its own call, exactly as before), doubling each time a lease is
used up while fresh, shrinking to what the last one used when part of it went unused, capped at
32 and at 1/20 of the limit (a 600/minute limit never leases more than 30, a 10/minute one only
1). No window ever admits more than the limit, across any number of replicas (`_Lease` says
why). The cost is refusing slightly early: a lease's unused entries count in Redis as if used.
Each process has at most one lease per tenant and limit, and gives back the unused part of its
last one in the same call that takes the next, so when a replica is refused, the window holds at
most k - 1 unused entries per other replica (k <= 32, and <= amount/20): with 2 replicas and
600/minute (k <= 30), refusals may start at 571 of 600. A remainder never given back (the
replica's traffic stopped, or the call that would give it back failed) leaves with the window.
`X-RateLimit-Remaining` counts down as the lease is used; what other replicas took meanwhile
shows at this process's next call.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import cast

from flask import Flask, Response, current_app, g
from limits import RateLimitItem, parse_many
from limits.storage import MovingWindowSupport, RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from clipmod.settings import Settings

log = logging.getLogger(__name__)

KEY = "clipmod.limiter"
SCOPE = "intake"
_PREFIX = "clipmod"

# The `limits` library's acquire_moving_window.lua and moving_window.lua in one call, taking up
# to ARGV[4] entries at once (a lease) after giving back ARGV[6] unused ones stamped ARGV[7]. The
# list is newest first; `used` is found by a binary search over at most `limit` entries, and
# `granted` entries fit when used + granted <= limit (for one entry that is the library's own
# test: the entry at index limit - 1 is outside the window). New entries are stamped
# max(now + life, newest entry), which keeps the list sorted when a lease's future stamp sits
# above later single entries. The key lives until its newest entry leaves the window.
_LEASE = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local life = tonumber(ARGV[5])
local giveback = tonumber(ARGV[6])
if giveback > 0 then
    redis.call('lrem', KEYS[1], giveback, ARGV[7])
end
local target = now - expiry
local low, high, used = 0, limit - 1, 0
while low <= high do
    local mid = math.floor((low + high) / 2)
    local val = tonumber(redis.call('lindex', KEYS[1], mid))
    if val and val >= target then
        used = mid + 1
        low = mid + 1
    else
        high = mid - 1
    end
end
local granted = math.max(0, math.min(want, limit - used))
local stamp = ''
if granted > 0 then
    local at = now + life
    local newest = tonumber(redis.call('lindex', KEYS[1], 0))
    if newest and newest > at then
        at = newest
    end
    local entries = {}
    for i = 1, granted do
        entries[i] = at
    end
    redis.call('lpush', KEYS[1], unpack(entries))
    redis.call('ltrim', KEYS[1], 0, limit - 1)
    redis.call('expire', KEYS[1], expiry + math.ceil(at - now))
    used = used + granted
    stamp = redis.call('lindex', KEYS[1], 0)
end
if used > 0 then
    return {granted, redis.call('lindex', KEYS[1], used - 1), used, stamp}
end
return {0, tostring(now), 0, stamp}
"""


@dataclass(frozen=True)
class Window:
    """What the `X-RateLimit-*` headers report: the limit, what is left, when it resets."""

    limit: RateLimitItem
    remaining: int
    reset_at: int  # epoch seconds


@functools.lru_cache(maxsize=256)
def _items(spec: str) -> tuple[RateLimitItem, ...]:
    # Flask-Limiter's order, kept: the shortest granularity first, stopping at the first breach.
    return tuple(sorted(parse_many(spec)))


LEASE_LIFE = 1.0  # seconds a lease admits uploads locally; an unused remainder then expires
LEASE_MAX = 32  # entries one lease takes at most ...
LEASE_SHARE = 20  # ... and at most this fraction of the limit (600/minute: 30; 10/minute: 1)


def lease_cap(item: RateLimitItem) -> int:
    return max(1, min(LEASE_MAX, item.amount // LEASE_SHARE))


class _Lease:
    """This process's entries taken ahead for one (tenant, limit) window.

    Why it never over-admits: every entry in Redis stands for at most one upload, and an upload
    is admitted no later than its entry's stamp. A single entry is stamped at the moment it is
    used; a lease taken at `now` stamps its entries `now + LEASE_LIFE` (or the newest stamp, if
    that is later) and admits only before `now + LEASE_LIFE`. Take any window [s, s + E) of
    admission times and the last script call (in Redis' order) whose entries admitted uploads in
    it, made at `p < s + E`. Every upload in the window is admitted at `a >= s` from an entry
    stamped `>= a`, so each such entry (from an earlier call) is inside the window that call
    checked (`>= p - E`); the call granted only what fit under the limit beside them, so the
    window holds at most `limit` uploads. Entries stamped with the moment they were pushed
    would leave Redis' window up to a lease life before their uploads leave the real one.

    The list must stay sorted newest first (the script's binary search and the library's
    `limit - 1` test rely on it): a stamp is never below the newest one already there, so a
    single entry pushed after a lease is stamped like the lease, never below it. Giving back
    unused entries (LREM of their stamp, `count` of them) keeps it sorted; entries with equal
    stamps cannot be told apart, so removing `count` of them is the same as removing ours,
    which are all still in the list while their stamp is inside the window (a window never
    holds more than `limit` entries, and LTRIM keeps the newest `limit`). A replica still on
    the one-entry script (a rolling upgrade) stamps `now`, possibly below a live lease's stamp;
    the order is then off by at most a lease's entries until they leave the window.
    """

    __slots__ = ("granted", "left", "lock", "reset_at", "size", "stamp", "taken_at", "used")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.size = 1  # what the next lease asks for
        self.granted = 0  # what the last one got
        self.left = 0  # of those, not yet used
        self.taken_at = 0.0  # admits until taken_at + LEASE_LIFE, below its entries' stamp
        self.stamp: str | bytes = ""  # the stamp its entries carry in Redis, to give some back
        self.used = 0  # entries in the window when it was taken, its own included
        self.reset_at = 0

    def window(self, item: RateLimitItem) -> Window:
        """What the headers report: the window when the lease was taken, less what it has used."""
        return Window(item, max(0, item.amount - self.used + self.left), self.reset_at)

    def next_size(self, now: float, cap: int) -> int:
        if self.left > 0:  # expired with some unused: ask for what one lease life used
            return max(1, min(cap, self.granted - self.left))
        if self.granted > 0 and now < self.taken_at + LEASE_LIFE:  # used up while fresh
            return min(cap, 2 * self.size)
        return min(cap, self.size)


class IntakeLimiter:
    def __init__(self, storage_url: str, default: str):
        self.default = default
        storage = storage_from_string(storage_url)
        self._strategy = MovingWindowRateLimiter(storage)
        self._window = cast("MovingWindowSupport", storage)
        self._redis = storage if isinstance(storage, RedisStorage) else None
        if self._redis is not None:
            self._script = self._redis.get_connection().register_script(_LEASE.encode())
        self._leases: dict[str, _Lease] = {}
        self._leases_lock = threading.Lock()

    def _lease(self, key: str) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            with self._leases_lock:
                lease = self._leases.setdefault(key, _Lease())
        return lease

    def _take(self, item: RateLimitItem, key: str) -> tuple[bool, Window]:
        """One entry from this process's lease, or a new lease from Redis.

        The lock is held across the round trip: the request threads of one tenant wait for the
        one taking a lease and then take from it, instead of each making the round trip that
        leases are there to save (waiting on a lock costs no CPU; the lease is sized for all of
        them). The price: if Redis stalls, that tenant's intake threads queue behind one call
        rather than wait side by side; other tenants have their own locks.
        """
        lease = self._lease(key)
        expiry = item.get_expiry()
        with lease.lock:
            now = time.time()
            if lease.left > 0 and now < lease.taken_at + LEASE_LIFE:
                lease.left -= 1
                return True, lease.window(item)
            size = lease.next_size(now, lease_cap(item))
            giveback, stamp = lease.left, lease.stamp
            # Whatever happens below, these entries are given back at most once.
            lease.left, lease.granted, lease.stamp = 0, 0, ""
            life = LEASE_LIFE if size > 1 else 0
            args = [now, item.amount, expiry, size, life, giveback, stamp]
            granted, oldest, count, lease.stamp = self._script([key], args)
            lease.size, lease.granted, lease.taken_at = size, int(granted), now
            lease.used, lease.left = int(count), max(0, int(granted) - 1)
            lease.reset_at = int(float(oldest) + expiry + 1)
            return lease.granted > 0, lease.window(item)

    def _hit_one(self, item: RateLimitItem, tenant_key: str) -> tuple[bool, Window]:
        key = item.key_for(_PREFIX, tenant_key, SCOPE)
        if self._redis is not None:
            return self._take(item, self._redis.prefixed_key(key))
        expiry = item.get_expiry()
        acquired = self._strategy.hit(item, _PREFIX, tenant_key, SCOPE)
        start, used = self._window.get_moving_window(key, item.amount, expiry)
        return bool(acquired), Window(item, max(0, item.amount - used), int(start + expiry + 1))

    def hit(self, tenant_key: str, spec: str) -> tuple[bool, Window] | None:
        """Count one request against every limit in `spec`; the breached or first limit."""
        first = None
        for item in _items(spec):
            acquired, window = self._hit_one(item, tenant_key)
            if not acquired:
                return False, window
            first = first or window
        return (True, first) if first is not None else None


def configure(app: Flask, settings: Settings) -> None:
    app.extensions[KEY] = IntakeLimiter(settings.limiter_storage_url, settings.rate_limit)
    app.after_request(_headers)


def check_intake() -> None:
    """Count one intake request for `g.tenant`; raises `TooManyRequests` (429) when over."""
    limiter: IntakeLimiter = current_app.extensions[KEY]
    spec = g.get("tenant_rate_limit") or limiter.default
    try:
        outcome = limiter.hit(f"tenant:{g.tenant.id}", spec)
    except Exception:
        log.exception("rate limit store failed; letting the request through")
        return
    if outcome is None:
        return
    acquired, window = outcome
    g.rate_limit_window = window
    if not acquired:
        log.info("ratelimit %s (tenant:%s) exceeded", window.limit, g.tenant.id)
        raise TooManyRequests(description=str(window.limit))


def _headers(response: Response) -> Response:
    window: Window | None = g.get("rate_limit_window")
    if window is None:
        return response
    reset_at = window.reset_at
    response.headers["X-RateLimit-Limit"] = str(window.limit.amount)
    response.headers["X-RateLimit-Remaining"] = str(window.remaining)
    response.headers["X-RateLimit-Reset"] = str(reset_at)
    if response.status_code == 429:
        # Only a refusal waits for the window. Flask-Limiter put the window's reset on every
        # answer, so a 503 for a storage or queue outage told clients to wait up to a minute
        # when its own 5 s was meant, and a 202 carried a Retry-After it had no use for.
        response.headers["Retry-After"] = str(int(reset_at - time.time()))
    return response
