"""`POST /v1/webhooks/<tenant>`: signed uploads, every refusal, rotation, replay, idempotency."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import secretbox, signing
from clipmod.models import Item, SeenSignature
from tests.api.conftest import auth
from tests.platform.conftest import add_secret

URL = "/v1/webhooks/acme"


def signed(secrets: list[str], body: bytes, t: float | None = None) -> dict[str, str]:
    stamp = int(time.time() if t is None else t)
    return {signing.SIGNATURE_HEADER: signing.header(secrets, stamp, body)}


def post_json(client: FlaskClient, data: dict, secrets: list[str], **kw):  # type: ignore[no-untyped-def, type-arg]
    body = json.dumps(data).encode()
    return client.post(
        URL, data=body, content_type="application/json", headers=signed(secrets, body, **kw)
    )


def count_items(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count(Item.id))) or 0


@pytest.fixture
def secret(sessions: sessionmaker[Session], box: secretbox.SecretBox) -> str:
    return add_secret(sessions, box, "acme", "webhook")


def test_a_signed_json_upload_is_an_item_of_that_tenant(
    client: FlaskClient, secret: str, sessions: sessionmaker[Session]
) -> None:
    resp = post_json(client, {"text": "a knife", "external_id": "w-1"}, [secret])
    assert resp.status_code == 202, resp.get_json()
    with sessions() as session:
        item = session.get(Item, resp.get_json()["id"])
        assert item is not None and item.text == "a knife" and item.external_id == "w-1"
        assert item.tenant_id == add_tenant_id(session, "acme")


def add_tenant_id(session: Session, name: str) -> int:
    from clipmod.keys import get_tenant

    return get_tenant(session, name).id


def test_a_signed_multipart_upload_is_accepted(
    client: FlaskClient, secret: str, png: bytes
) -> None:
    # Build the exact bytes first: the signature covers the body as sent.
    boundary = "xYzZy"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="k.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    resp = client.post(
        URL,
        data=io.BytesIO(body),
        content_type=f"multipart/form-data; boundary={boundary}",
        headers=signed([secret], body),
    )
    assert resp.status_code == 202, resp.get_json()


def test_refusals_have_stable_codes_and_store_nothing(
    client: FlaskClient, secret: str, sessions: sessionmaker[Session]
) -> None:
    body = json.dumps({"text": "x"}).encode()
    cases = {
        "signature_missing": {},
        "signature_malformed": {signing.SIGNATURE_HEADER: "sha256=abc"},
        "signature_invalid": signed([signing.new_secret()], body),
        "signature_expired": signed([secret], body, t=time.time() - 301),
    }
    for code, headers in cases.items():
        resp = client.post(URL, data=body, content_type="application/json", headers=headers)
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (401, code)
    unknown = client.post(
        "/v1/webhooks/nobody",
        data=body,
        content_type="application/json",
        headers=signed([secret], body),
    )
    assert (unknown.status_code, unknown.get_json()["error"]["code"]) == (401, "signature_invalid")
    assert count_items(sessions) == 0


def test_a_replayed_signature_is_refused_even_by_another_replica(
    app, client: FlaskClient, secret: str, sessions: sessionmaker[Session], settings
) -> None:  # type: ignore[no-untyped-def]
    from api import create_app

    body = json.dumps({"text": "once"}).encode()
    headers = signed([secret], body)
    first = client.post(URL, data=body, content_type="application/json", headers=headers)
    assert first.status_code == 202
    other = create_app(settings)  # a second API replica on the same database
    try:
        again = other.test_client().post(
            URL, data=body, content_type="application/json", headers=headers
        )
    finally:
        other.extensions["clipmod"].engine.dispose()
    assert (again.status_code, again.get_json()["error"]["code"]) == (401, "signature_replayed")
    assert count_items(sessions) == 1


def test_seen_signatures_are_forgotten_after_the_window(
    client: FlaskClient, secret: str, sessions: sessionmaker[Session]
) -> None:
    from datetime import timedelta

    from clipmod.models import utcnow

    with sessions() as session, session.begin():
        session.add(SeenSignature(digest="0" * 64, seen_at=utcnow() - timedelta(hours=1)))
    assert post_json(client, {"text": "a"}, [secret]).status_code == 202
    with sessions() as session:
        assert session.get(SeenSignature, "0" * 64) is None
        assert session.scalar(select(func.count()).select_from(SeenSignature)) == 1


def test_two_secrets_during_rotation_then_the_old_one_is_revoked(
    client: FlaskClient, api_key: str, secret: str
) -> None:
    created = client.post(
        "/v1/tenant/secrets", json={"purpose": "webhook", "rotate": True}, headers=auth(api_key)
    )
    assert created.status_code == 201
    new = created.get_json()["secret"]
    assert post_json(client, {"text": "old"}, [secret]).status_code == 202
    assert post_json(client, {"text": "new"}, [new]).status_code == 202
    listed = client.get("/v1/tenant", headers=auth(api_key)).get_json()["signing_secrets"]
    old_id = next(s["id"] for s in listed if s["id"] != created.get_json()["id"])
    assert new not in json.dumps(listed) and secret not in json.dumps(listed)
    revoked = client.post(f"/v1/tenant/secrets/{old_id}/revoke", headers=auth(api_key))
    assert revoked.status_code == 200 and revoked.get_json()["active"] is False
    refused = post_json(client, {"text": "old again"}, [secret])
    assert refused.get_json()["error"]["code"] == "signature_invalid"
    assert post_json(client, {"text": "new again"}, [new]).status_code == 202


def test_a_third_active_secret_is_refused(client: FlaskClient, api_key: str, secret: str) -> None:
    second = client.post("/v1/tenant/secrets", json={"purpose": "webhook"}, headers=auth(api_key))
    assert second.status_code == 201
    third = client.post("/v1/tenant/secrets", json={"purpose": "webhook"}, headers=auth(api_key))
    assert (third.status_code, third.get_json()["error"]["code"]) == (409, "too_many_secrets")


def test_external_id_idempotency_holds_across_signatures(
    client: FlaskClient, secret: str, sessions: sessionmaker[Session]
) -> None:
    first = post_json(client, {"text": "t", "external_id": "e-1"}, [secret])
    again = post_json(client, {"text": "t", "external_id": "e-1"}, [secret], t=time.time() - 1)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    other = {"text": "other", "external_id": "e-1"}
    changed = post_json(client, other, [secret], t=time.time() - 2)
    assert changed.get_json()["error"]["code"] == "external_id_conflict"
    assert count_items(sessions) == 1


def test_a_signed_bad_body_gets_the_intake_error(client: FlaskClient, secret: str) -> None:
    resp = post_json(client, {"text": "   "}, [secret])
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (422, "nothing_to_score")


def test_no_secret_in_logs_or_later_answers(
    client: FlaskClient, api_key: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    post_json(client, {"text": "x"}, [secret])
    post_json(client, {"text": "x"}, [signing.new_secret()])
    shown = client.get("/v1/tenant", headers=auth(api_key)).get_data(as_text=True)
    assert secret not in caplog.text and secret not in shown
    assert secret[: len("whsec_") + 4] in shown  # the hint, enough to recognise it
