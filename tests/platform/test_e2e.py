"""The platform integration end to end, through real processes, on both configurations:
`clipmod worker` (scoring) and `clipmod worker --role deliver` (callbacks), the API app, a
real callback receiver and a real image host on loopback.

- a signed webhook upload (by image_url) ends in a signed callback;
- a receiver answering 500 three times then 200: one success, four attempts in the log;
- a receiver down for the whole retry window: a dead letter, then a redeliver succeeds.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from cli.supervise import WorkerFailed, WorkerProcess, free_port
from clipmod import keys, secretbox, signing
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Delivery, DeliveryStatus
from clipmod.settings import Settings
from tests.api.conftest import auth
from tests.conftest import make_settings
from tests.e2e.conftest import env_for, start_worker
from tests.e2e.scenarios import api_client
from tests.platform.conftest import FAST, add_secret, set_callback
from tests.platform.servers import ImageHost, Receiver

pytestmark = pytest.mark.e2e


@dataclass
class PlatformStack:
    settings: Settings
    sessions: sessionmaker[Session]
    box: secretbox.SecretBox
    client: FlaskClient


def _stack(settings: Settings, tmp_path: Path) -> Iterator[PlatformStack]:
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    box = secretbox.load(settings)
    with ExitStack() as cleanup:  # whatever fails to start, what did start is stopped
        cleanup.callback(engine.dispose)
        deliverer = WorkerProcess.start(
            env_for(settings), log=tmp_path / "deliver.log", role="deliver"
        )
        cleanup.callback(deliverer.stop)
        scorer = start_worker(settings, tmp_path / "worker.log")
        cleanup.callback(scorer.stop)
        try:
            deliverer.wait_ready(60)
        except WorkerFailed as exc:
            pytest.fail(str(exc))
        client = cleanup.enter_context(api_client(settings))
        yield PlatformStack(settings, sessions, box, client)


@pytest.fixture
def embedded(settings: Settings, tmp_path: Path) -> Iterator[PlatformStack]:
    yield from _stack(make_settings(settings.data_dir, **FAST), tmp_path)


@pytest.fixture
def production(production_settings: Settings, tmp_path: Path) -> Iterator[PlatformStack]:
    fast = make_settings(
        production_settings.data_dir,
        database_url=production_settings.database_url,
        broker_url=production_settings.broker_url,
        **FAST,
    )
    yield from _stack(fast, tmp_path)


def key_for(stack: PlatformStack, tenant: str) -> str:
    with transaction(stack.sessions) as session:
        return keys.create_key(session, tenant)


def delivery_of(stack: PlatformStack, key: str, status: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    """The tenant's only delivery, once it has `status` (polled through the API)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = stack.client.get("/v1/deliveries", headers=auth(key)).get_json()["deliveries"]
        if listed and listed[0]["status"] == status:
            assert len(listed) == 1
            detail: dict = stack.client.get(  # type: ignore[type-arg]
                f"/v1/deliveries/{listed[0]['id']}", headers=auth(key)
            ).get_json()
            return detail
        time.sleep(0.1)
    raise AssertionError(f"no {status} delivery in {timeout} s: {listed}")


def webhook_to_callback(stack: PlatformStack, png: bytes) -> None:
    key = key_for(stack, "hooked")
    hook_secret = add_secret(stack.sessions, stack.box, "hooked", "webhook")
    images = ImageHost(png)
    receiver = Receiver([])
    try:
        receiver.state.secrets.append(
            set_callback(stack.sessions, stack.box, "hooked", f"{receiver.url}/cb")
        )
        body = json.dumps({"image_url": f"{images.url}/image", "external_id": "up-1"}).encode()
        resp = stack.client.post(
            "/v1/webhooks/hooked",
            data=body,
            content_type="application/json",
            headers={
                signing.SIGNATURE_HEADER: signing.header([hook_secret], int(time.time()), body)
            },
        )
        assert resp.status_code == 202, resp.get_json()
        item_id = resp.get_json()["id"]
        (got,) = receiver.wait_for(1, timeout=60)
        assert got.verified and got.body["type"] == "item.scored"
        assert got.body["data"]["item"]["id"] == item_id
        assert got.body["data"]["item"]["verdict"]["action"] in ("allow", "review", "block")
        assert images.hits == ["/image"]  # fetched once, by the worker
        done = delivery_of(stack, key, "succeeded")
        assert (done["id"], done["attempts"]) == (got.delivery_id, 1)
        item = stack.client.get(f"/v1/items/{item_id}", headers=auth(key)).get_json()
        assert item["status"] == "scored" and item["input"]["url"] is True
    finally:
        images.stop()
        receiver.stop()


