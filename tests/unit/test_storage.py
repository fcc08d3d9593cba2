"""BlobStore.put with a digest the caller already has: intake hashes an upload once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clipmod import storage
from clipmod.storage import BlobStore


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
    assert blobs.put(data, digest) == digest  # again (intake's put after commit): a no-op
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [digest]


def test_put_without_a_digest_still_addresses_by_sha256(tmp_path: Path) -> None:
    data = b"other bytes"
    digest = BlobStore(tmp_path).put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert BlobStore(tmp_path).path(digest).read_bytes() == data
