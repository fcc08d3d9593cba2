"""Signed callbacks, in-process: the outbox, dispatch, attempts against a real receiver,
backoff, dead letters and redelivery. (`test_e2e.py` runs the same through real workers.)"""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.supervise import free_port
from clipmod import deliveries, outbox, secretbox
from clipmod.models import Delivery, DeliveryStatus, Item
from clipmod.settings import Settings
from tests.api.conftest import auth
from tests.platform.conftest import set_callback
from tests.platform.servers import Receiver
from workers.pipeline import Scorer


@pytest.fixture
def rules(fast_settings: Settings) -> deliveries.DeliveryRules:
    return deliveries.DeliveryRules.from_settings(fast_settings)


@pytest.fixture
def owing(sessions: sessionmaker[Session], scorer: Scorer) -> Scorer:
    """The scorer with the worker's outbox hook installed, as `workers.service` does."""
    outbox.install(sessions)
    return scorer


def submit(client: FlaskClient, key: str, owing: Scorer, **body: str) -> str:
    resp = client.post("/v1/items", json=body, headers=auth(key))
    assert resp.status_code == 202, resp.get_json()
    item_id: str = resp.get_json()["id"]
    owing.score_batch([item_id])
    return item_id


def run_until(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    done: set[DeliveryStatus],
    timeout: float = 10,
) -> Delivery:
    """Dispatch and attempt, as the delivery worker's loop does, until a final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for delivery_id, token in deliveries.dispatch_due(sessions, rules.lease_s):
            deliveries.attempt(sessions, box, rules, delivery_id, token)
        with sessions() as session:
            row = session.scalars(select(Delivery)).one()
            if row.status in done:
                return row
        time.sleep(0.05)
    raise AssertionError(f"delivery still {row.status} after {timeout} s")


def test_a_verdict_is_called_back_signed_and_without_the_text(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    owing: Scorer,
    client: FlaskClient,
    api_key: str,
    receiver_factory: type[Receiver],
) -> None:
    receiver = receiver_factory([])
    receiver.state.secrets.append(set_callback(sessions, box, "acme", receiver.url))
    item_id = submit(client, api_key, owing, text="a knife, posted by zeno-42", external_id="p-1")
    row = run_until(sessions, box, rules, {DeliveryStatus.SUCCEEDED})
    (got,) = receiver.received
    assert got.verified and got.delivery_id == row.id
    assert got.body["type"] == "item.scored" and got.body["id"] == row.id
    sent = got.body["data"]["item"]
    with sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None and item.verdict is not None
        assert (sent["id"], sent["external_id"]) == (item_id, "p-1")
        assert sent["verdict"]["action"] == str(item.verdict.action)
    assert "zeno-42" not in str(got.body)
    assert (row.attempts, row.last_status_code) == (1, 200)


def test_500_three_times_then_200_is_one_success_after_four_attempts(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    owing: Scorer,
    client: FlaskClient,
    api_key: str,
    receiver_factory: type[Receiver],
) -> None:
    receiver = receiver_factory([], script=[500, 500, 500])
    receiver.state.secrets.append(set_callback(sessions, box, "acme", receiver.url))
    submit(client, api_key, owing, text="hello")
    row = run_until(sessions, box, rules, {DeliveryStatus.SUCCEEDED})
    assert row.attempts == 4
    assert [r.answered for r in receiver.received] == [500, 500, 500, 200]
    assert len({r.delivery_id for r in receiver.received}) == 1
    with sessions() as session:
        log = deliveries.attempts_of(session, row.id)
    assert [a.status_code for a in log] == [500, 500, 500, 200]
    assert [a.error for a in log] == ["HTTP 500"] * 3 + [None]


def test_a_hanging_receiver_is_a_timed_out_attempt(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    owing: Scorer,
    client: FlaskClient,
    api_key: str,
    receiver_factory: type[Receiver],
) -> None:
    receiver = receiver_factory([], script=["hang"])
    receiver.state.secrets.append(set_callback(sessions, box, "acme", receiver.url))
    submit(client, api_key, owing, text="hello")
    ((delivery_id, token),) = deliveries.dispatch_due(sessions, rules.lease_s)
    started = time.monotonic()
    status = deliveries.attempt(sessions, box, rules, delivery_id, token)
    assert status == DeliveryStatus.PENDING and time.monotonic() - started < 3
    with sessions() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None and row.last_error is not None
        assert row.last_error.startswith("url_timeout")


def test_a_message_delivered_twice_sends_once(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    owing: Scorer,
    client: FlaskClient,
    api_key: str,
    receiver_factory: type[Receiver],
) -> None:
    receiver = receiver_factory([])
    receiver.state.secrets.append(set_callback(sessions, box, "acme", receiver.url))
    submit(client, api_key, owing, text="hello")
    claimed = deliveries.dispatch_due(sessions, rules.lease_s)
    assert deliveries.dispatch_due(sessions, rules.lease_s) == []  # leased: not again
    ((delivery_id, token),) = claimed
    assert deliveries.attempt(sessions, box, rules, delivery_id, token) == "succeeded"
    assert deliveries.attempt(sessions, box, rules, delivery_id, token) is None
    assert len(receiver.received) == 1


def test_down_for_the_whole_window_is_a_dead_letter_then_redelivered(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    owing: Scorer,
    fast_client: FlaskClient,
    api_key: str,
    receiver_factory: type[Receiver],
) -> None:
    port = free_port()
    secret = set_callback(sessions, box, "acme", f"http://127.0.0.1:{port}/hook")
    submit(fast_client, api_key, owing, text="hello")
    dead = run_until(sessions, box, rules, {DeliveryStatus.DEAD})
    assert dead.attempts >= 2 and dead.last_error and "url_unreachable" in dead.last_error
    listed = fast_client.get("/v1/deliveries?status=dead", headers=auth(api_key)).get_json()
    assert [d["id"] for d in listed["deliveries"]] == [dead.id]

    receiver = receiver_factory([secret], port=port)
    resp = fast_client.post(f"/v1/deliveries/{dead.id}/redeliver", headers=auth(api_key))
    assert resp.status_code == 202 and resp.get_json()["status"] == "pending"
    again = fast_client.post(f"/v1/deliveries/{dead.id}/redeliver", headers=auth(api_key))
    assert again.get_json()["error"]["code"] == "delivery_pending"
    done = run_until(sessions, box, rules, {DeliveryStatus.SUCCEEDED})
    assert done.attempts == dead.attempts + 1
    assert [r.delivery_id for r in receiver.received] == [dead.id]
    shown = fast_client.get(f"/v1/deliveries/{dead.id}", headers=auth(api_key)).get_json()
    assert len(shown["attempt_log"]) == done.attempts
    assert shown["attempt_log"][-1]["status_code"] == 200


def test_a_failed_item_is_called_back_too(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
    owing: Scorer,
    client: FlaskClient,
    api_key: str,
    receiver_factory: type[Receiver],
) -> None:
    receiver = receiver_factory([])
    receiver.state.secrets.append(set_callback(sessions, box, "acme", receiver.url))
    submit(client, api_key, owing, image_url="http://169.254.169.254/latest/meta-data/")
    run_until(sessions, box, rules, {DeliveryStatus.SUCCEEDED})
    (got,) = receiver.received
    assert got.body["type"] == "item.failed"
    assert got.body["data"]["item"]["error"]["code"] == "url_forbidden"


def test_other_tenants_deliveries_are_invisible(
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    owing: Scorer,
    fast_client: FlaskClient,
    api_key: str,
    other_key: str,
    receiver_factory: type[Receiver],
) -> None:
    receiver = receiver_factory([])
    set_callback(sessions, box, "acme", receiver.url)
    submit(fast_client, api_key, owing, text="hello")
    with sessions() as session:
        delivery_id = session.scalars(select(Delivery.id)).one()
    for path in (f"/v1/deliveries/{delivery_id}", f"/v1/deliveries/{delivery_id}/redeliver"):
        method = fast_client.get if path.endswith(delivery_id) else fast_client.post
        resp = method(path, headers=auth(other_key))
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (404, "delivery_not_found")
    assert fast_client.get("/v1/deliveries", headers=auth(other_key)).get_json()["deliveries"] == []


def test_backoff_doubles_with_jitter_up_to_the_cap(rules: deliveries.DeliveryRules) -> None:
    wide = deliveries.DeliveryRules(rules.policy, rules.timeouts, 30, 3600, 86400, 60)
    for attempts, ceiling in [(1, 30), (2, 60), (3, 120), (8, 3600), (30, 3600)]:
        assert wide.delay(attempts, lambda: 0.0) == ceiling / 2
        assert wide.delay(attempts, lambda: 1.0) == ceiling
    total, n = 0.0, 0
    while total < 86400:  # how many attempts fit in a day, on average
        n += 1
        total += wide.delay(n, lambda: 0.5)
    assert 25 <= n <= 40


def test_a_callback_url_inside_is_refused(fast_client: FlaskClient, api_key: str) -> None:
    for url in ("http://169.254.169.254/", "http://10.0.0.1/hook", "ftp://example.com/"):
        resp = fast_client.put("/v1/tenant/callback", json={"url": url}, headers=auth(api_key))
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (422, "url_forbidden")


def test_the_delivery_worker_does_not_load_torch() -> None:
    """It must start fast and stay small: callbacks need no model."""
    import subprocess
    import sys

    code = "import sys, workers.delivery, cli.run; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
