"""Deletions in the traffic store: logged by triggers, replayed as tombstones, never served.

Every test compares the store's reader with the SQL reader (the reference), the way
`test_store.py` does for inserts.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings
from clipmod.db import transaction
from clipmod.policy.traffic import load_embeddings
from clipmod.settings import Settings
from clipmod.traffic import segments
from clipmod.traffic.ids import ItemIds, occurrences
from clipmod.traffic.sync import TrafficStore
from tests.traffic.test_store import DIM, REV, add_items, same


@pytest.fixture
def store(settings: Settings) -> TrafficStore:
    return TrafficStore(settings.traffic_dir, REV)


def delete(sessions: sessionmaker[Session], ids: list[str]) -> None:
    """What `retention.delete_item` does to the embeddings, for many items at once."""
    with transaction(sessions) as session:
        for item_id in ids:
            session.execute(text("DELETE FROM item_embeddings WHERE item_id = :i"), {"i": item_id})


def reinsert(sessions: sessionmaker[Session], item_id: str, seed: int) -> bytes:
    image = embeddings.to_bytes(np.random.default_rng(seed).normal(size=(1, DIM)))
    with transaction(sessions) as session:
        session.execute(
            text(
                "INSERT INTO item_embeddings (item_id, model_revision, dim, image, text_windows, "
                "created_at) VALUES (:i, :r, :d, :b, 0, CURRENT_TIMESTAMP)"
            ),
            {"i": item_id, "r": REV, "d": DIM, "b": image},
        )
    return image


def check(store: TrafficStore, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        same(load_embeddings(session, REV, store=store), load_embeddings(session, REV))
        assert store.verify(session) == []


def test_deleted_items_are_tombstoned_and_left_out_until_a_rebuild_drops_them(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 30, seed=21)
    with sessions() as session:
        store.sync(session)
    delete(sessions, ids[3:8])
    delete(sessions, ["no-such-item"])  # deletes nothing, logs nothing
    with sessions() as session:
        report = store.sync(session)
    assert (report.appended, report.deleted, report.items) == (0, 5, 25)
    check(store, sessions)
    with sessions() as session:
        got = load_embeddings(session, REV, store=store)
    assert set(got.ids).isdisjoint(ids[3:8]) and len(got) == 25
    assert store.status()["deleted"] == 5 and store.status()["items"] == 25
    with transaction(sessions) as session:  # another model revision's deletion: not ours
        session.execute(text("DELETE FROM item_embeddings WHERE model_revision = 'x'"))
    add_items(sessions, 3, seed=22, revision="other")
    delete(sessions, ids[8:9])  # removes its only embedding, of REV
    check(store, sessions)
    with sessions() as session:
        rebuilt = store.rebuild(session)
    assert (rebuilt.items, rebuilt.deleted) == (24, 0)
    assert store.status()["deleted"] == 0 and store.status()["generation"] == 2
    check(store, sessions)


def test_delete_then_store_again_leaves_one_live_row_in_any_order_of_syncs(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    """The app never re-scores a deleted item, but the log must replay any history right."""
    ids = add_items(sessions, 6, seed=23)
    with sessions() as session:
        store.sync(session)
    delete(sessions, ids[:2])
    reinsert(sessions, ids[0], seed=1)  # deleted and stored again before the store's next read
    check(store, sessions)
    delete(sessions, ids[:1])  # the new row deleted in its turn
    check(store, sessions)
    image = reinsert(sessions, ids[0], seed=2)
    check(store, sessions)
    with sessions() as session:
        got = load_embeddings(session, REV, store=store)
        assert sorted(got.ids) == sorted([ids[0], *ids[2:]])
        assert got.image[got.image_items == got.ids.positions([ids[0]])[0]].tobytes() == image
        store.rebuild(session)  # a rebuild replays the whole log, deletions and all
    check(store, sessions)
    # All of it inside one read, from the first insert on: a fresh store.
    delete(sessions, ids[2:3])
    reinsert(sessions, ids[2], seed=3)
    with sessions() as session:
        store.rebuild(session)
    check(store, sessions)


def test_an_updated_embedding_replaces_its_row(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    ids = add_items(sessions, 4, seed=24)
    with sessions() as session:
        store.sync(session)
    new = embeddings.to_bytes(np.ones((1, DIM)))
    with transaction(sessions) as session:
        session.execute(
            text("UPDATE item_embeddings SET image = :b WHERE item_id = :i"),
            {"b": new, "i": ids[1]},
        )
    check(store, sessions)
    assert store.status()["deleted"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "out_of_range"])
def test_damaged_tombstones_are_detected_and_rebuilt_never_served(
    store: TrafficStore, sessions: sessionmaker[Session], damage: str
) -> None:
    ids = add_items(sessions, 12, seed=25)
    with sessions() as session:
        store.sync(session)
    delete(sessions, ids[:3])
    with sessions() as session:
        store.sync(session)
    path = store.files.path(1, "dead")
    raw = bytearray(path.read_bytes())
    assert len(raw) == 3 * 8
    if damage == "truncate":  # a tombstone lost: the deleted item would come back
        path.write_bytes(bytes(raw[:-8]))
    elif damage == "flip_byte":  # a tombstone pointing at a live item
        raw[0] ^= 0x01
        path.write_bytes(bytes(raw))
        segments.SegmentFiles._verified.clear()  # as a fresh process: CRCs checked once each
    else:  # a checksum that matches but a row the store does not hold
        path.write_bytes(np.array([1, 2, 99], dtype="<i8").tobytes())
        manifest = json.loads(store.files.manifest_path.read_text(encoding="utf-8"))
        manifest["dead"]["crc"] = zlib.crc32(path.read_bytes())
        store.files.manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        segments.SegmentFiles._verified.clear()
    with sessions() as session:
        problems = store.verify(session)
    assert len(problems) == 1 and "dead" in problems[0], problems
    with sessions() as session:
        got = load_embeddings(session, REV, store=store)
        same(got, load_embeddings(session, REV))
    assert set(got.ids).isdisjoint(ids[:3]) and len(got) == 9
    assert store.status()["generation"] == 2 and not path.exists()


def test_a_store_written_before_deletions_were_logged_is_rebuilt(
    store: TrafficStore, sessions: sessionmaker[Session]
) -> None:
    """Format 1 knew no tombstones: items deleted before migration 0008 may still be in it."""
    ids = add_items(sessions, 5, seed=26)
    with sessions() as session:
        store.sync(session)
    manifest = json.loads(store.files.manifest_path.read_text(encoding="utf-8"))
    manifest["format"] = 1
    del manifest["dead"]
    store.files.manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with transaction(sessions) as session:  # deleted without a log row, as before 0008
        session.execute(text("DELETE FROM item_embeddings WHERE item_id = :i"), {"i": ids[0]})
        session.execute(text("DELETE FROM traffic_log WHERE deleted"))
    with sessions() as session:
        assert sorted(load_embeddings(session, REV, store=store).ids) == sorted(ids[1:])
    assert store.status()["generation"] == 2


def test_occurrences_finds_every_copy_of_an_id() -> None:
    raw = ItemIds.of(["a", "b", "a", "c" * 32, "d"]).raw
    assert occurrences(raw, ["a", "c" * 32, "zz"]).tolist() == [0, 2, 3]
    assert occurrences(raw, []).tolist() == []