def flaky_receiver(stack: PlatformStack) -> None:
    key = key_for(stack, "flaky")
    receiver = Receiver([], script=[500, 500, 500])
    try:
        receiver.state.secrets.append(
            set_callback(stack.sessions, stack.box, "flaky", receiver.url)
        )
        resp = stack.client.post("/v1/items", json={"text": "hello"}, headers=auth(key))
        assert resp.status_code == 202
        done = delivery_of(stack, key, "succeeded")
        assert done["attempts"] == 4
        assert [a["status_code"] for a in done["attempt_log"]] == [500, 500, 500, 200]
        assert [r.answered for r in receiver.received] == [500, 500, 500, 200]
        assert {r.delivery_id for r in receiver.received} == {done["id"]}
    finally:
        receiver.stop()


def dead_letter_then_redeliver(stack: PlatformStack) -> None:
    key = key_for(stack, "down")
    port = free_port()
    secret = set_callback(stack.sessions, stack.box, "down", f"http://127.0.0.1:{port}/cb")
    resp = stack.client.post("/v1/items", json={"text": "hello"}, headers=auth(key))
    assert resp.status_code == 202
    dead = delivery_of(stack, key, "dead")
    assert dead["attempts"] >= 2 and "url_unreachable" in dead["last_error"]
    receiver = Receiver([secret], port=port)
    try:
        again = stack.client.post(f"/v1/deliveries/{dead['id']}/redeliver", headers=auth(key))
        assert again.status_code == 202
        done = delivery_of(stack, key, "succeeded")
        assert done["attempts"] == dead["attempts"] + 1
        assert [r.delivery_id for r in receiver.wait_for(1)] == [dead["id"]]
    finally:
        receiver.stop()
    with stack.sessions() as session:
        row = session.get(Delivery, dead["id"])
        assert row is not None and row.status == DeliveryStatus.SUCCEEDED


def test_embedded(embedded: PlatformStack, png: bytes) -> None:
    webhook_to_callback(embedded, png)
    flaky_receiver(embedded)
    dead_letter_then_redeliver(embedded)


@pytest.mark.postgres
def test_production(production: PlatformStack, png: bytes) -> None:
    webhook_to_callback(production, png)
    flaky_receiver(production)
    dead_letter_then_redeliver(production)


def scrape(worker: WorkerProcess) -> str:
    with urllib.request.urlopen(f"{worker.health_url}/metrics", timeout=5) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]


def test_the_delivery_worker_sweeps_blobs_no_row_names(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """`CLIPMOD_BLOB_SWEEP_EVERY_S` in a real delivery worker: the orphan goes (and is counted on
    its health port's `/metrics`), the named blob and the young one stay (the sweep itself:
    tests/unit/test_blobsweep.py)."""
    from clipmod.storage import BlobStore
    from tests.unit.test_blobsweep import item_naming, put_old

    blobs = BlobStore(settings.blob_dir)
    named, orphan = put_old(blobs, b"named"), put_old(blobs, b"orphan")
    young = blobs.put(b"young")
    item_naming(sessions, named)
    swept = make_settings(settings.data_dir, blob_sweep_every_s="0.2", blob_sweep_grace_s="60")
    log = tmp_path / "deliver.log"
    deliverer = WorkerProcess.start(env_for(swept), log=log, role="deliver")
    try:
        deliverer.wait_ready(60)
        counted = 'clipmod_blobs_swept_total{kind="unreferenced"} 1.0'
        deadline = time.monotonic() + 30
        while counted not in (metrics := scrape(deliverer)):
            assert time.monotonic() < deadline, deliverer.log_tail()
            time.sleep(0.1)
    finally:
        deliverer.stop()
    assert not blobs.path(orphan).exists()
    assert blobs.path(named).exists() and blobs.path(young).exists()
    assert "blob sweep: 3 files; removed 1 unreferenced blobs" in log.read_text()
    assert 'clipmod_blobs_swept_total{kind="unfinished"} 0.0' in metrics
