"""The API key cache's data: kept apart from `api.auth` so `api.services` can hold one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    tenant_id: int
    tenant_name: str
    is_admin: bool


class KeyCache:
    """Presented key → identity, for `ttl_s` seconds; bounded so it cannot grow without end."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Identity | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, identity: Identity) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.ttl_s, identity)
