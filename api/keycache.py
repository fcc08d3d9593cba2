"""The API key cache's data: kept apart from `api.auth` so `api.services` can hold one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from clipmod import keys
from clipmod.models import utcnow


@dataclass(frozen=True)
class Identity:
    tenant_id: int
    tenant_name: str
    rate_limit: str | None
    is_admin: bool
    prefix: str
    scopes: tuple[str, ...]
    revoked_at: datetime | None  # a rotated key's end of grace, in the future when cached


class KeyCache:
    """Presented key → identity, for `ttl_s` seconds; bounded so it cannot grow without end.

    It registers itself with `clipmod.keys`, so revoking or rotating a key in this process
    drops the key here at once instead of after the TTL.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()
        keys.watch_revocations(self)

    def get(self, digest: str) -> Identity | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        identity = entry[1]
        if identity.revoked_at is not None and identity.revoked_at <= utcnow():
            return None  # its rotation grace ended while cached
        return identity

    def put(self, digest: str, identity: Identity) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.ttl_s, identity)

    def forget(self, prefix: str) -> None:
        with self._lock:
            for digest in [d for d, (_, i) in self._entries.items() if i.prefix == prefix]:
                del self._entries[digest]
