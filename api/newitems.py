"""Writing accepted uploads: their blobs, one statement and one wake-up for a batch of them.

`api.items.accept` hands each new upload to the app's `GroupCommit` (see `api.groupcommit` for
why uploads are batched) and this module writes a batch:
- The blobs first, then the rows, so a committed row never points at a missing blob; after the
  commit each blob is checked once more, because a concurrent deletion of the same bytes may
  have taken the file in between (`BlobStore.remove_unless`). The group's leader does this for
  everyone: each of those system calls releases the GIL, and made on eight request threads at
  once each release was a hand-off to another thread and back. With the others parked until
  their batch is written, the leader mostly gets the GIL straight back: intake made ~13 context
  switches fewer per upload and took ~13% less server CPU (`bench.intake`, docs/benchmarks.md).
  A store that refuses a blob fails only that upload (a retryable 503).
- One autocommitted INSERT: a single statement is atomic, so BEGIN and COMMIT would only add two
  round trips.
- `ON CONFLICT DO NOTHING ... RETURNING id` instead of an IntegrityError: a taken external_id
  is reported for its own upload (which `accept` answers as a replay or a conflict), and its
  batch-mates still land.
- Any other error of a batch is retried one upload at a time, so a row the database refuses
  for its content fails only its own request. A lost connection is not: every upload of the
  batch would wait for the same dead database again.
- The wake-up is sent after the insert (a worker that hears of an uncommitted row finds
  nothing); if the broker fails, each stored upload gets its own 503 naming only its own item.
- The database connection and the doorbell's are kept between batches (`Writer`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import psycopg
from celery import Celery
from prometheus_client import Histogram
from sqlalchemy import Engine, PoolProxiedConnection, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from clipmod import bulk
from clipmod.errors import ClipmodError, StorageUnavailable
from clipmod.models import Item, ItemStatus
from clipmod.models.base import utcnow
from clipmod.queue import OwnDoorbell, enqueue_scoring, queue_unavailable
from clipmod.storage import BlobStore

log = logging.getLogger(__name__)

GROUP = Histogram(
    "clipmod_intake_group_uploads",
    "Uploads written by one intake INSERT: how much the group commit batches at this load.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


@dataclass(frozen=True)
class NewItem:
    """The columns intake sets; `status`, `attempts` and the timestamps take their defaults."""

    id: str
    tenant_id: int
    external_id: str | None
    text: str | None
    metadata: dict[str, Any] | None
    content_hash: str
    image_sha256: str | None
    image_url: str | None
    image_format: str | None
    image_width: int | None
    image_height: int | None


# A group's blob operations run one after another on its leader while that is quick: on a local
# disk a put takes ~40 µs, a group of 8 ~0.3 ms. On a network file system (the volume that API
# replicas share) one takes milliseconds, and the leader would hold every upload of its group
# for their sum; past this estimate for the group they run in parallel threads instead.
SERIAL_BLOB_OPS_UP_TO_S = 0.002
BLOB_THREADS = 8


@dataclass(frozen=True)
class NewUpload:
    """One job of the group commit: the row, and the image bytes its `image_sha256` names."""

    item: NewItem
    image: bytes | None = None


Answer = bool | BaseException
_FIELDS = tuple(f.name for f in dataclasses.fields(NewItem))
_TABLE = cast("Table", Item.__table__)
# SQLite (the embedded default, one API process): SQLAlchemy's multi-row VALUES, with the
# columns' own defaults.
_SQLITE_INSERT = sqlite.insert(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.id)
# PostgreSQL: the batch as one JSON array of rows (`clipmod.bulk`), so the statement's text is
# the same for every batch size and psycopg adapts one string. A multi-row VALUES is new SQL for
# each batch size, at 11 parameters a row soon past psycopg's statement cache; one array per
# column cost more in psycopg's list adaptation than the JSON encoding, which runs in C. That
# path skips SQLAlchemy, so the columns intake leaves to their Python-side defaults are set
# here (the timestamps to the batch's own "now").
_PG_DEFAULTS: dict[str, Any] = {
    "status": ItemStatus.QUEUED.value,
    "attempts": 0,
    "created_at": None,
    "updated_at": None,
}
_PG_INSERT = bulk.statement(_TABLE, (*_FIELDS, *_PG_DEFAULTS), returning="id")


class Writer:
    """Writes a group of uploads (`GroupCommit` calls it), keeping two connections between
    groups: on PostgreSQL one database connection (taken from the pool, then detached), on
    Redis one doorbell connection.

    Why: the group's leader is the only writer at a time (`api.groupcommit`), so one of each is
    enough, and checking them out per group cost an upload 0.05-0.08 ms of the API's ~1.1 ms of
    server CPU (intake/bare +0.02-0.03 in A/B runs, docs/benchmarks.md): SQLAlchemy's
    pool check-out and check-in with the autocommit switch, and redis-py's pool, which looks for
    stray bytes on the socket before every command (one more GIL-releasing syscall). A
    connection an INSERT finds dead is closed and the next group checks out a fresh one, as the
    pool did; redis-py reconnects its own on the next command. The database connection is
    detached from the pool and closed with the writer (a finalizer: the app has no shutdown
    hook).
    """

    def __init__(self, engine: Engine, celery: Celery, blobs: BlobStore):
        self.engine, self.celery, self.blobs = engine, celery, blobs
        self.bell = OwnDoorbell(celery)
        self._pg: PoolProxiedConnection | None = None
        self._close_pg: weakref.finalize[[], Writer] | None = None
        self._blob_op_s = 0.0  # a moving average of one blob operation's seconds
        self._blob_threads: ThreadPoolExecutor | None = None

    def __call__(self, batch: list[NewUpload]) -> list[Answer]:
        """Per upload: True (stored and queued), False (its external_id is taken), or its error."""
        refusals = self._store_all(batch, self.blobs.put)
        answers: dict[str, Answer] = {
            job.item.id: refused
            for job, refused in zip(batch, refusals, strict=True)
            if refused is not None
        }
        inserted, written = self._rows([job.item for job in batch if job.item.id not in answers])
        answers.update(written)
        # Whatever the wake-up did, these rows are there: their blobs must be too.
        stored = [job for job in batch if job.item.id in inserted]
        for job, refused in zip(stored, self._store_all(stored, self.blobs.ensure), strict=True):
            if refused is not None:  # the retry's put restores it, its insert finds a replay
                answers[job.item.id] = refused
        return [answers[job.item.id] for job in batch]

    def _store_all(
        self, jobs: list[NewUpload], write: Callable[[bytes, str], object]
    ) -> list[BaseException | None]:
        """`_store` for each job: one after another while that is quick, else in parallel."""
        images = sum(job.image is not None for job in jobs)
        if images > 1 and self._blob_op_s * images > SERIAL_BLOB_OPS_UP_TO_S:
            if self._blob_threads is None:
                self._blob_threads = ThreadPoolExecutor(BLOB_THREADS, "intake-blobs")
            return list(self._blob_threads.map(partial(self._store, write=write), jobs))
        return [self._store(job, write) for job in jobs]

    def _store(self, job: NewUpload, write: Callable[[bytes, str], object]) -> BaseException | None:
        """The upload's bytes through `write` (`BlobStore.put`, or `ensure` after the commit);
        the 503 to answer if the store refuses them."""
        digest = job.item.image_sha256
        if job.image is None or digest is None:
            return None
        started = time.perf_counter()
        try:
            write(job.image, digest)
        except OSError as exc:
            log.error("blob store unavailable: %s", exc)
            return StorageUnavailable(
                "the image store is unavailable; retry the same request shortly"
            )
        finally:
            self._blob_op_s += (time.perf_counter() - started - self._blob_op_s) * 0.2
        return None

    def _rows(self, items: list[NewItem]) -> tuple[set[str], dict[str, Answer]]:
        """Insert and queue `items`: the ids that went in, and each item's answer."""
        if not items:
            return set(), {}
        try:
            inserted = self._insert(items)
        except (OperationalError, InterfaceError) as exc:
            return set(), {item.id: exc for item in items}
        except Exception as exc:
            if len(items) == 1:
                return set(), {items[0].id: exc}
            inserted, answers = set(), {}
            for item in items:
                went_in, answer = self._rows([item])
                inserted |= went_in
                answers.update(answer)
            return inserted, answers
        GROUP.observe(len(items))
        try:
            enqueue_scoring(self.celery, [i.id for i in items if i.id in inserted], bell=self.bell)
        except ClipmodError:
            return inserted, {
                i.id: queue_unavailable([i.id]) if i.id in inserted else False for i in items
            }
        return inserted, {i.id: i.id in inserted for i in items}

    def _insert(self, batch: list[NewItem]) -> set[str]:
        """The ids that went in; the others met a taken (tenant_id, external_id)."""
        if self.engine.dialect.name == "postgresql":
            return self._insert_postgres(batch)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return set(conn.execute(_SQLITE_INSERT, [vars(job) for job in batch]).scalars())

    def _connection(self) -> PoolProxiedConnection:
        if self._pg is None:
            try:
                conn = self.engine.raw_connection()
            except psycopg.Error as exc:  # as `engine.connect()` would raise it: a 503
                raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc
            conn.detach()  # the writer's own from here: closed when dropped, or with the writer
            conn.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            self._close_pg = weakref.finalize(self, conn.close)
            self._pg = conn
        return self._pg

    def _drop(self) -> None:
        if self._close_pg is not None:
            self._close_pg()
        self._pg = None

    def _insert_postgres(self, batch: list[NewItem]) -> set[str]:
        """On the driver's own cursor: SQLAlchemy's result object for a text statement (its
        column map, built anew on every call) cost as much as the rest of the INSERT. What
        SQLAlchemy would add is kept: errors become its exceptions (the API answers
        `OperationalError` with 503), and a connection the driver found dead is closed, so the
        next group runs on a new one."""
        # Intake has already refused what PostgreSQL's JSON cannot hold (NUL, lone surrogates,
        # NaN: `api.validation`), so these rows always parse.
        now = utcnow()
        defaults = {**_PG_DEFAULTS, "created_at": now, "updated_at": now}
        params = {"rows": bulk.payload([{**vars(job), **defaults} for job in batch])}
        conn = self._connection()
        raw = conn.dbapi_connection
        try:
            with raw.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(_PG_INSERT, params)
                return {row[0] for row in cursor.fetchall()}
        except psycopg.Error as exc:
            gone = self.engine.dialect.is_disconnect(exc, raw, None)  # type: ignore[arg-type]
            if gone:
                self._drop()
            raise DBAPIError.instance(
                _PG_INSERT, params, exc, psycopg.Error, connection_invalidated=gone
            ) from exc
