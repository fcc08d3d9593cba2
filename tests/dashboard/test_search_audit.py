"""Semantic search on real embeddings of the bundled model, and the audit log."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.policies import RUNTIME_KEY
from clipmod import embeddings, retention
from clipmod.db import transaction
from clipmod.demo import world
from clipmod.errors import ClipmodError
from clipmod.models import AuditEvent, Item, ItemEmbedding, User, utcnow
from clipmod.review import audit, search
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from clipmod.traffic.sync import TrafficStore
from tests.dashboard.conftest import MakeItem, sign_in

# Drawn from the demo world's held-out split: one violation of each kind and benign objects.
SCENES = {
    "knife": "a photo of a knife",
    "gun": "a photo of a gun",
    "pill": "a photo of a pill",
    "cup": "a photo of a cup",
    "flower": "a photo of a flower",
    "car": "a photo of a car",
}


@pytest.fixture
def store(settings: Settings, runtime) -> TrafficStore:  # type: ignore[no-untyped-def]
    return TrafficStore(settings.traffic_dir, runtime.revision)


@pytest.fixture
def stored(make_item: MakeItem, runtime) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """object → item id, each with the bundled model's real image embedding."""
    out = {}
    for obj in SCENES:
        seed = next(
            s for s in range(500) if world.render(s, "heldout", n_objects=1).objects == (obj,)
        )
        image = world.render(seed, "heldout", n_objects=1).image
        out[obj] = make_item(
            embedding=runtime.encode_images([image])[0], revision=runtime.revision, image=image
        )
    return out


