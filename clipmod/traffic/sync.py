"""Keeping the traffic store in step with SQL: append what the traffic log says is new.

Why a sync step and not a write in the worker: the worker's transaction is the source of truth,
and a file append beside it can neither commit nor roll back with it (a crash between the two
leaves them apart); several workers on several machines would have to coordinate appends to
shared files; and the worker's write step is being rewritten. Instead every embedding insert
logs a monotonic `seq` (a trigger, migration 0006), and whoever reads the store first syncs it:
one query for `seq > watermark`, usually returning nothing.

A `seq` is assigned at insert but becomes visible at commit, so on PostgreSQL a lower seq can
appear after a higher one was read. Each gap below the watermark is remembered as a hole and
asked for again on every sync until it appears, or until `HOLE_TTL_S` says its transaction
rolled back. SQLite has one writer at a time and never reuses a seq (AUTOINCREMENT), so gaps
do not happen there.

Deleting an embedding (an item's deletion, the retention purge, any path) logs a row with
`deleted` set (migration 0008). The sync replays the log in `seq` order: a deletion tombstones
every row of that item already in the store (`segments`: `g<N>.dead`), and an insert that a
later deletion in the same read cancels is not appended at all. Readers leave tombstoned rows
out; a rebuild writes only live rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from clipmod import embeddings
from clipmod.errors import ClipmodError
from clipmod.models import Item, ItemEmbedding, TrafficLog
from clipmod.traffic.ids import WIDTH, ItemIds, as_bytes, occurrences
from clipmod.traffic.segments import (
    ITEM_DTYPE,
    Batch,
    Columns,
    Manifest,
    SegmentFiles,
    StoreCorrupt,
)

log = logging.getLogger(__name__)

HOLE_TTL_S = 900.0  # far longer than any write transaction of a batch
MAX_HOLES = 5_000
_CHUNK = 20_000  # rows per fetch and per append
Progress = Callable[[int], None]


@dataclass(frozen=True)
class SyncReport:
    appended: int
    items: int
    rebuilt: bool
    reason: str | None
    seconds: float
    holes: int
    deleted: int = 0  # rows tombstoned by this sync

    def to_dict(self) -> dict[str, Any]:
        return {
            "appended": self.appended,
            "items": self.items,
            "rebuilt": self.rebuilt,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "holes": self.holes,
            "deleted": self.deleted,
        }


class TrafficStore:
    """One model revision's stored embeddings as memory-mapped columns (see `segments`)."""

    def __init__(self, root: Path, revision: str):
        self.files = SegmentFiles(root, revision)
        self.revision = revision
        self._ids: tuple[tuple[int, int, int], ItemIds] | None = None

    def item_ids(self, cols: Columns) -> ItemIds:
        """The ids of the live (not deleted) items of `cols`, with their lookup index kept
        while the store stays the same: a long-lived process (the API) then hashes a million
        ids once, not per backtest."""
        key = (cols.manifest.generation, len(cols.ids), len(cols.dead))
        if self._ids is None or self._ids[0] != key:
            live = cols.live()
            self._ids = (key, ItemIds(cols.ids if live is None else cols.ids[live]))
        return self._ids[1]

    def read(self, session: Session, progress: Progress | None = None) -> Columns:
        """Sync, then map the columns; a store found corrupt is rebuilt, never served."""
        self.sync(session, progress)
        try:
            return self.files.open(self._manifest())
        except StoreCorrupt as exc:
            self.rebuild(session, reason=exc.message, progress=progress)
            return self.files.open(self._manifest())

    def _manifest(self) -> Manifest:
        manifest = self.files.read_manifest()
        if manifest is None:
            raise StoreCorrupt(f"{self.files.manifest_path} disappeared")
        return manifest

    def sync(self, session: Session, progress: Progress | None = None) -> SyncReport:
        started = time.perf_counter()
        try:
            manifest = self.files.read_manifest()
            if manifest is not None:
                self.files.verify(manifest)
        except StoreCorrupt as exc:
            log.warning("traffic store %s: %s; rebuilding from SQL", self.revision, exc.message)
            return self.rebuild(session, reason=exc.message, progress=progress)
        if manifest is None:
            return self.rebuild(session, reason="no store yet", progress=progress)
        if not self._has_news(session, manifest):
            return SyncReport(0, _live(manifest), False, None, 0.0, len(manifest.holes))
        with self.files.locked():
            manifest = self.files.read_manifest() or manifest
            before, dead = manifest.rows["ids"], manifest.dead
            self._append_new(session, manifest, progress)
            self.files.write_manifest(manifest)
        return SyncReport(
            manifest.rows["ids"] - before,
            _live(manifest),
            False,
            None,
            time.perf_counter() - started,
            len(manifest.holes),
            manifest.dead - dead,
        )

    def rebuild(
        self, session: Session, *, reason: str = "requested", progress: Progress | None = None
    ) -> SyncReport:
        """Write a fresh generation from SQL and switch to it (`clipmod traffic rebuild`)."""
        started = time.perf_counter()
        with self.files.locked():
            try:
                old = self.files.read_manifest()
            except StoreCorrupt:
                old = None
            generation = max((old.generation if old else 0) + 1, self._highest_generation() + 1)
            self.files.remove_generation(generation)  # leftovers of a rebuild that crashed
            manifest = Manifest(self.revision, 0, generation=generation)
            self._append_new(session, manifest, progress, fresh=True)
            self.files.write_manifest(manifest)
            for stale in range(1, generation):
                self.files.remove_generation(stale)
        log.info(
            "traffic store %s rebuilt (%s): %d items in %.1f s",
            self.revision,
            reason,
            _live(manifest),
            time.perf_counter() - started,
        )
        return SyncReport(
            manifest.rows["ids"],
            _live(manifest),
            True,
            reason,
            time.perf_counter() - started,
            len(manifest.holes),
            manifest.dead,
        )

    def verify(self, session: Session) -> list[str]:
        """Everything a reader trusts, checked in full: every CRC (not only once per process),
        and the item ids against SQL's. Problems found are described, not repaired."""
        problems = []
        try:
            manifest = self.files.read_manifest()
            if manifest is None:
                return ["no store yet"]
            self.files.verify(manifest, force=True)
        except StoreCorrupt as exc:
            return [exc.message]
        self.sync(session)
        cols = self.files.open(self._manifest())
        live = cols.live()
        stored = np.sort(np.asarray(cols.ids if live is None else cols.ids[live]))
        wanted = np.sort(
            as_bytes(
                list(
                    session.scalars(
                        select(ItemEmbedding.item_id).where(
                            ItemEmbedding.model_revision == self.revision
                        )
                    )
                )
            )
        )
        if len(np.unique(stored)) != len(stored):
            problems.append("the store holds an item twice")
        missing = np.setdiff1d(wanted, stored)
        extra = np.setdiff1d(stored, wanted)
        if len(missing) or len(extra):
            problems.append(
                f"{len(missing)} items stored in SQL are not in the store and {len(extra)} in "
                "the store are no longer in SQL"
            )
        return problems

    def status(self) -> dict[str, Any]:
        manifest = self.files.read_manifest()
        if manifest is None:
            return {"revision": self.revision, "exists": False}
        return {
            "revision": self.revision,
            "exists": True,
            "path": str(self.files.dir),
            "generation": manifest.generation,
            "dim": manifest.dim,
            "items": _live(manifest),
            "deleted": manifest.dead,
            "image_rows": manifest.rows["image"],
            "text_rows": manifest.rows["text"],
            "segments": len(manifest.segments),
            "watermark": manifest.watermark,
            "holes": len(manifest.holes),
            "bytes": sum(
                p.stat().st_size for p in self.files.dir.glob(f"g{manifest.generation}.*")
            ),
        }

    def _highest_generation(self) -> int:
        gens = [int(p.name[1:].split(".")[0]) for p in self.files.dir.glob("g*.ids")]
        return max(gens, default=0)

    def _wanted(self, manifest: Manifest) -> Any:
        cond = TrafficLog.seq > manifest.watermark
        if manifest.holes:
            cond = or_(cond, TrafficLog.seq.in_(sorted(manifest.holes)))
        return cond

    def _has_news(self, session: Session, manifest: Manifest) -> bool:
        return (
            session.scalar(select(TrafficLog.seq).where(self._wanted(manifest)).limit(1))
            is not None
        )

    def _append_new(
        self,
        session: Session,
        manifest: Manifest,
        progress: Progress | None,
        *,
        fresh: bool = False,
    ) -> None:
        """One statement (one consistent snapshot) returns every log row past the watermark or
        in a hole; rows of this revision whose item still has its embedding carry it, others
        only their seq (and, for deletions, the item). `fresh`: an empty store being rebuilt."""
        stmt = (
            select(
                TrafficLog.seq,
                ItemEmbedding.item_id,
                Item.tenant_id,
                Item.created_at,
                ItemEmbedding.dim,
                ItemEmbedding.image,
                ItemEmbedding.text,
                TrafficLog.deleted,
                TrafficLog.item_id,
                TrafficLog.model_revision,
            )
            .outerjoin(
                ItemEmbedding,
                and_(
                    ItemEmbedding.item_id == TrafficLog.item_id,
                    ItemEmbedding.model_revision == TrafficLog.model_revision,
                    TrafficLog.model_revision == self.revision,
                ),
            )
            .outerjoin(Item, Item.id == ItemEmbedding.item_id)
            .where(self._wanted(manifest))
            .order_by(TrafficLog.seq)
        )
        seen: list[int] = []
        for part in session.connection().execute(stmt).partitions(_CHUNK):
            seen.extend(row[0] for row in part)
            # The last deletion of each item in this part, by position in the part.
            last_gone = {
                row[8]: k for k, row in enumerate(part) if row[7] and row[9] == self.revision
            }
            rows = [
                row
                for k, row in enumerate(part)
                if not row[7] and row[1] is not None and last_gone.get(row[1], -1) < k
            ]
            if last_gone:
                # Rebuilding, only an item that still has an embedding (stored again after its
                # deletion) can be in the store already: the others' inserts joined nothing.
                gone = [i for i, k in last_gone.items() if not fresh or part[k][1] is not None]
                self._tombstone(manifest, gone)
            if rows:
                self.files.append(manifest, _batch(rows, manifest))
            if progress is not None:
                progress(len(rows))
        _advance(manifest, np.asarray(seen, dtype=np.int64))

    def _tombstone(self, manifest: Manifest, item_ids: list[str]) -> None:
        """Tombstone every live row of these items among the rows written so far."""
        n = manifest.rows["ids"]
        if not item_ids or not n:
            return
        path = self.files.path(manifest.generation, "ids")
        raw = np.memmap(path, dtype=f"S{WIDTH}", mode="r", shape=(n,))
        rows = occurrences(raw, item_ids)
        if len(rows) and manifest.dead:
            rows = np.setdiff1d(rows, self.files.dead_rows(manifest), assume_unique=True)
        self.files.tombstone(manifest, rows)


