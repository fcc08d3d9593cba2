"""The traffic store against the SQL rows it mirrors: same arrays, kept in step, never wrong."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings, keys
from clipmod.db import transaction
from clipmod.models import Decision, Item, ItemEmbedding, TrafficLog
from clipmod.policy.traffic import StoredEmbeddings, load_embeddings
from clipmod.settings import Settings
from clipmod.traffic import segments
from clipmod.traffic.ids import ItemIds
from clipmod.traffic.sync import HOLE_TTL_S, TrafficStore, _advance

REV, DIM = "rev-a", 8


def add_items(
    sessions: sessionmaker[Session], n: int, *, seed: int, revision: str = REV
) -> list[str]:
    """n items as the worker stores them: images, 0-3 text windows, three tenants."""
    rng = np.random.default_rng(seed)
    ids = []
    with transaction(sessions) as session:
        for i in range(n):
            tenant = keys.get_or_create_tenant(session, ("acme", "globex", "initech")[i % 3])
            item = Item(tenant_id=tenant.id, created_at=datetime(2026, 1, 1 + i % 28, tzinfo=UTC))
            session.add(item)
            session.flush()
            windows = int(rng.integers(0, 4))
            image = rng.normal(size=(1, DIM)) if i % 5 else None
            session.add(
                ItemEmbedding(
                    item_id=item.id,
                    model_revision=revision,
                    dim=DIM,
                    image=embeddings.to_bytes(image) if image is not None else None,
                    text=embeddings.to_bytes(rng.normal(size=(windows, DIM))) if windows else None,
                    text_windows=windows,
                )
            )
            ids.append(item.id)
    return ids


def per_item(emb: StoredEmbeddings) -> dict[str, tuple[int, bytes | None, bytes]]:
    """{item: (tenant, image row, text rows)}: the store keeps log order, SQL any order."""
    image = dict(zip(emb.image_items.tolist(), emb.image, strict=True))
    ends = np.append(emb.text_starts[1:], len(emb.text))
    text_rows = {
        int(i): emb.text[s:e].tobytes()
        for i, s, e in zip(emb.text_items, emb.text_starts, ends, strict=True)
    }
    return {
        item_id: (
            int(emb.tenant_ids[i]),
            image[i].tobytes() if i in image else None,
            text_rows.get(i, b""),
        )
        for i, item_id in enumerate(emb.ids)
    }


def same(a: StoredEmbeddings, b: StoredEmbeddings) -> None:
    assert len(a) == len(b) and len(a.image) == len(b.image) and len(a.text) == len(b.text)
    assert per_item(a) == per_item(b)
    assert a.tenant_names == b.tenant_names


@pytest.fixture
def store(settings: Settings) -> TrafficStore:
    return TrafficStore(settings.traffic_dir, REV)


def test_the_store_reads_what_sql_holds_and_keeps_in_step(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    add_items(sessions, 30, seed=1)
    add_items(sessions, 4, seed=2, revision="other-rev")
    with sessions() as session:
        same(load_embeddings(session, REV, store=store), load_embeddings(session, REV))
        first = store.status()
    assert first["items"] == 30 and first["generation"] == 1
    add_items(sessions, 7, seed=3)
    with sessions() as session:
        report = store.sync(session)
        assert (report.appended, report.rebuilt, report.items) == (7, False, 37)
        same(load_embeddings(session, REV, store=store), load_embeddings(session, REV))
    assert store.status()["items"] == 37 and store.status()["segments"] == 1


def test_since_and_labelled_filters_match_sql(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 40, seed=4)
    with transaction(sessions) as session:
        for item_id in ids[3::7]:
            session.add(Decision(item_id=item_id, moderator="m", labels={"drugs": True}))
    since = datetime(2026, 1, 15, tzinfo=UTC)
    with sessions() as session:
        for kwargs in ({"since": since}, {"labelled_only": True}):
            got = load_embeddings(session, REV, store=store, **kwargs)  # type: ignore[arg-type]
            same(got, load_embeddings(session, REV, **kwargs))  # type: ignore[arg-type]
            assert 0 < len(got) < 40


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "manifest", "delete"])
def test_a_damaged_store_is_rebuilt_from_sql_never_served(
    store: TrafficStore, sessions: sessionmaker[Session], damage: str
) -> None:
    add_items(sessions, 25, seed=5)
    with sessions() as session:
        want = load_embeddings(session, REV)
        load_embeddings(session, REV, store=store)
    path = store.files.path(1, "image")
    if damage == "truncate":  # what a crash of the disk or a careless copy leaves
        path.write_bytes(path.read_bytes()[:-5])
    elif damage == "flip_byte":
        raw = bytearray(path.read_bytes())
        raw[40] ^= 0xFF
        path.write_bytes(bytes(raw))
        segments.SegmentFiles._verified.clear()  # as a fresh process: CRCs checked once each
    elif damage == "manifest":
        store.files.manifest_path.write_text("{not json", encoding="utf-8")
    else:
        path.unlink()
    with sessions() as session:
        got = load_embeddings(session, REV, store=store)
    same(got, want)
    assert store.status()["generation"] == 2
    assert not store.files.path(1, "ids").exists()  # the old generation is gone


def test_verify_checks_every_checksum_and_compares_with_sql(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 12, seed=6)
    with sessions() as session:
        assert store.verify(session) == ["no store yet"]
        store.sync(session)
        assert store.verify(session) == []
    raw = bytearray(store.files.path(1, "text").read_bytes())
    raw[3] ^= 0x01
    store.files.path(1, "text").write_bytes(bytes(raw))
    with sessions() as session:
        problems = store.verify(session)  # without clearing the per-process cache: forced
    assert len(problems) == 1 and "checksum" in problems[0]
    with transaction(sessions) as session:
        store.rebuild(session)
        session.execute(text("DELETE FROM item_embeddings WHERE item_id = :i"), {"i": ids[0]})
    with sessions() as session:
        assert store.verify(session) == []  # the deletion was logged and reached the store
    with transaction(sessions) as session:  # one the log never saw (a restore, a TRUNCATE)
        session.execute(text("DELETE FROM item_embeddings WHERE item_id = :i"), {"i": ids[1]})
        session.execute(text("DELETE FROM traffic_log WHERE deleted"))
    with sessions() as session:
        assert store.verify(session) == [
            "0 items stored in SQL are not in the store and 1 in the store are no longer in SQL"
        ]


def test_an_interrupted_append_is_cut_off_at_the_next_one(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    add_items(sessions, 10, seed=7)
    with sessions() as session:
        load_embeddings(session, REV, store=store)
    for column in segments.COLUMNS:  # bytes written, manifest never replaced: a crash
        with open(store.files.path(1, column), "ab") as fh:
            fh.write(b"\xde\xad" * 13)
    add_items(sessions, 3, seed=8)
    with sessions() as session:
        same(load_embeddings(session, REV, store=store), load_embeddings(session, REV))
    assert store.status()["generation"] == 1  # appended in place, not rebuilt


def test_every_insert_path_feeds_the_log_through_the_trigger(
    sessions: sessionmaker[Session],
) -> None:
    ids = add_items(sessions, 3, seed=9)
    with transaction(sessions) as session:
        session.execute(
            ItemEmbedding.__table__.insert(),
            [{"item_id": ids[0], "model_revision": "bulk", "dim": DIM, "text_windows": 0}],
        )
    with sessions() as session:
        logged = session.execute(
            text("SELECT item_id, model_revision FROM traffic_log ORDER BY seq")
        ).all()
    assert [tuple(r) for r in logged] == [(i, REV) for i in ids] + [(ids[0], "bulk")]


def test_gaps_in_the_log_are_asked_for_again_until_they_expire() -> None:
    """On PostgreSQL a lower seq can commit after a higher one was read (see `sync`)."""
    manifest = segments.Manifest(REV, DIM, watermark=4)
    _advance(manifest, np.array([5, 8]))
    assert manifest.watermark == 8 and set(manifest.holes) == {6, 7}
    _advance(manifest, np.array([6, 9]))  # 6 committed late: found; 7 still missing
    assert manifest.watermark == 9 and set(manifest.holes) == {7}
    manifest.holes[7] = time.time() - HOLE_TTL_S - 1  # its transaction must have rolled back
    _advance(manifest, np.array([], dtype=np.int64))
    assert manifest.holes == {}


def test_a_late_commit_below_the_watermark_is_still_appended(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    """A real gap: a log row whose seq is below the watermark when it becomes visible."""
    ids = add_items(sessions, 2, seed=10)
    with transaction(sessions) as session:
        session.execute(text("DELETE FROM traffic_log WHERE item_id = :i"), {"i": ids[0]})
    with sessions() as session:
        assert len(load_embeddings(session, REV, store=store)) == 1
    manifest = store.files.read_manifest()
    assert manifest is not None and set(manifest.holes) == {1}
    with transaction(sessions) as session:
        session.add(TrafficLog(seq=1, item_id=ids[0], model_revision=REV))
    with sessions() as session:
        got = load_embeddings(session, REV, store=store)
    assert sorted(got.ids) == sorted(ids)
    assert store.files.read_manifest().holes == {}  # type: ignore[union-attr]


def test_item_ids_are_found_without_a_dict() -> None:
    ids = ItemIds.of(
        [f"{i:032x}" for i in range(1000)] + ["short", "item0000000000000000000000000042"]
    )
    want = ["short", f"{517:032x}", "missing", "item0000000000000000000000000042"]
    assert ids.positions(want).tolist() == [1000, 517, -1, 1001]
    assert ids[1000] == "short" and list(ids)[517] == f"{517:032x}"


def test_the_manifest_is_replaced_atomically(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    add_items(sessions, 3, seed=11)
    with sessions() as session:
        store.sync(session)
    data: dict[str, Any] = json.loads(store.files.manifest_path.read_text(encoding="utf-8"))
    assert data["rows"]["ids"] == 3 and data["format"] == segments.FORMAT
    assert not store.files.manifest_path.with_suffix(".tmp").exists()


def test_a_sync_with_nothing_new_writes_nothing(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    add_items(sessions, 5, seed=12)
    with sessions() as session:
        store.sync(session)
        before = store.files.manifest_path.stat().st_mtime_ns
        report = store.sync(session)
    assert (report.appended, report.rebuilt, report.items) == (0, False, 5)
    assert store.files.manifest_path.stat().st_mtime_ns == before