def test_text_search_finds_the_knife_first(
    stored: dict[str, str],
    store: TrafficStore,
    alice: User,
    runtime,
    sessions: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    with sessions() as session:
        for obj, query in SCENES.items():
            hits = search.search_text(session, alice, runtime, query, store=store)
            assert hits[0].item_id == stored[obj], (query, hits[:3])
            assert hits[0].source == "image" and len(hits) == len(SCENES)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_text_items_are_found_through_their_text_windows(
    make_item: MakeItem,
    store: TrafficStore,
    alice: User,
    runtime,
    sessions: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    texts = ["a photo of a syringe", "a photo of a house", "a photo of a star"]
    ids = [
        make_item(text=t, text_embedding=runtime.encode_texts([t]), revision=runtime.revision)
        for t in texts
    ]
    with sessions() as session:
        hits = search.search_text(session, alice, runtime, "a photo of a syringe", store=store)
    assert hits[0].item_id == ids[0] and hits[0].source == "text"


def test_search_sees_only_my_tenants_and_similar_excludes_the_item(
    stored: dict[str, str],
    store: TrafficStore,
    make_item: MakeItem,
    alice: User,
    runtime,
    sessions: sessionmaker[Session],  # type: ignore[no-untyped-def]
) -> None:
    knife = world.render(0, "train", n_objects=1).image
    theirs = make_item(
        "globex", embedding=runtime.encode_images([knife])[0], revision=runtime.revision
    )
    # A re-upload of the same picture: "find similar" must put it first, at cosine 1.
    with sessions() as session:
        row = session.get(ItemEmbedding, (stored["knife"], runtime.revision))
        assert row is not None and row.image is not None
        duplicate = make_item(
            embedding=embeddings.from_bytes(row.image, row.dim)[0], revision=runtime.revision
        )
    with sessions() as session:
        hits = search.search_text(
            session, alice, runtime, "a photo of a knife", store=store, limit=50
        )
        assert theirs not in {h.item_id for h in hits}
        near = search.similar(session, alice, store, stored["knife"])
        assert stored["knife"] not in {h.item_id for h in near}
        assert near[0].item_id == duplicate and near[0].score == pytest.approx(1.0, abs=2e-3)


def test_a_deleted_item_leaves_the_search_page_and_find_similar(
    stored: dict[str, str],
    make_item: MakeItem,
    alice: User,
    app: Flask,
    client: FlaskClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    runtime,  # type: ignore[no-untyped-def]
) -> None:
    """Through the pages a moderator uses, and the same deletion path as `DELETE /v1/items`."""
    app.extensions[RUNTIME_KEY] = runtime
    knife = stored["knife"]
    with sessions() as session:
        row = session.get(ItemEmbedding, (knife, runtime.revision))
        assert row is not None and row.image is not None
        twin = make_item(
            embedding=embeddings.from_bytes(row.image, row.dim)[0], revision=runtime.revision
        )
    sign_in(client, alice.email)

    def found(path: str) -> set[str]:
        page = client.get(path)
        assert page.status_code == 200, page.get_data(as_text=True)[:300]
        return set(re.findall(r'data-item="([^"]+)"', page.get_data(as_text=True)))

    assert {knife, twin} <= found("/dashboard/search?q=a+photo+of+a+knife")
    assert knife in found(f"/dashboard/items/{twin}/similar")
    outcome = retention.delete_item(sessions, BlobStore(settings.blob_dir), knife)
    assert outcome == retention.Outcome.DELETED
    assert knife not in found("/dashboard/search?q=a+photo+of+a+knife")
    assert twin in found("/dashboard/search?q=a+photo+of+a+knife")
    assert knife not in found(f"/dashboard/items/{twin}/similar")
    assert client.get(f"/dashboard/items/{knife}/similar").status_code == 404
    assert TrafficStore(settings.traffic_dir, runtime.revision).status()["deleted"] == 1


@pytest.mark.parametrize(
    ("query", "code"), [("   ", "empty_query"), ("x" * 10_000, "query_too_long")]
)
def test_bad_queries_are_refused_before_the_model_runs(
    alice: User, sessions: sessionmaker[Session], settings: Settings, query: str, code: str
) -> None:
    class NoModel:
        revision = "none"

        def encode_texts(self, texts):  # type: ignore[no-untyped-def]
            raise AssertionError("the model must not run for a refused query")

    with sessions() as session, pytest.raises(ClipmodError) as err:
        search.search_text(
            session, alice, NoModel(), query, store=TrafficStore(settings.traffic_dir, "none")
        )
    assert err.value.code == code
    if code == "query_too_long":
        assert "10,000 characters; the limit is 300" in err.value.message


def test_audit_log_is_append_only(alice: User, sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        audit.record(session, "search", user=alice, detail={"query": "knife"})
    with sessions() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "search"))
        assert event is not None
        event.actor = "someone else"
        with pytest.raises(PermissionError, match="append-only"):
            session.commit()
        session.rollback()
        session.delete(event)
        with pytest.raises(PermissionError, match="append-only"):
            session.commit()
    with sessions() as session:
        assert session.scalar(select(AuditEvent.actor).where(AuditEvent.action == "search")) == (
            "alice@example.com"
        )


def test_audit_filters_and_csv_neutralise_formulas(
    alice: User, bob: User, make_item: MakeItem, sessions: sessionmaker[Session]
) -> None:
    item_id = make_item()
    with transaction(sessions) as session:
        audit.record(session, "search", user=alice, detail={"query": "=HYPERLINK(1)"})
        audit.record(session, "login_failed", actor="=cmd|'/c calc'!A1", detail={})
        audit.record(session, "reveal", user=bob, item=session.get(Item, item_id))
    with sessions() as session:
        mine = audit.events(session, audit.AuditFilter(actor="alice"))
        assert [r.action for r in mine] == ["search"]
        reveal = audit.events(session, audit.AuditFilter(action="reveal"))
        assert [(r.actor, r.item_id, r.tenant) for r in reveal] == [
            ("bob@example.com", item_id, "acme")
        ]
        assert audit.count(session, audit.AuditFilter(since=utcnow() + timedelta(days=1))) == 0
        text = "".join(audit.to_csv(audit.events(session, audit.AuditFilter(), limit=None)))
    lines = text.splitlines()
    assert lines[0] == "id,at,actor,action,item_id,tenant,detail"
    assert "'=cmd|" in text and "\n=cmd" not in text
    assert "'{" not in text and '"{""query"": ""=HYPERLINK(1)""}"' in text
