"""The blob store's sweep: bytes on disk that no row names, and writes that never finished.

Why: a blob is written before the row that names it is committed (so a committed row never
points at missing bytes), and some of those rows never come: a 503 the client did not retry,
a process killed between the write and the commit, a bank upload that failed after its images
were stored. A crashed write leaves its temporary file, and a crashed deletion the blob it had
moved aside. Each is rare, but nothing else ever removes them, and in a moderation service the
bytes nobody references are often the worst content a platform received: keeping them breaks
the retention promise, not only the disk budget.

Only files older than the grace period are touched. Every `BlobStore.put` writes the file anew,
so the blob of an upload still on its way to the database is always young; an hour is far
longer than any write takes to commit. A blob no row names goes through
`BlobStore.remove_unless`, the path item deletion takes, which checks again after moving the
file aside, and an upload committed after that puts its blob back (`BlobStore.ensure`). A blob
left aside by a crash is put back if a row names it, else removed. So sweeps may run in several
processes at once (each delivery worker runs one) and beside live traffic.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from clipmod.retention import blob_in_use, blobs_in_use
from clipmod.storage import BlobStore, FileKind, StoredFile

# Long enough for any upload between its blob write and its commit; short enough that bytes
# nobody will ever reference leave the disk the same day.
GRACE_S = 3600.0
# Digests looked up in one query.
BATCH = 500


@dataclass
class SweepReport:
    """What one sweep found and did. With `dry_run`, the counts say what it would have done."""

    files: int = 0  # blobs, temporary writes and aside files looked at
    young: int = 0  # left alone: written within the grace period
    in_use: int = 0  # blobs a row names
    removed: int = 0  # blobs no row names, deleted
    temp_removed: int = 0  # writes that never finished
    aside_restored: int = 0  # blobs a crashed deletion had moved aside, put back
    aside_removed: int = 0  # ... and the ones no row names, deleted
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"blob sweep: {self.files} files; {verb} {self.removed} unreferenced blobs, "
            f"{self.temp_removed} unfinished writes, {self.aside_removed} blobs left aside "
            f"(restored {self.aside_restored}); {self.in_use} in use, {self.young} too young"
        )


def sweep(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    *,
    grace_s: float = GRACE_S,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> SweepReport:
    """Remove what the store holds and no row names, older than `grace_s` seconds.

    `progress` is called with 1 for each file looked at (a progress bar's `update`).
    """
    report = SweepReport(dry_run=dry_run)
    cutoff = time.time() - grace_s
    waiting: list[StoredFile] = []
    for found in blobs.scan():
        report.files += 1
        if progress is not None:
            progress(1)
        if found.mtime > cutoff:
            report.young += 1
        elif found.kind is FileKind.TEMP:
            report.temp_removed += _unlink(found.path, dry_run)
        else:
            waiting.append(found)
            if len(waiting) >= BATCH:
                _settle(sessions, blobs, waiting, report)
                waiting = []
    _settle(sessions, blobs, waiting, report)
    return report


def _settle(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    found: list[StoredFile],
    report: SweepReport,
) -> None:
    """One query for a batch of digests, then each file's fate."""
    if not found:
        return
    with sessions() as session:
        named = blobs_in_use(session, {f.digest for f in found if f.digest is not None})
    for f in found:
        digest = f.digest
        assert digest is not None  # blobs and aside files are named by their digest
        if f.kind is FileKind.ASIDE:
            _settle_aside(blobs, f, digest in named, report)
        elif digest in named:
            report.in_use += 1
        elif report.dry_run or blobs.remove_unless(digest, partial(blob_in_use, sessions, digest)):
            report.removed += 1
        else:
            report.in_use += 1  # named since the batch's query, or already gone


def _settle_aside(blobs: BlobStore, aside: StoredFile, named: bool, report: SweepReport) -> None:
    """A blob a deletion moved aside and never finished with: back if a row names it."""
    if not named:
        report.aside_removed += _unlink(aside.path, report.dry_run)
        return
    if not report.dry_run:
        try:
            blobs.restore(aside)
        except FileNotFoundError:
            return  # the deletion, or another sweep, finished with it first
    report.aside_restored += 1


def _unlink(path: str, dry_run: bool) -> int:
    """1 if the file was (or, dry, would be) removed; 0 if it was already gone."""
    if dry_run:
        return 1
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1
