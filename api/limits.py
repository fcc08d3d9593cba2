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
"""

from __future__ import annotations

import functools
import logging
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

# The `limits` library's acquire_moving_window.lua and moving_window.lua in one call: take an
# entry unless the window is full, then find the oldest entry still inside it (the list is
# newest first; a binary search over at most `limit` entries).
_HIT_AND_WINDOW = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local acquired = 0
local entry = redis.call('lindex', KEYS[1], limit - 1)
if not (entry and tonumber(entry) >= now - expiry) then
    redis.call('lpush', KEYS[1], now)
    redis.call('ltrim', KEYS[1], 0, limit - 1)
    redis.call('expire', KEYS[1], expiry)
    acquired = 1
end
local target = now - expiry
local low, high, found = 0, limit - 1, nil
while low <= high do
    local mid = math.floor((low + high) / 2)
    local val = tonumber(redis.call('lindex', KEYS[1], mid))
    if val and val >= target then
        found = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
if found then
    return {acquired, tostring(redis.call('lindex', KEYS[1], found)), found + 1}
end
return {acquired, tostring(now), 0}
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


class IntakeLimiter:
    def __init__(self, storage_url: str, default: str):
        self.default = default
        storage = storage_from_string(storage_url)
        self._strategy = MovingWindowRateLimiter(storage)
        self._window = cast("MovingWindowSupport", storage)
        self._redis = storage if isinstance(storage, RedisStorage) else None
        if self._redis is not None:
            self._script = self._redis.get_connection().register_script(_HIT_AND_WINDOW.encode())

    def _hit_one(self, item: RateLimitItem, tenant_key: str) -> tuple[bool, Window]:
        key = item.key_for(_PREFIX, tenant_key, SCOPE)
        expiry = item.get_expiry()
        if self._redis is not None:
            acquired, oldest, count = self._script(
                [self._redis.prefixed_key(key)], [time.time(), item.amount, expiry]
            )
            start, used = float(oldest), int(count)
        else:
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
    # As Flask-Limiter did: an answer that already says when to retry keeps the later time.
    existing = response.headers.get("Retry-After")
    if existing is not None and existing.isdigit():
        reset_at = max(reset_at, int(time.time()) + int(existing))
    response.headers["Retry-After"] = str(int(reset_at - time.time()))
    return response
