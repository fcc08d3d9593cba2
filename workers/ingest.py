"""The fetch step of the batch pipeline: items that name an `image_url` get their bytes here.

It runs first in `Scorer._prepare`, before decoding, and turns a URL item into an ordinary
image item: fetch (SSRF-safe, `clipmod.fetch`) → store the blob → record `image_sha256` and the
image's format and size on the row → set it on the work item, so decoding finds the blob as it
would an upload's. A refused or failed fetch fails that item only, with its `url_*` code. An
item fetched once keeps its blob, so a retried batch does not fetch again.

Fetches are network-bound, so they run on their own small thread pool (not the decoders'),
all of a batch's at once; the batch waits at most `CLIPMOD_FETCH_TOTAL_TIMEOUT_S` for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.fetch import FetchRules, fetch_image
from clipmod.models import Item, ItemStatus
from clipmod.settings import Settings
from clipmod.storage import BlobStore

log = logging.getLogger(__name__)

FETCH_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class Fetchable(Protocol):
    id: str
    image_url: str | None
    image_sha256: str | None
    error: ClipmodError | None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch")
        return _pool


def fetch_one(
    w: Fetchable, rules: FetchRules, blobs: BlobStore, sessions: sessionmaker[Session]
) -> None:
    assert w.image_url is not None
    try:
        fetched = fetch_image(w.image_url, rules)
    except ClipmodError as exc:
        log.info("item %s: url refused: %s", w.id, exc.code)
        w.error = exc
        return
    except Exception as exc:  # a hostile server is the item's problem, never its batch's
        log.exception("item %s: fetching its url failed unexpectedly", w.id)
        w.error = ClipmodError(f"fetch failed ({type(exc).__name__})", code="url_unreachable")
        return
    digest = blobs.put(fetched.data)
    with transaction(sessions) as session:
        session.execute(
            update(Item)
            .where(Item.id == w.id, Item.status != ItemStatus.DELETED)
            .values(
                image_sha256=digest,
                image_format=fetched.info.format,
                image_width=fetched.info.width,
                image_height=fetched.info.height,
            )
        )
    blobs.ensure(fetched.data, digest)  # after the commit: see `BlobStore.remove_unless`
    w.image_sha256 = digest


def fetch_urls(
    work: Sequence[Fetchable],
    settings: Settings,
    blobs: BlobStore,
    sessions: sessionmaker[Session],
) -> None:
    todo = [w for w in work if w.image_url and not w.image_sha256 and w.error is None]
    if todo:
        rules = FetchRules.from_settings(settings)
        list(_executor().map(lambda w: fetch_one(w, rules, blobs, sessions), todo))