def _live(manifest: Manifest) -> int:
    return manifest.rows["ids"] - manifest.dead


def _batch(rows: list[Any], manifest: Manifest) -> Batch:
    dims = {int(r[4]) for r in rows}
    if manifest.dim == 0 and manifest.rows["ids"] == 0:
        manifest.dim = min(dims)
    if dims != {manifest.dim}:
        raise ClipmodError(
            f"stored embeddings for revision {manifest.revision} have mixed sizes "
            f"{sorted(dims | {manifest.dim})}",
            code="mixed_embedding_dims",
        )
    dim = manifest.dim
    items = np.zeros(len(rows), dtype=ITEM_DTYPE)
    items["tenant"] = [r[2] for r in rows]
    items["windows"] = [len(r[6]) // (2 * dim) if r[6] else 0 for r in rows]
    items["created_us"] = [_micros(r[3]) for r in rows]
    has_image = [k for k, r in enumerate(rows) if r[5] is not None]
    return Batch(
        ids=as_bytes([r[1] for r in rows]).astype(f"S{WIDTH}"),
        items=items,
        image=embeddings.rows(b"".join(rows[k][5] for k in has_image), dim),
        image_items=np.asarray(has_image, dtype=np.int64),
        text=embeddings.rows(b"".join(r[6] for r in rows if r[6]), dim),
    )


def _micros(moment: datetime) -> int:
    """SQLite hands back naive datetimes; every timestamp we write is UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1_000_000)


def _advance(manifest: Manifest, seen: np.ndarray) -> None:
    """Move the watermark past what was read; gaps become holes, found holes are closed."""
    now = time.time()
    for seq in seen[seen <= manifest.watermark].tolist():
        manifest.holes.pop(int(seq), None)
    fresh = seen[seen > manifest.watermark]
    if len(fresh):
        top = int(fresh.max())
        span = np.arange(manifest.watermark + 1, top + 1, dtype=np.int64)
        for gap in np.setdiff1d(span, fresh, assume_unique=True)[-MAX_HOLES:].tolist():
            manifest.holes[int(gap)] = now
        manifest.watermark = top
    expired = [s for s, t in manifest.holes.items() if now - t > HOLE_TTL_S]
    for seq in expired:
        del manifest.holes[seq]
    if len(manifest.holes) > MAX_HOLES:
        for seq in sorted(manifest.holes)[: len(manifest.holes) - MAX_HOLES]:
            del manifest.holes[seq]
