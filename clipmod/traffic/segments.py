"""The store's files: append-only column files per model revision, a manifest, checksums.

Layout under `<data dir>/traffic/<revision>/`: one file per column (`g<N>.ids`, `.items`,
`.image`, `.image_items`, `.text`), each only ever appended to, and `manifest.json`, which says
how many rows of each are committed and holds a CRC-32 per segment (a run of appended rows) of
each column. Readers map exactly the committed prefix of each file with `numpy.memmap`: one
contiguous array per column, no copy, no parsing, whatever the number of appends.

Crash safety: an append writes and fsyncs the data first, then replaces the manifest atomically
(write, fsync, rename), which is the commit. A crash before the rename leaves bytes past the
committed length, which the next append cuts off. A file shorter than the manifest says
(truncated by a crash of the disk, a copy, a person) or a segment whose CRC does not match is
`StoreCorrupt`, and the caller rebuilds from SQL instead of answering from wrong data. Lengths
are checked on every open; CRCs once per process per segment (a full pass over the data, too
slow to repeat on every backtest) and by `clipmod traffic verify`.

Deletions: `g<N>.dead` lists the item rows that were deleted (tombstones, int64 row numbers),
append-only like the columns, with its committed length and CRC-32 in the manifest; readers leave
those rows out (`Columns.live`). The rows' bytes stay in the column files until the next rebuild,
which writes only live rows.

Rebuilding writes a new generation (`g<N+1>.*`) beside the old one and switches the manifest
to it, so readers that mapped the old files keep valid data until they let go of them.
Writers serialise on an exclusive `flock` of `.lock`; readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from clipmod.errors import ClipmodError
from clipmod.traffic.ids import WIDTH

FORMAT = 2  # 2: tombstones (`dead`); a format-1 store predates logged deletions: rebuilt
SEGMENT_ROWS = 131_072  # appends merge into the last segment until it holds this many items
ITEM_DTYPE = np.dtype([("tenant", "<i4"), ("windows", "<i4"), ("created_us", "<i8")])
COLUMNS = ("ids", "items", "image", "image_items", "text")


class StoreCorrupt(ClipmodError):
    code, status = "traffic_store_corrupt", 500


def column_dtype(column: str, dim: int) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype of a column and the shape of one of its rows."""
    if column == "ids":
        return np.dtype(f"S{WIDTH}"), ()
    if column == "items":
        return ITEM_DTYPE, ()
    if column == "image_items":
        return np.dtype("<i8"), ()
    return np.dtype("<f2"), (dim,)


def row_bytes(column: str, dim: int) -> int:
    dtype, shape = column_dtype(column, dim)
    return dtype.itemsize * int(np.prod(shape, dtype=np.int64))


@dataclass
class Manifest:
    revision: str
    dim: int
    generation: int = 1
    watermark: int = 0  # highest traffic_log.seq seen
    holes: dict[int, float] = field(default_factory=dict)  # seq -> when first missed
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    # each: {"rows": {column: [start, count]}, "crc": {column: crc32}}
    segments: list[dict[str, Any]] = field(default_factory=list)
    dead: int = 0  # tombstones committed in `g<N>.dead`
    dead_crc: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "revision": self.revision,
            "dim": self.dim,
            "generation": self.generation,
            "watermark": self.watermark,
            "holes": {str(k): v for k, v in self.holes.items()},
            "rows": self.rows,
            "segments": self.segments,
            "dead": {"rows": self.dead, "crc": self.dead_crc},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise StoreCorrupt(f"manifest format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            revision=str(data["revision"]),
            dim=int(data["dim"]),
            generation=int(data["generation"]),
            watermark=int(data["watermark"]),
            holes={int(k): float(v) for k, v in data["holes"].items()},
            rows={c: int(data["rows"][c]) for c in COLUMNS},
            segments=list(data["segments"]),
            dead=int(data["dead"]["rows"]),
            dead_crc=int(data["dead"]["crc"]),
        )


@dataclass(frozen=True)
class Batch:
    """Rows to append: items in log order, their image rows and text-window rows."""

    ids: npt.NDArray[np.bytes_]
    items: npt.NDArray[np.void]  # ITEM_DTYPE
    image: npt.NDArray[np.float16]
    image_items: npt.NDArray[np.int64]  # local item index of each image row
    text: npt.NDArray[np.float16]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Columns:
    """The committed arrays of one store, memory-mapped read-only."""

    manifest: Manifest
    ids: npt.NDArray[np.bytes_]
    items: npt.NDArray[np.void]
    image: npt.NDArray[np.float16]
    image_items: npt.NDArray[np.int64]
    text: npt.NDArray[np.float16]
    dead: npt.NDArray[np.int64]  # tombstoned item rows

    def live(self) -> npt.NDArray[np.bool_] | None:
        """Which item rows are not deleted; None when none is (the common case: no mask)."""
        if not len(self.dead):
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        keep[self.dead] = False
        return keep


