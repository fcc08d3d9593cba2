"""Request ids, the access log, `/metrics` behind an admin key, and the key cache's TTL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from clipmod import keys
from clipmod.db import transaction
from clipmod.models import ApiKey, utcnow
from clipmod.settings import Settings
from tests.api.conftest import auth


def test_a_request_id_is_echoed_and_a_bad_one_replaced(client: FlaskClient, api_key: str) -> None:
    kept = client.get("/v1/items", headers={**auth(api_key), "X-Request-Id": "lb-1234.abc"})
    assert kept.headers["X-Request-Id"] == "lb-1234.abc"
    forged = client.get("/v1/items", headers={**auth(api_key), "X-Request-Id": "x FAKE=LINE"})
    assert forged.headers["X-Request-Id"] != "x FAKE=LINE"
    assert len(forged.headers["X-Request-Id"]) == 32
    # Errors and unauthenticated answers carry one too.
    assert client.get("/v1/items").headers["X-Request-Id"]


def test_one_access_line_per_request(
    client: FlaskClient, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="api.access"):
        resp = client.post("/v1/items", json={"text": "hello"}, headers=auth(api_key))
    lines = [r for r in caplog.records if r.name == "api.access"]
    assert len(lines) == 1
    record = lines[0]
    assert (record.method, record.path, record.status, record.tenant) == (  # type: ignore[attr-defined]
        "POST",
        "/v1/items",
        202,
        "acme",
    )
    assert record.request_id == resp.headers["X-Request-Id"]  # type: ignore[attr-defined]
    assert "POST /v1/items 202" in record.getMessage()


@pytest.fixture
def admin_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return keys.create_key(session, "ops", admin=True)


def test_metrics_need_an_admin_key_and_count_requests(
    client: FlaskClient, api_key: str, admin_key: str
) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(api_key)).status_code == 403
    client.get("/v1/items/nope", headers=auth(api_key))
    resp = client.get("/metrics", headers=auth(admin_key))
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert (
        'clipmod_http_requests_total{method="GET",route="/v1/items/<item_id>",status="404"}' in text
    )
    assert "clipmod_http_request_seconds_bucket" in text


def _sample(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[1])


def test_metrics_count_the_uploads_of_each_intake_group(
    client: FlaskClient, api_key: str, admin_key: str
) -> None:
    before = client.get("/metrics", headers=auth(admin_key)).get_data(as_text=True)
    for n in range(3):
        resp = client.post("/v1/items", json={"text": f"t{n}"}, headers=auth(api_key))
        assert resp.status_code == 202
    after = client.get("/metrics", headers=auth(admin_key)).get_data(as_text=True)
    name = "clipmod_intake_group_uploads"
    assert _sample(after, f"{name}_sum") - _sample(before, f"{name}_sum") == 3
    assert _sample(after, f"{name}_count") - _sample(before, f"{name}_count") == 3  # one by one


@pytest.fixture
def short_cache_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(Settings(**{**vars(settings), "key_cache_s": 0.5}))
    yield app
    app.extensions["clipmod"].engine.dispose()


def test_a_revoked_key_stops_working_within_the_cache_ttl(
    short_cache_app: Flask, sessions: sessionmaker[Session], api_key: str
) -> None:
    client = short_cache_app.test_client()
    assert client.get("/v1/items", headers=auth(api_key)).status_code == 200
    with transaction(sessions) as session:
        session.execute(update(ApiKey).values(revoked_at=utcnow()))
    revoked_at = time.monotonic()
    while client.get("/v1/items", headers=auth(api_key)).status_code == 200:
        assert time.monotonic() - revoked_at < 2, "a revoked key kept working past the TTL"
        time.sleep(0.05)
    assert client.get("/v1/items", headers=auth(api_key)).status_code == 401


def test_a_cached_key_costs_no_database_round_trip(client: FlaskClient, api_key: str) -> None:
    from sqlalchemy import event

    engine = client.application.extensions["clipmod"].engine
    client.get("/v1/items", headers=auth(api_key))  # fills the cache
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    client.get("/v1/items", headers=auth(api_key))
    assert not [s for s in statements if "api_keys" in s], statements
