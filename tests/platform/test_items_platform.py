"""Items as a platform integrates them: `image_url` through the worker, the echo of what was
sent, deletion with a tombstone, and the retention purge."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod import retention
from clipmod.models import Item, ItemEmbedding, ItemStatus, Verdict, utcnow
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.api.conftest import auth
from tests.platform.servers import ImageHost
from workers.pipeline import Scorer


def post(client: FlaskClient, key: str, **body: object) -> str:
    resp = client.post("/v1/items", json=body, headers=auth(key))
    assert resp.status_code == 202, resp.get_json()
    return str(resp.get_json()["id"])


def upload(client: FlaskClient, key: str, png: bytes, **form: str) -> str:
    import io

    resp = client.post(
        "/v1/items",
        data={"file": (io.BytesIO(png), "k.png"), **form},
        headers=auth(key),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 202, resp.get_json()
    return str(resp.get_json()["id"])


# -- image_url ----------------------------------------------------------------------------------


def test_an_image_url_is_fetched_by_the_worker_and_scored_like_an_upload(
    fast_client: FlaskClient,
    api_key: str,
    scorer: Scorer,
    image_host: ImageHost,
    png: bytes,
    sessions: sessionmaker[Session],
) -> None:
    by_url = post(fast_client, api_key, image_url=f"{image_host.url}/image", external_id="u")
    assert image_host.hits == []  # nothing fetched in the request
    by_bytes = upload(fast_client, api_key, png)
    scorer.score_batch([by_url, by_bytes])
    assert image_host.hits == ["/image"]
    with sessions() as session:
        a, b = session.get(Item, by_url), session.get(Item, by_bytes)
        assert a is not None and b is not None and a.status == ItemStatus.SCORED
        assert a.image_sha256 == b.image_sha256 and (a.image_format, a.image_width) == ("png", 64)
        va = session.scalar(select(Verdict).where(Verdict.item_id == by_url))
        vb = session.scalar(select(Verdict).where(Verdict.item_id == by_bytes))
        assert va is not None and vb is not None
        assert va.categories == vb.categories  # the same bytes, the same verdict
    shown = fast_client.get(f"/v1/items/{by_url}", headers=auth(api_key)).get_json()
    assert shown["input"] == {"text": False, "image": False, "url": True}
    assert shown["image_url"] == f"{image_host.url}/image"


@pytest.mark.parametrize(
    ("path", "code"),
    [("/html", "url_not_image"), ("/huge", "url_too_large"), ("/hang", "url_timeout")],
)
def test_a_bad_url_fails_only_its_item(
    fast_client: FlaskClient,
    api_key: str,
    scorer: Scorer,
    image_host: ImageHost,
    sessions: sessionmaker[Session],
    path: str,
    code: str,
) -> None:
    bad = post(fast_client, api_key, image_url=f"{image_host.url}{path}")
    good = post(fast_client, api_key, text="a cup of tea")
    scorer.score_batch([bad, good])
    with sessions() as session:
        item, other = session.get(Item, bad), session.get(Item, good)
        assert item is not None and other is not None
        assert (item.status, item.error_code) == (ItemStatus.FAILED, code)
        assert other.status == ItemStatus.SCORED
    shown = fast_client.get(f"/v1/items/{bad}", headers=auth(api_key)).get_json()
    assert shown["error"]["code"] == code


def test_a_url_that_is_not_allowlisted_fails_url_forbidden(
    client: FlaskClient,
    api_key: str,
    runtime,  # type: ignore[no-untyped-def]
    seeded: int,
    settings: Settings,
    sessions: sessionmaker[Session],
    image_host: ImageHost,
) -> None:
    """With the default settings (no allowlist) a loopback URL is refused in the worker."""
    item_id = post(client, api_key, image_url=f"{image_host.url}/image")
    scorer = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    try:
        scorer.score_batch([item_id])
    finally:
        scorer.close()
    with sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None and item.error_code == "url_forbidden"
    assert image_host.hits == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"image_url": "ftp://example.com/x.png"}, "url_forbidden"),
        ({"image_url": "not a url"}, "url_forbidden"),
        ({"image_url": "http:///x"}, "invalid_url"),
        ({"image_url": "http://example.com/x", "image_base64": "aGk="}, "invalid_input"),
        ({"image_url": ""}, "invalid_input"),
    ],
)
def test_intake_refuses_what_can_never_be_fetched(
    client: FlaskClient, api_key: str, sessions: sessionmaker[Session], body: dict, code: str
) -> None:  # type: ignore[type-arg]
    resp = client.post("/v1/items", json=body, headers=auth(api_key))
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (422, code)
    with sessions() as session:
        assert session.scalar(select(func.count(Item.id))) == 0


def test_a_repeated_url_upload_is_a_replay_and_another_url_a_conflict(
    client: FlaskClient, api_key: str
) -> None:
    body = {"image_url": "http://example.com/a.png", "external_id": "x"}
    first = client.post("/v1/items", json=body, headers=auth(api_key))
    again = client.post("/v1/items", json=body, headers=auth(api_key))
    other = client.post(
        "/v1/items", json={**body, "image_url": "http://example.com/b.png"}, headers=auth(api_key)
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert other.get_json()["error"]["code"] == "external_id_conflict"


# -- echo ---------------------------------------------------------------------------------------


def test_get_echoes_metadata_and_what_was_sent_and_the_text_to_its_owner(
    client: FlaskClient, api_key: str, other_key: str, png: bytes
) -> None:
    meta = {"post": 7, "tags": ["a", "b"]}
    item_id = post(client, api_key, text="caption", metadata=meta)
    shown = client.get(f"/v1/items/{item_id}", headers=auth(api_key)).get_json()
    assert shown["metadata"] == meta and shown["text"] == "caption"
    assert shown["input"] == {"text": True, "image": False, "url": False}
    listed = client.get("/v1/items", headers=auth(api_key)).get_json()["items"][0]
    assert listed["metadata"] == meta and "text" not in listed
    assert client.get(f"/v1/items/{item_id}", headers=auth(other_key)).status_code == 404
    both = upload(client, api_key, png, text="also text")
    assert client.get(f"/v1/items/{both}", headers=auth(api_key)).get_json()["input"] == {
        "text": True,
        "image": True,
        "url": False,
    }


# -- deletion -----------------------------------------------------------------------------------


def test_delete_leaves_a_tombstone_and_nothing_of_the_content(
    client: FlaskClient,
    api_key: str,
    scorer: Scorer,
    png: bytes,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    item_id = upload(client, api_key, png, text="secret caption", metadata='{"user": 5}')
    scorer.score_batch([item_id])
    blobs = BlobStore(settings.blob_dir)
    with sessions() as session:
        digest = session.get(Item, item_id).image_sha256  # type: ignore[union-attr]
    assert digest and blobs.path(digest).exists()

    assert client.delete(f"/v1/items/{item_id}", headers=auth(api_key)).status_code == 204
    with sessions() as session:
        row = session.get(Item, item_id)
        assert row is not None and row.status == ItemStatus.DELETED and row.deleted_at
        assert (row.text, row.meta, row.image_sha256, row.content_hash) == (None, None, None, None)
        assert session.scalar(select(func.count()).where(ItemEmbedding.item_id == item_id)) == 0
        assert session.scalar(select(Verdict.id).where(Verdict.item_id == item_id))  # audit
    assert not blobs.path(digest).exists()
    assert list(blobs.root.rglob(".del-*")) == []

    for resp in (
        client.delete(f"/v1/items/{item_id}", headers=auth(api_key)),
        client.get(f"/v1/items/{item_id}", headers=auth(api_key)),
    ):
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (410, "item_deleted")
    assert client.get("/v1/items", headers=auth(api_key)).get_json()["items"] == []


def test_delete_keeps_a_blob_another_item_uses_and_refuses_other_tenants(
    client: FlaskClient,
    api_key: str,
    other_key: str,
    png: bytes,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    mine, theirs = upload(client, api_key, png), upload(client, other_key, png)
    resp = client.delete(f"/v1/items/{mine}", headers=auth(other_key))
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (404, "item_not_found")
    assert client.delete(f"/v1/items/{mine}", headers=auth(api_key)).status_code == 204
    with sessions() as session:
        digest = session.get(Item, theirs).image_sha256  # type: ignore[union-attr]
    assert digest and BlobStore(settings.blob_dir).path(digest).exists()


def test_a_deleted_external_id_is_not_reused_silently(client: FlaskClient, api_key: str) -> None:
    item_id = post(client, api_key, text="x", external_id="gone")
    client.delete(f"/v1/items/{item_id}", headers=auth(api_key))
    body = {"text": "x", "external_id": "gone"}
    again = client.post("/v1/items", json=body, headers=auth(api_key))
    assert (again.status_code, again.get_json()["error"]["code"]) == (409, "item_deleted")


def test_a_worker_does_not_resurrect_an_item_deleted_mid_batch(
    client: FlaskClient, api_key: str, scorer: Scorer, sessions: sessionmaker[Session]
) -> None:
    item_id = post(client, api_key, text="x")
    work = scorer._claim([item_id])
    assert client.delete(f"/v1/items/{item_id}", headers=auth(api_key)).status_code == 204
    scorer._prepare(work)
    scorer._forward(work)
    scorer._write(work)
    with sessions() as session:
        assert session.get(Item, item_id).status == ItemStatus.DELETED  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(ItemEmbedding)) == 0


def test_the_blob_survives_an_upload_racing_its_deletion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`remove_unless` re-checks after moving the blob aside and puts it back."""
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"bytes")
    answers = iter([False, True])  # unused at first; a new row appears meanwhile
    assert blobs.remove_unless(digest, lambda: next(answers)) is False
    assert blobs.get(digest) == b"bytes"
    assert blobs.remove_unless(digest, lambda: False) is True
    assert not blobs.path(digest).exists()


