"""Per-tenant intake limits: 429 with Retry-After in the JSON error shape, limits per tenant,
one budget for `/v1/items` and the webhook, shared across replicas through Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from clipmod import keys, secretbox, signing
from clipmod.db import transaction
from clipmod.settings import Settings
from tests.api.conftest import auth
from tests.conftest import make_settings
from tests.e2e.conftest import required_env
from tests.platform.conftest import add_secret


@contextmanager
def limited_client(settings: Settings, **overrides: str) -> Iterator[FlaskClient]:
    app = create_app(make_settings(settings.data_dir, **overrides))
    try:
        yield app.test_client()
    finally:
        app.extensions["clipmod"].engine.dispose()


def post(client: FlaskClient, key: str) -> int:
    return client.post("/v1/items", json={"text": "hi"}, headers=auth(key)).status_code


def test_over_the_limit_is_429_with_retry_after(
    settings: Settings, api_key: str, other_key: str
) -> None:
    with limited_client(settings, rate_limit="3/minute") as client:
        assert [post(client, api_key) for _ in range(3)] == [202] * 3
        resp = client.post("/v1/items", json={"text": "hi"}, headers=auth(api_key))
        assert resp.status_code == 429 and resp.mimetype == "application/json"
        assert resp.get_json()["error"]["code"] == "too_many_requests"
        assert 0 < int(resp.headers["Retry-After"]) <= 60
        assert post(client, other_key) == 202  # per tenant
        assert client.get("/v1/items", headers=auth(api_key)).status_code == 200  # intake only


def test_a_tenant_limit_overrides_the_default(
    settings: Settings, api_key: str, other_key: str, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        admin = keys.create_key(session, "ops", admin=True)
    with limited_client(settings, rate_limit="100/minute") as client:
        patched = client.patch(
            "/v1/tenants/acme", json={"rate_limit": "2/minute"}, headers=auth(admin)
        )
        assert patched.status_code == 200 and patched.get_json()["rate_limit"] == "2/minute"
        assert [post(client, api_key) for _ in range(3)] == [202, 202, 429]
        assert [post(client, other_key) for _ in range(3)] == [202, 202, 202]
        bad = client.patch("/v1/tenants/acme", json={"rate_limit": "lots"}, headers=auth(admin))
        assert (bad.status_code, bad.get_json()["error"]["code"]) == (422, "invalid_input")


def test_the_webhook_shares_the_budget_and_unsigned_calls_spend_none(
    settings: Settings, api_key: str, sessions: sessionmaker[Session]
) -> None:
    secret = add_secret(sessions, secretbox.load(settings), "acme", "webhook")

    def hook(client: FlaskClient, secrets: list[str], n: int) -> int:
        body = json.dumps({"text": f"hook {n}"}).encode()
        header = signing.header(secrets, int(time.time()), body)
        return client.post(
            "/v1/webhooks/acme",
            data=body,
            content_type="application/json",
            headers={signing.SIGNATURE_HEADER: header},
        ).status_code

    with limited_client(settings, rate_limit="3/minute") as client:
        assert [hook(client, [signing.new_secret()], n) for n in range(5)] == [401] * 5
        assert [hook(client, [secret], 0), post(client, api_key), hook(client, [secret], 1)] == [
            202,
            202,
            202,
        ]
        assert hook(client, [secret], 2) == 429


@pytest.mark.postgres
def test_replicas_share_the_count_in_redis(settings: Settings, api_key: str) -> None:
    import redis

    url = required_env("CLIPMOD_TEST_REDIS_URL")
    redis.Redis.from_url(url).flushdb()
    with (
        limited_client(settings, rate_limit="3/minute", rate_limit_storage_url=url) as one,
        limited_client(settings, rate_limit="3/minute", rate_limit_storage_url=url) as two,
    ):
        assert [post(one, api_key), post(two, api_key), post(one, api_key)] == [202] * 3
        assert post(two, api_key) == 429
    stored = redis.Redis.from_url(url).keys("*")
    assert any(b"clipmod" in k and b"intake" in k for k in stored), stored  # counters in Redis


def test_a_redis_broker_puts_the_counters_in_redis(tmp_path) -> None:  # type: ignore[no-untyped-def]
    redis_settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:6390/0")
    assert redis_settings.limiter_storage_url == "redis://127.0.0.1:6390/0"
    assert make_settings(tmp_path).limiter_storage_url == "memory://"


def test_every_counted_upload_carries_the_window(settings: Settings, api_key: str) -> None:
    with limited_client(settings, rate_limit="3/minute") as client:
        started = time.time()
        seen = []
        for _ in range(4):
            resp = client.post("/v1/items", json={"text": "hi"}, headers=auth(api_key))
            seen.append((resp.status_code, resp.headers["X-RateLimit-Remaining"]))
            assert resp.headers["X-RateLimit-Limit"] == "3"
            assert started + 59 <= int(resp.headers["X-RateLimit-Reset"]) <= time.time() + 62
        assert seen == [(202, "2"), (202, "1"), (202, "0"), (429, "0")]
        # Only intake is counted, so only intake answers carry the headers.
        assert "X-RateLimit-Limit" not in client.get("/v1/items", headers=auth(api_key)).headers


@pytest.mark.postgres
def test_counts_share_the_limits_librarys_moving_window_keys(
    settings: Settings, api_key: str, sessions: sessionmaker[Session]
) -> None:
    """One Lua call of ours and the library's own strategy read and write the same window,
    so replicas on either side of an upgrade (Flask-Limiter used these keys) count together."""
    import redis
    from limits import parse
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    from clipmod.models import Tenant

    url = required_env("CLIPMOD_TEST_REDIS_URL")
    redis.Redis.from_url(url).flushdb()
    with sessions() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == "acme"))
    library = MovingWindowRateLimiter(RedisStorage(url))
    item = parse("3/minute")
    assert library.hit(item, "clipmod", f"tenant:{tenant_id}", "intake")
    with limited_client(settings, rate_limit="3/minute", rate_limit_storage_url=url) as client:
        assert [post(client, api_key), post(client, api_key), post(client, api_key)] == [
            202,
            202,
            429,
        ]
    stats = library.get_window_stats(item, "clipmod", f"tenant:{tenant_id}", "intake")
    assert stats.remaining == 0


def test_a_failing_counter_store_lets_uploads_through_and_logs(
    settings: Settings, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    nothing_there = "redis://127.0.0.1:1/0"  # connection refused
    with limited_client(settings, rate_limit="1/minute", rate_limit_storage_url=nothing_there) as c:
        assert [post(c, api_key), post(c, api_key)] == [202, 202]
    assert caplog.text.count("rate limit store failed; letting the request through") == 2
