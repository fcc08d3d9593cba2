"""The blob sweep against a real database (SQLite, and PostgreSQL in CI) and a real store: what
no row names goes once it is older than the grace period; everything a row names, everything
young and everything that is not ours stays."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from clipmod import blobsweep, keys, retention
from clipmod.db import transaction
from clipmod.models import Bank, BankEntry, Item
from clipmod.settings import Settings
from clipmod.storage import ASIDE_PREFIX, TEMP_PREFIX, BlobStore
from tests.e2e.conftest import either_database, postgres_url  # noqa: F401

HOUR = 3600.0


@pytest.fixture
def db(either_database: Settings) -> Iterator[sessionmaker[Session]]:  # noqa: F811
    engine = create_engine(either_database.database_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def aged(path: Path | str, seconds: float = 2 * HOUR) -> None:
    """Make a file look written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def put_old(blobs: BlobStore, data: bytes) -> str:
    digest = blobs.put(data)
    aged(blobs.path(digest))
    return digest


def item_naming(sessions: sessionmaker[Session], digest: str) -> str:
    with transaction(sessions) as session:
        tenant = keys.get_or_create_tenant(session, "acme")
        item = Item(tenant_id=tenant.id, image_sha256=digest, image_format="png")
        session.add(item)
        session.flush()
        return item.id


def bank_entry_naming(sessions: sessionmaker[Session], digest: str) -> None:
    with transaction(sessions) as session:
        bank = Bank(name="known", kind="block", model_revision="r", dim=2, created_by="t")
        session.add(bank)
        session.flush()
        session.add(
            BankEntry(
                bank_id=bank.id,
                embedding=b"\0" * 4,
                source="upload",
                image_sha256=digest,
                added_in=1,
            )
        )


def test_only_old_blobs_no_row_names_are_removed(
    db: sessionmaker[Session], blobs: BlobStore
) -> None:
    by_item = put_old(blobs, b"an item's image")
    by_bank = put_old(blobs, b"a bank's image")
    orphan = put_old(blobs, b"a refused upload's image")
    young = blobs.put(b"an upload on its way to the database")
    item_naming(db, by_item)
    bank_entry_naming(db, by_bank)
    foreign = blobs.root / "README"
    foreign.write_text("not a blob")
    aged(foreign)

    report = blobsweep.sweep(db, blobs, grace_s=HOUR)

    assert not blobs.path(orphan).exists()
    for kept in (by_item, by_bank, young):
        assert blobs.path(kept).exists()
    assert foreign.exists()
    assert (report.files, report.removed, report.in_use, report.young) == (4, 1, 2, 1)
    assert list(blobs.root.rglob(f"{ASIDE_PREFIX}*")) == []


def test_unfinished_writes_and_blobs_left_aside_by_a_crash(
    db: sessionmaker[Session], blobs: BlobStore
) -> None:
    named = put_old(blobs, b"named")
    item_naming(db, named)
    unnamed = put_old(blobs, b"unnamed")
    # What a deletion killed between its two steps leaves: the blob renamed aside.
    named_aside = blobs.path(named).with_name(f"{ASIDE_PREFIX}{named}-{'1' * 32}")
    unnamed_aside = blobs.path(unnamed).with_name(f"{ASIDE_PREFIX}{unnamed}-{'2' * 32}")
    blobs.path(named).rename(named_aside)
    blobs.path(unnamed).rename(unnamed_aside)
    folder = blobs.path(named).parent
    crashed, writing = folder / f"{TEMP_PREFIX}{1:016x}", folder / f"{TEMP_PREFIX}{2:016x}"
    crashed.write_bytes(b"half an im")
    writing.write_bytes(b"half an im")
    aged(crashed)

    report = blobsweep.sweep(db, blobs, grace_s=HOUR)

    assert blobs.get(named) == b"named"  # back under its name
    assert not named_aside.exists() and not unnamed_aside.exists()
    assert not blobs.path(unnamed).exists()
    assert not crashed.exists() and writing.exists()  # a write in progress is young
    assert (report.aside_restored, report.aside_removed, report.temp_removed) == (1, 1, 1)


def test_a_dry_run_counts_and_touches_nothing(db: sessionmaker[Session], blobs: BlobStore) -> None:
    orphan = put_old(blobs, b"orphan")
    temp = blobs.path(orphan).parent / f"{TEMP_PREFIX}{3:016x}"
    temp.write_bytes(b"x")
    aged(temp)
    before = sorted(p.name for p in blobs.root.rglob("*") if p.is_file())

    report = blobsweep.sweep(db, blobs, grace_s=HOUR, dry_run=True)

    assert (report.removed, report.temp_removed, report.dry_run) == (1, 1, True)
    assert sorted(p.name for p in blobs.root.rglob("*") if p.is_file()) == before
    assert "would remove 1 unreferenced blobs" in report.line()


def test_a_row_committed_after_the_batch_query_keeps_its_blob(
    db: sessionmaker[Session], blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's query is only a first look: removal asks the rows again, as deletion does."""
    digest = put_old(blobs, b"uploaded again just now")
    item_naming(db, digest)
    monkeypatch.setattr(blobsweep, "blobs_in_use", lambda session, digests: set())

    report = blobsweep.sweep(db, blobs, grace_s=HOUR)

    assert blobs.path(digest).exists()
    assert (report.removed, report.in_use) == (0, 1)


def test_progress_counts_every_file(db: sessionmaker[Session], blobs: BlobStore) -> None:
    for n in range(7):
        put_old(blobs, b"blob %d" % n)
    ticks: list[int] = []
    report = blobsweep.sweep(db, blobs, grace_s=HOUR, progress=ticks.append)
    assert sum(ticks) == report.files == 7


def test_deleting_an_item_keeps_bytes_a_bank_entry_also_holds(
    db: sessionmaker[Session], blobs: BlobStore
) -> None:
    digest = blobs.put(b"a known image, also uploaded as an item")
    item_id = item_naming(db, digest)
    bank_entry_naming(db, digest)
    assert retention.delete_item(db, blobs, item_id) is retention.Outcome.DELETED
    assert blobs.path(digest).exists()


def test_a_bank_upload_writes_back_an_image_deleted_before_its_entry_committed(
    blobs: BlobStore,
) -> None:
    from clipmod.banks.registry import NewEntry
    from clipmod.banks.uploads import ensure_stored

    data = b"a known image"
    digest = blobs.put(data)  # `embed_uploads`' put
    assert blobs.remove_unless(digest, lambda: False)  # an item with these bytes deleted
    entry = NewEntry(np.zeros(2, np.float32), "r", "upload", image_sha256=digest, label="k")
    ensure_stored(blobs, [("k.png", data)], [entry])  # after the entries' commit
    assert blobs.get(digest) == data
