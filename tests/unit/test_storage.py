"""BlobStore.put: a digest the caller already has (intake hashes an upload once), and the write
itself (create beside the target, write, rename), which intake runs for every upload; `ensure`,
the check after intake's commit; a deletion that meets a sweep."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from clipmod import storage
from clipmod.storage import ASIDE_PREFIX, BlobStore


def test_put_with_a_known_digest_files_the_bytes_under_it_without_hashing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"image bytes"
    digest = hashlib.sha256(data).hexdigest()

    def refuse(*_args: object) -> None:
        raise AssertionError("put hashed bytes whose digest it was given")

    monkeypatch.setattr(storage.hashlib, "sha256", refuse)
    blobs = BlobStore(tmp_path)
    assert blobs.put(data, digest) == digest
    assert blobs.get(digest) == data
    assert blobs.put(data, digest) == digest  # a twin upload writes the same file again
    assert blobs.get(digest) == data
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [digest]


def test_ensure_writes_only_a_missing_blob(tmp_path: Path) -> None:
    data = b"image bytes"
    blobs = BlobStore(tmp_path)
    digest = blobs.put(data)
    inode = blobs.path(digest).stat().st_ino
    blobs.ensure(data, digest)
    assert blobs.path(digest).stat().st_ino == inode  # present: left alone, not rewritten
    blobs.path(digest).unlink()  # as a concurrent delete would (`remove_unless`)
    blobs.ensure(data, digest)
    assert blobs.get(digest) == data
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [digest]


def test_put_without_a_digest_still_addresses_by_sha256(tmp_path: Path) -> None:
    data = b"other bytes"
    digest = BlobStore(tmp_path).put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert BlobStore(tmp_path).path(digest).read_bytes() == data


def test_put_makes_a_missing_folder_and_leaves_only_the_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "new-store")
    digest = blobs.put(b"first bytes in their folder")
    assert blobs.path(digest).read_bytes() == b"first bytes in their folder"
    assert [p.name for p in (tmp_path / "new-store").rglob("*") if p.is_file()] == [digest]


def test_put_writes_a_large_blob_whole_and_private(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)  # more than one write() may take on some systems
    blobs = BlobStore(tmp_path)
    path = blobs.path(blobs.put(data))
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # as tempfile.mkstemp made them


def test_put_takes_another_temporary_name_when_one_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"bytes"
    digest = hashlib.sha256(data).hexdigest()
    folder = BlobStore(tmp_path).path(digest).parent
    folder.mkdir(parents=True)
    (folder / f".tmp-{1:016x}").write_bytes(b"another writer's")
    names = iter([1, 1, 2])
    monkeypatch.setattr(storage.random, "getrandbits", lambda _bits: next(names))
    BlobStore(tmp_path).put(data, digest)
    assert (folder / digest).read_bytes() == data
    assert (folder / f".tmp-{1:016x}").read_bytes() == b"another writer's"
    assert not (folder / f".tmp-{2:016x}").exists()  # renamed into place


def test_a_failed_write_leaves_no_blob_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_fd: int, _data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "write", full)
    blobs = BlobStore(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        blobs.put(b"bytes")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 12_105, 64 * 1024, 64 * 1024 + 1])
def test_address_is_the_sha256_whether_hashed_in_pieces_or_at_once(size: int) -> None:
    data = os.urandom(size)
    assert storage.address(data) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("named_again", [False, True])
def test_a_deletion_whose_aside_file_a_sweep_finished_first_does_not_fail(
    tmp_path: Path, named_again: bool
) -> None:
    """`remove_unless` and a sweep (`clipmod.blobsweep`) may reach the same aside file; the
    one that comes second finds it gone and stops, whichever way the first decided."""
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"bytes")
    looks = iter([False, named_again])

    def referenced() -> bool:
        answer = next(looks)
        for aside in tmp_path.rglob(f"{ASIDE_PREFIX}*"):  # the sweep, between the two looks
            aside.unlink()
        return answer

    assert blobs.remove_unless(digest, referenced) is False
    assert list(tmp_path.rglob(f"{ASIDE_PREFIX}*")) == []