class SegmentFiles:
    """One revision's directory: read the manifest, map the columns, append, switch generation."""

    _verified: ClassVar[set[tuple[str, int, int, str, int, int]]] = set()  # per process

    def __init__(self, root: Path, revision: str):
        self.dir = Path(root) / revision
        self.revision = revision

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def path(self, generation: int, column: str) -> Path:
        return self.dir / f"g{generation}.{column}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read_manifest(self) -> Manifest | None:
        """None when there is no store yet; `StoreCorrupt` when there is one we cannot read."""
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupt(f"{self.manifest_path}: unreadable manifest ({exc})") from None

    def write_manifest(self, manifest: Manifest) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest.to_json(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.manifest_path)
        _fsync_dir(self.dir)

    def _check_lengths(self, manifest: Manifest) -> None:
        for column in (*COLUMNS, "dead"):
            if column == "dead":
                want = manifest.dead * 8
            else:
                want = manifest.rows[column] * row_bytes(column, manifest.dim)
            path = self.path(manifest.generation, column)
            size = path.stat().st_size if path.exists() else 0
            if size < want:
                raise StoreCorrupt(
                    f"{path} holds {max(size, 0)} bytes but the manifest commits {want}: truncated"
                )

    def verify(self, manifest: Manifest, *, force: bool = False) -> None:
        """Lengths always; each segment's CRC unless this process already checked it."""
        self._check_lengths(manifest)
        for column in COLUMNS:
            if not manifest.rows[column]:
                continue
            path = self.path(manifest.generation, column)
            size = row_bytes(column, manifest.dim)
            st = path.stat()
            with open(path, "rb") as fh:
                for seg in manifest.segments:
                    start, count = seg["rows"][column]
                    key = (str(path), st.st_ino, manifest.generation, column, start, count)
                    if not force and key in self._verified:
                        continue
                    fh.seek(start * size)
                    crc = _crc(fh, count * size)
                    if crc != seg["crc"][column]:
                        raise StoreCorrupt(
                            f"{path}: rows {start}..{start + count} fail their checksum"
                        )
                    self._verified.add(key)
        self._verify_dead(manifest, force)

    def _verify_dead(self, manifest: Manifest, force: bool) -> None:
        if not manifest.dead:
            return
        path = self.path(manifest.generation, "dead")
        key = (str(path), path.stat().st_ino, manifest.generation, "dead", 0, manifest.dead)
        if not force and key in self._verified:
            return
        with open(path, "rb") as fh:
            if _crc(fh, manifest.dead * 8) != manifest.dead_crc:
                raise StoreCorrupt(f"{path}: the tombstones fail their checksum")
        dead = self.dead_rows(manifest)
        if int(dead.min()) < 0 or int(dead.max()) >= manifest.rows["ids"]:
            raise StoreCorrupt(f"{path}: a tombstone names a row the store does not hold")
        self._verified.add(key)

    def open(self, manifest: Manifest) -> Columns:
        self.verify(manifest)
        arrays = {c: self._map(manifest, c) for c in COLUMNS}
        return Columns(manifest, **arrays, dead=self.dead_rows(manifest))

    def dead_rows(self, manifest: Manifest) -> npt.NDArray[np.int64]:
        if not manifest.dead:
            return np.zeros(0, dtype=np.int64)
        path = self.path(manifest.generation, "dead")
        return np.fromfile(path, dtype="<i8", count=manifest.dead).astype(np.int64)

    def tombstone(self, manifest: Manifest, rows: npt.NDArray[np.int64]) -> None:
        """Record item `rows` as deleted, after the committed tombstones (in `manifest`, in
        memory, like `append`: the caller commits with `write_manifest`)."""
        if not len(rows):
            return
        raw = np.ascontiguousarray(rows, dtype="<i8").tobytes()
        with open(self.path(manifest.generation, "dead"), "ab") as fh:
            fh.truncate(manifest.dead * 8)
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        manifest.dead_crc = zlib.crc32(raw, manifest.dead_crc)
        manifest.dead += len(rows)

    def _map(self, manifest: Manifest, column: str) -> Any:
        dtype, shape = column_dtype(column, manifest.dim)
        rows = manifest.rows[column]
        if rows == 0:
            return np.zeros((0, *shape), dtype=dtype)
        path = self.path(manifest.generation, column)
        return np.memmap(path, dtype=dtype, mode="r", shape=(rows, *shape))

    def append(self, manifest: Manifest, batch: Batch) -> None:
        """Append `batch` after the committed rows (cutting off any uncommitted tail) and record
        it in `manifest` (in memory: the caller commits with `write_manifest`)."""
        base = manifest.rows["ids"]
        data = {
            "ids": np.ascontiguousarray(batch.ids, dtype=f"S{WIDTH}"),
            "items": np.ascontiguousarray(batch.items, dtype=ITEM_DTYPE),
            "image": np.ascontiguousarray(batch.image, dtype="<f2"),
            "image_items": np.ascontiguousarray(batch.image_items + base, dtype="<i8"),
            "text": np.ascontiguousarray(batch.text, dtype="<f2"),
        }
        last = manifest.segments[-1] if manifest.segments else None
        merge = last is not None and last["rows"]["ids"][1] < SEGMENT_ROWS
        seg: dict[str, Any] = last if merge and last else {"rows": {}, "crc": {}}
        for column, array in data.items():
            path = self.path(manifest.generation, column)
            committed = manifest.rows[column] * row_bytes(column, manifest.dim)
            raw = array.tobytes()
            with open(path, "ab") as fh:
                fh.truncate(committed)
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            if merge:
                seg["rows"][column][1] += len(array)
                seg["crc"][column] = zlib.crc32(raw, seg["crc"][column])
            else:
                seg["rows"][column] = [manifest.rows[column], len(array)]
                seg["crc"][column] = zlib.crc32(raw)
            manifest.rows[column] += len(array)
        if not merge:
            manifest.segments.append(seg)

    def remove_generation(self, generation: int) -> None:
        for column in (*COLUMNS, "dead"):
            self.path(generation, column).unlink(missing_ok=True)


def _crc(fh: Any, length: int, chunk: int = 16 * 1024 * 1024) -> int:
    crc = 0
    while length > 0:
        data = fh.read(min(chunk, length))
        if not data:
            return -1
        crc = zlib.crc32(data, crc)
        length -= len(data)
    return crc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
