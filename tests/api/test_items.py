"""The /v1/items contract: every field, every error, idempotency and tenant isolation."""

from __future__ import annotations

import base64
import io

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.models import Item, ItemStatus
from clipmod.settings import Settings
from tests import images
from tests.api.conftest import auth
from workers.pipeline import Scorer


def post_file(client: FlaskClient, key: str, data: bytes, name: str = "x.jpg", **form: str):  # type: ignore[no-untyped-def]
    body = {"file": (io.BytesIO(data), name), **form}
    return client.post(
        "/v1/items", data=body, headers=auth(key), content_type="multipart/form-data"
    )


def error_of(resp) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    body = resp.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"code", "message"} and body["error"]["message"]
    return resp.status_code, body["error"]["code"]


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer cm_nope_nope", "Bearer x"])
def test_every_v1_endpoint_needs_a_valid_key(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [("post", "/v1/items"), ("get", "/v1/items"), ("get", "/v1/items/abc")]:
        resp = getattr(client, method)(path, headers=headers)
        status, code = error_of(resp)
        assert status == 401 and code in ("unauthorized", "invalid_api_key")


def test_health_needs_no_key(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["status"] == "ready"


def test_readyz_is_503_when_the_database_is_gone(settings: Settings) -> None:
    from api import create_app
    from clipmod import settings as settings_mod

    broken = settings_mod.load(
        {
            "CLIPMOD_DATA_DIR": str(settings.data_dir),
            "CLIPMOD_DATABASE_URL": "sqlite:////nonexistent/dir/x.db",
        }
    )
    resp = create_app(broken).test_client().get("/readyz")
    assert resp.status_code == 503
    # What failed, and nothing an unauthenticated caller could use: no path, driver or host.
    assert resp.get_json() == {"status": "unavailable", "failing": ["database"]}


# -- intake -----------------------------------------------------------------------------------


def test_multipart_upload_is_queued(
    client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    resp = post_file(
        client, api_key, images.solid(), external_id="post-1", text="hello", metadata='{"user": 7}'
    )
    assert resp.status_code == 202
    body = resp.get_json()
    assert set(body) == {"id", "external_id", "status", "links"}
    assert body["status"] == "queued" and body["external_id"] == "post-1"
    assert body["links"]["self"] == f"/v1/items/{body['id']}"
    with sessions() as session:
        item = session.get(Item, body["id"])
        assert item is not None
        assert (item.text, item.meta, item.image_format) == ("hello", {"user": 7}, "jpeg")


def test_an_unwritable_blob_store_is_a_retryable_503_and_stores_nothing(
    settings: Settings, client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    """A full disk or a lost volume: a platform that retries 503s gets its upload in later; a
    500 would have told it the request was bad. A file where the store's folder should be
    makes every write fail, as a volume gone read-only or full does."""
    settings.blob_dir.write_bytes(b"not a folder")
    resp = post_file(client, api_key, images.solid(), external_id="disk-1")
    assert error_of(resp) == (503, "storage_unavailable")
    assert resp.headers["Retry-After"] == "5"
    text = client.post("/v1/items", json={"text": "no image needed"}, headers=auth(api_key))
    assert text.status_code == 202  # text alone needs no blob
    with sessions() as session:
        assert session.scalar(select(Item).where(Item.external_id == "disk-1")) is None
    settings.blob_dir.unlink()  # the volume is back: the same request goes in
    again = post_file(client, api_key, images.solid(), external_id="disk-1")
    assert again.status_code == 202


def test_a_broker_outage_stores_the_item_answers_503_and_a_retry_queues_it(
    settings: Settings, client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    """The send comes after the commit: the row is there when the broker refuses the message.

    A Redis broker that is down also takes the rate-limit counters with it: intake is worth
    more than the limit, so the upload is still stored (and carries no `X-RateLimit-*`).
    """
    from api import create_app
    from tests.conftest import make_settings

    down = create_app(make_settings(settings.data_dir, broker_url="redis://127.0.0.1:1/0"))
    try:
        resp = post_file(down.test_client(), api_key, images.solid(), external_id="out-1")
    finally:
        down.extensions["clipmod"].engine.dispose()
    assert error_of(resp) == (503, "queue_unavailable")
    assert resp.headers["Retry-After"] == "5"
    assert "X-RateLimit-Limit" not in resp.headers
    with sessions() as session:
        item = session.scalar(select(Item).where(Item.external_id == "out-1"))
        assert item is not None and item.status.value == "queued"
    again = post_file(client, api_key, images.solid(), external_id="out-1")
    assert again.status_code == 200 and again.get_json()["id"] == item.id


def test_json_upload_with_base64_image(client: FlaskClient, api_key: str) -> None:
    payload = {
        "image_base64": base64.b64encode(images.solid(fmt="PNG")).decode(),
        "metadata": {"k": "v"},
    }
    resp = client.post("/v1/items", json=payload, headers=auth(api_key))
    assert resp.status_code == 202


def test_text_only_upload(client: FlaskClient, api_key: str) -> None:
    resp = client.post("/v1/items", json={"text": "buy pills"}, headers=auth(api_key))
    assert resp.status_code == 202


def test_same_external_id_answers_the_existing_item(
    client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    first = client.post("/v1/items", json={"text": "a", "external_id": "e1"}, headers=auth(api_key))
    again = client.post("/v1/items", json={"text": "a", "external_id": "e1"}, headers=auth(api_key))
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["status"] == "queued"
    with sessions() as session:
        assert session.scalar(select(func.count(Item.id))) == 1


def test_same_external_id_with_other_content_is_a_conflict(
    client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    first = client.post("/v1/items", json={"text": "a", "external_id": "e1"}, headers=auth(api_key))
    other = client.post("/v1/items", json={"text": "b", "external_id": "e1"}, headers=auth(api_key))
    assert error_of(other) == (409, "external_id_conflict")
    assert first.get_json()["id"] in other.get_json()["error"]["message"]
    with sessions() as session:
        assert session.scalar(select(func.count(Item.id))) == 1


def test_items_from_before_content_hashes_are_replayed(
    client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    """Rows migrated from 0001 have no hash: unknown content, answered as a replay as before."""
    first = client.post("/v1/items", json={"text": "a", "external_id": "e1"}, headers=auth(api_key))
    with sessions() as session, session.begin():
        session.get(Item, first.get_json()["id"]).content_hash = None  # type: ignore[union-attr]
    again = client.post("/v1/items", json={"text": "b", "external_id": "e1"}, headers=auth(api_key))
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]


def test_external_ids_are_per_tenant(client: FlaskClient, api_key: str, other_key: str) -> None:
    a = client.post("/v1/items", json={"text": "a", "external_id": "e1"}, headers=auth(api_key))
    b = client.post("/v1/items", json={"text": "a", "external_id": "e1"}, headers=auth(other_key))
    assert a.status_code == b.status_code == 202
    assert a.get_json()["id"] != b.get_json()["id"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {}}, 422, "nothing_to_score"),
        ({"json": {"text": "   "}}, 422, "nothing_to_score"),
        ({"json": {"text": "x", "colour": "red"}}, 422, "invalid_input"),
        ({"json": {"text": 5}}, 422, "invalid_input"),
        ({"json": {"text": "x", "metadata": [1]}}, 422, "invalid_input"),
        ({"json": {"text": "x", "external_id": ""}}, 422, "invalid_input"),
        ({"json": {"image_base64": "###"}}, 422, "invalid_input"),
        ({"json": [1, 2]}, 422, "invalid_json"),
        ({"data": "text=hi", "content_type": "text/plain"}, 415, "unsupported_content_type"),
    ],
)
def test_invalid_requests(
    client: FlaskClient,
    api_key: str,
    kwargs: dict,
    status: int,  # type: ignore[type-arg]
    code: str,
) -> None:
    resp = client.post("/v1/items", headers=auth(api_key), **kwargs)
    assert error_of(resp) == (status, code)


def test_not_an_image_names_the_detected_type(client: FlaskClient, api_key: str) -> None:
    resp = post_file(client, api_key, images.PDF, name="doc.pdf")
    assert error_of(resp) == (415, "unsupported_media_type")
    assert "application/pdf" in resp.get_json()["error"]["message"]


def test_corrupt_image_is_415(client: FlaskClient, api_key: str) -> None:
    assert error_of(post_file(client, api_key, images.truncated_jpeg())) == (415, "corrupt_image")


def test_decompression_bomb_is_413_without_decoding(client: FlaskClient, api_key: str) -> None:
    resp = post_file(client, api_key, images.png_bomb(), name="bomb.png")
    assert error_of(resp) == (413, "image_too_many_pixels")


def test_limits(settings: Settings, api_key: str) -> None:
    from api import create_app
    from clipmod import settings as settings_mod

    small = settings_mod.load(
        {
            "CLIPMOD_DATA_DIR": str(settings.data_dir),
            "CLIPMOD_MAX_UPLOAD_BYTES": "2000",
            "CLIPMOD_MAX_TEXT_CHARS": "50",
        }
    )
    client = create_app(small).test_client()
    big = images.encode(__import__("PIL.Image", fromlist=["Image"]).effect_noise((200, 200), 90))
    assert error_of(post_file(client, api_key, big)) == (413, "image_too_large")
    resp = client.post("/v1/items", json={"text": "x" * 51}, headers=auth(api_key))
    assert error_of(resp) == (413, "text_too_long")
    resp = client.post(
        "/v1/items", data=b"x" * 1_000_000, headers=auth(api_key), content_type="application/json"
    )
    assert error_of(resp) == (413, "payload_too_large")


# -- reading ----------------------------------------------------------------------------------


def test_get_item_carries_the_whole_verdict(
    client: FlaskClient, api_key: str, scorer: Scorer
) -> None:
    item_id = post_file(client, api_key, images.solid(), external_id="p9").get_json()["id"]
    queued = client.get(f"/v1/items/{item_id}", headers=auth(api_key)).get_json()
    assert queued["status"] == "queued" and queued["verdict"] is None and queued["error"] is None
    scorer.score_batch([item_id])
    body = client.get(f"/v1/items/{item_id}", headers=auth(api_key)).get_json()
    assert {"id", "external_id", "status", "verdict", "error"} <= set(body)
    assert body["status"] == "scored" and body["external_id"] == "p9" and body["error"] is None
    verdict = body["verdict"]
    assert verdict["action"] in ("allow", "review", "block")
    assert verdict["policy"] == {"name": "demo", "version": 1}
    assert verdict["model"] == {
        "name": scorer.runtime.display_name,
        "revision": scorer.runtime.revision,
    }
    assert verdict["scored_at"].endswith("+00:00")
    assert len(verdict["categories"]) >= 1
    for cat in verdict["categories"]:
        assert {"id", "score", "review_at", "block_at", "action", "top_prompt"} <= set(cat)
    worst = max(
        verdict["categories"], key=lambda c: ("allow", "review", "block").index(c["action"])
    )
    assert verdict["action"] == worst["action"]


def test_failed_item_reports_its_error(
    client: FlaskClient,
    api_key: str,
    scorer: Scorer,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    item_id = post_file(client, api_key, images.solid()).get_json()["id"]
    with sessions() as session:  # the blob vanished between intake and scoring
        sha = session.get(Item, item_id).image_sha256  # type: ignore[union-attr]
    (settings.blob_dir / sha[:2] / sha[2:4] / sha).unlink()
    scorer.score_batch([item_id])
    body = client.get(f"/v1/items/{item_id}", headers=auth(api_key)).get_json()
    assert body["status"] == "failed" and body["verdict"] is None
    assert body["error"]["code"] == "blob_missing"


def test_other_tenants_items_are_404(client: FlaskClient, api_key: str, other_key: str) -> None:
    item_id = client.post("/v1/items", json={"text": "x"}, headers=auth(api_key)).get_json()["id"]
    resp = client.get(f"/v1/items/{item_id}", headers=auth(other_key))
    assert error_of(resp) == (404, "item_not_found")
    listed = client.get("/v1/items", headers=auth(other_key)).get_json()
    assert listed == {"items": [], "next_cursor": None}


def test_list_filters_and_pages(client: FlaskClient, api_key: str, scorer: Scorer) -> None:
    ids = [
        client.post("/v1/items", json={"text": f"t{i}"}, headers=auth(api_key)).get_json()["id"]
        for i in range(7)
    ]
    scorer.score_batch(ids[:3])
    seen, cursor = [], None
    while True:
        url = "/v1/items?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=auth(api_key)).get_json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    scored = client.get("/v1/items?status=scored", headers=auth(api_key)).get_json()["items"]
    assert sorted(i["id"] for i in scored) == sorted(ids[:3])
    queued = client.get("/v1/items?status=queued", headers=auth(api_key)).get_json()["items"]
    assert len(queued) == 4
    action = scored[0]["verdict"]["action"]
    by_action = client.get(f"/v1/items?action={action}", headers=auth(api_key)).get_json()["items"]
    assert by_action and all(i["verdict"]["action"] == action for i in by_action)


@pytest.mark.parametrize("query", ["status=done", "action=maybe", "limit=x", "cursor=%%%"])
def test_bad_list_queries(client: FlaskClient, api_key: str, query: str) -> None:
    status, _code = error_of(client.get(f"/v1/items?{query}", headers=auth(api_key)))
    assert status == 422


def test_unknown_routes_and_methods_answer_json(client: FlaskClient, api_key: str) -> None:
    assert error_of(client.get("/nope")) == (404, "not_found")
    assert error_of(client.delete("/v1/items", headers=auth(api_key))) == (
        405,
        "method_not_allowed",
    )


def test_api_answers_neither_read_nor_set_a_dashboard_session(
    client: FlaskClient, api_key: str
) -> None:
    """Sessions are the dashboard's: an API call (even one that carries the dashboard's cookie)
    gets no cookie back and no `Vary: Cookie`, which would also defeat HTTP caches."""
    client.set_cookie("clipmod_session", "not-a-session")
    for resp in (
        client.get("/v1/items", headers=auth(api_key)),
        client.post("/v1/items", json={"text": "hello"}, headers=auth(api_key)),
    ):
        assert resp.status_code in (200, 202)
        assert "Set-Cookie" not in resp.headers
        assert "Cookie" not in resp.headers.get("Vary", "")


# -- retrying a failed item --------------------------------------------------------------------


def fail(sessions: sessionmaker[Session], item_id: str, code: str = "url_unreachable") -> None:
    """What a worker leaves behind when an item fails (see `workers.store`)."""
    with sessions.begin() as session:
        item = session.get(Item, item_id)
        assert item is not None
        item.status, item.attempts = ItemStatus.FAILED, 3
        item.error_code, item.error_message = code, "the server did not answer"


def test_a_failed_item_is_queued_again_on_retry(
    client: FlaskClient, api_key: str, other_key: str, sessions: sessionmaker[Session]
) -> None:
    item_id = client.post(
        "/v1/items", json={"text": "hello", "external_id": "r-1"}, headers=auth(api_key)
    ).get_json()["id"]
    assert error_of(client.post(f"/v1/items/{item_id}/retry", headers=auth(api_key))) == (
        409,
        "item_not_failed",
    )
    fail(sessions, item_id)
    assert error_of(client.post(f"/v1/items/{item_id}/retry", headers=auth(other_key))) == (
        404,
        "item_not_found",
    )
    resp = client.post(f"/v1/items/{item_id}/retry", headers=auth(api_key))
    assert resp.status_code == 202
    assert resp.get_json() == {
        "id": item_id,
        "external_id": "r-1",
        "status": "queued",
        "links": {"self": f"/v1/items/{item_id}"},
    }
    with sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        assert (item.status, item.attempts, item.error_code, item.error_message) == (
            ItemStatus.QUEUED,
            0,
            None,
            None,
        )
    again = client.get(f"/v1/items/{item_id}", headers=auth(api_key)).get_json()
    assert again["status"] == "queued" and again.get("error") is None
    assert client.delete(f"/v1/items/{item_id}", headers=auth(api_key)).status_code == 204
    assert error_of(client.post(f"/v1/items/{item_id}/retry", headers=auth(api_key))) == (
        410,
        "item_deleted",
    )