# -- retention ----------------------------------------------------------------------------------


def test_retention_purges_old_items_once_even_with_two_purgers(
    client: FlaskClient, api_key: str, png: bytes, sessions: sessionmaker[Session], settings
) -> None:  # type: ignore[no-untyped-def]
    old = [post(client, api_key, text=f"old {i}") for i in range(30)]
    old.append(upload(client, api_key, png))
    new = post(client, api_key, text="new")
    with sessions() as session, session.begin():
        session.execute(
            update(Item).where(Item.id.in_(old)).values(created_at=utcnow() - timedelta(days=31))
        )
    blobs = BlobStore(settings.blob_dir)
    counts: list[int] = []
    purgers = [
        threading.Thread(
            target=lambda: counts.append(retention.purge_expired(sessions, blobs, 30, batch=7))
        )
        for _ in range(2)
    ]
    for t in purgers:
        t.start()
    for t in purgers:
        t.join(timeout=60)
    assert sum(counts) == len(old)  # each item deleted exactly once
    with sessions() as session:
        statuses = dict(session.execute(select(Item.id, Item.status)).all())
    assert {statuses[i] for i in old} == {ItemStatus.DELETED} and statuses[new] == "queued"
    assert retention.purge_expired(sessions, blobs, 0) == 0  # 0 days: keep forever
    assert not [p for p in blobs.root.rglob("*") if p.is_file()]  # the one blob went too
