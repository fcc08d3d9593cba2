"""Content-addressed blob storage on a filesystem path.

Bytes are stored under their sha256, so identical uploads share one file and an item row can
never point at bytes that changed underneath it. Writes go to a temporary file first and
are renamed into place, so a crash never leaves a half-written blob under a valid name. In
production the directory is a volume shared by API replicas and workers.
"""

from __future__ import annotations

import enum
import hashlib
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# hashlib lets other threads run while it hashes this many bytes or more (CPython's
# HASHLIB_GIL_MINSIZE), ...
_HASHLIB_UNLOCKS_AT = 2048
# ... which pays when the hash takes longer than handing the GIL over and back (~20-40 µs on a
# busy 8-thread API process, about what 64 KiB takes to hash).
_HASH_HOLDING_GIL_UP_TO = 64 * 1024


def address(data: bytes) -> str:
    """A blob's name: the hex sha256 of its bytes.

    Why not just `hashlib.sha256(data)`: for 2 KiB or more it releases the GIL, and on the API's
    request threads under load every release is a hand-off to another thread and back. For a
    small image (a 12 kB thumbnail hashes in ~6 µs) the hand-off costs several times the hash,
    so up to 64 KiB the bytes go in pieces below hashlib's threshold, which keep the GIL.
    Larger images are hashed in one call, with the GIL released, as before.
    """
    if len(data) > _HASH_HOLDING_GIL_UP_TO:
        return hashlib.sha256(data).hexdigest()
    hasher = hashlib.sha256()
    view = memoryview(data)
    step = _HASHLIB_UNLOCKS_AT - 1
    for start in range(0, len(view), step):
        hasher.update(view[start : start + step])
    return hasher.hexdigest()


# A write in progress (renamed to the digest when complete), and a blob moved aside to be
# deleted (`remove_unless`): `.del-<digest>-<32 hex>`. A crash leaves either behind, for the
# sweep (`clipmod.blobsweep`).
TEMP_PREFIX = ".tmp-"
ASIDE_PREFIX = ".del-"
_DIGEST_LEN = 64


class FileKind(enum.StrEnum):
    BLOB = "blob"
    TEMP = "temp"
    ASIDE = "aside"


@dataclass(frozen=True)
class StoredFile:
    """A file `BlobStore.scan` found; `digest` is None for a temporary write."""

    path: str
    kind: FileKind
    digest: str | None
    mtime: float


def _classify(name: str) -> tuple[FileKind, str | None] | None:
    if name.startswith(TEMP_PREFIX):
        return FileKind.TEMP, None
    if name.startswith(ASIDE_PREFIX):
        digest = name[len(ASIDE_PREFIX) : len(ASIDE_PREFIX) + _DIGEST_LEN]
        return (FileKind.ASIDE, digest) if _is_digest(digest) else None
    return (FileKind.BLOB, name) if _is_digest(name) else None


def _is_digest(name: str) -> bool:
    return len(name) == _DIGEST_LEN and all(c in "0123456789abcdef" for c in name)


# As `tempfile.mkstemp` opens: private to this user, never an existing file, not inherited.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create_beside(target: str) -> tuple[int, str]:
    """A new, empty temporary file in `target`'s folder (made if missing), open for writing.

    Why not `tempfile.mkstemp` + `os.fdopen` + `os.makedirs`: every upload is a new blob
    written in the API's 8-thread server, and each system call releases the GIL. Those made ten
    calls where four do (create, write, close, rename), and in the 8-thread server under load
    each release is a thread hand-off: storing the blob cost an upload ~0.35 ms of server CPU,
    a quarter of intake (`bench.intake`, docs/benchmarks.md). The folder is made only when the
    create finds it missing; the name comes from the process's own random generator, which
    needs no system call (it is reseeded in a forked child), and `O_EXCL` refuses the rare
    name that is taken.
    """
    folder = os.path.dirname(target)
    while True:
        tmp = os.path.join(folder, f".tmp-{random.getrandbits(64):016x}")
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._root = str(self.root)

    def path(self, digest: str) -> Path:
        return Path(self._file(digest))

    def _file(self, digest: str) -> str:
        # Strings, not pathlib: intake asks twice per upload, and three `/` joins and a
        # Path.exists cost more than the stat itself.
        return os.path.join(self._root, digest[:2], digest[2:4], digest)

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Write `data` under its sha256 and return it; `digest` is that sha256 when the caller
        already computed it.

        It writes even when a file of that name exists. A new upload is the common case, and
        asking first was one more system call on its path, so one more GIL hand-off among the
        API's threads. A twin of stored bytes is simply written again, atomically: the
        rename swaps one whole copy of the same bytes for another, and a reader that has the
        old file open keeps reading it.

        Intake hashes an upload once, before its row is inserted (the row names the blob); a
        wrong `digest` would file bytes under another name, so only pass one computed from
        these very bytes.
        """
        digest = digest or address(data)
        target = self._file(digest)
        fd, tmp = _create_beside(target)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def ensure(self, data: bytes, digest: str) -> None:
        """Put `data` back only if its file is missing: the second put that follows a commit
        (see `remove_unless`), where the bytes were written a moment ago and are nearly always
        still there, so one `stat` does."""
        if not os.path.exists(self._file(digest)):
            self.put(data, digest)

    def get(self, digest: str) -> bytes:
        # A plain open: a worker reads every image of its batch here, and building a Path
        # first made each read a third slower (8.2 -> 10.8 µs for 60 kB).
        with open(self._file(digest), "rb") as fh:
            return fh.read()

    def remove_unless(self, digest: str, referenced: Callable[[], bool]) -> bool:
        """Delete a blob that no item uses; True if it was removed.

        Safe against a concurrent upload of the same bytes, whose `put` may have written the
        file just before it is moved: the blob is first renamed aside, then the references are
        checked again and the file is put back if one appeared. Whoever commits a row naming a
        blob after that second check calls `ensure` after its commit (`api.newitems`,
        `workers.ingest`, `clipmod.banks.uploads`), so no committed row is left pointing at a
        missing blob.
        """
        if referenced():
            return False
        path = self.path(digest)
        aside = path.with_name(f"{ASIDE_PREFIX}{digest}-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            if referenced():
                os.replace(aside, path)
                return False
            aside.unlink()
        except FileNotFoundError:
            return False  # a sweep finished the aside file first, deciding from the same rows
        return True

    def scan(self) -> Iterator[StoredFile]:
        """Every blob, temporary write and aside file in the store, one folder at a time.

        `os.scandir` folder by folder, so a store of millions of files is never listed whole;
        the order is the file system's. A file that vanishes while it is looked at (another
        sweep, a deletion) is skipped, and so is anything the store did not write.
        """
        for first in _folders(self._root):
            for second in _folders(first):
                try:
                    entries = list(os.scandir(second))
                except FileNotFoundError:
                    continue
                for entry in entries:
                    found = _classify(entry.name)
                    if found is None:
                        continue
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        mtime = entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    yield StoredFile(entry.path, found[0], found[1], mtime)

    def restore(self, aside: StoredFile) -> None:
        """Put a blob moved aside back under its digest. Its bytes are the digest's, so this is
        right even if the blob was stored again meanwhile: one copy replaces another."""
        if aside.kind is not FileKind.ASIDE or aside.digest is None:
            raise ValueError(f"not a blob moved aside: {aside.path}")
        os.replace(aside.path, self._file(aside.digest))


def _folders(path: str) -> list[str]:
    """The store's two-hex-digit shard folders in `path` (none if it is missing)."""
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
