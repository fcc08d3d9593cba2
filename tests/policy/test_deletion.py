"""Deleting an item removes it from the traffic store, and so from search and backtests.

Through the real API (`DELETE /v1/items/<id>`, `/v1/search`, `/v1/policies/backtest`) and the
retention purge, against the migrated database: the deletion trigger logs each deleted
embedding and the store's next read leaves its row out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from clipmod import retention
from clipmod.db import transaction
from clipmod.policy import backtest, parse_policy, versions
from clipmod.policy.traffic import load_embeddings
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from clipmod.traffic.sync import TrafficStore
from tests.policy.conftest import StoreFn, policy_text, unit_rows

KNIFE = "a photo of a knife"


def _ids(reply: Any) -> list[str]:
    assert reply.status_code == 200, reply.json
    return [r["id"] for r in reply.json["results"]]


def test_an_item_deleted_through_the_api_leaves_search_and_backtests(
    loaded: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    platform: dict[str, str],
    store: StoreFn,
    runtime: Any,
    settings: Settings,
) -> None:
    rng = np.random.default_rng(11)
    knife = runtime.encode_texts([KNIFE])[0]
    near = knife + 0.02 * rng.standard_normal(runtime.dim)
    target = store("acme", image=knife)
    twin = store("acme", image=near / np.linalg.norm(near))
    for _ in range(10):
        store("acme", image=unit_rows(rng, 1, runtime.dim)[0])
    client.post("/v1/policies", json={"yaml": policy_text()}, headers=admin)
    draft = {"yaml": policy_text(weapons=(-1.0, -1.0), drugs=(-1.0, -1.0)), "examples": 20}

    before = client.get(f"/v1/search?text={KNIFE}&limit=2", headers=admin)
    assert _ids(before) == [target, twin] and before.json["searched"] == 12
    assert _ids(client.get(f"/v1/search?like={twin}&limit=1", headers=admin)) == [target]
    assert client.post("/v1/policies/backtest", json=draft, headers=admin).json["items"] == 12

    assert client.delete(f"/v1/items/{target}", headers=platform).status_code == 204

    after = client.get(f"/v1/search?text={KNIFE}&limit=20", headers=admin)
    assert target not in _ids(after) and _ids(after)[0] == twin
    assert after.json["searched"] == 11
    assert target not in _ids(client.get(f"/v1/search?like={twin}&limit=20", headers=admin))
    gone = client.get(f"/v1/search?like={target}", headers=admin)
    assert (gone.status_code, gone.json["error"]["code"]) == (422, "item_not_scored")
    report = client.post("/v1/policies/backtest", json=draft, headers=admin).json
    assert report["items"] == 11 and report["actions"]["draft"]["block"] == 11
    assert all(target not in t["examples"] for t in report["transitions"])
    traffic = TrafficStore(settings.traffic_dir, runtime.revision)
    assert traffic.status()["deleted"] == 1 and traffic.status()["items"] == 11
    with client.application.extensions["clipmod"].sessions() as session:
        assert traffic.verify(session) == []  # nothing in the store that SQL no longer holds


def test_the_retention_purge_reaches_the_store_and_backtests(
    store: StoreFn,
    runtime: Any,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    rng = np.random.default_rng(12)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    expired = [
        store("acme", image=unit_rows(rng, 1, runtime.dim)[0], created_at=old) for _ in range(4)
    ]
    kept = [
        store(
            "globex", image=unit_rows(rng, 1, runtime.dim)[0], text=unit_rows(rng, 2, runtime.dim)
        )
        for _ in range(6)
    ]
    with transaction(sessions) as session:
        versions.activate(
            session, versions.publish(session, policy_text(), author="t").version, by="t"
        )
    traffic = TrafficStore(settings.traffic_dir, runtime.revision)
    draft = parse_policy(policy_text(name="draft"))
    with sessions() as session:
        assert backtest.backtest(session, draft, runtime, store=traffic).items == 10
    assert retention.purge_expired(sessions, BlobStore(settings.blob_dir), 30) == 4
    with sessions() as session:
        report = backtest.backtest(session, draft, runtime, store=traffic)
        from_sql = backtest.backtest(session, draft, runtime)  # the reference: SQL rows
        assert report.items == from_sql.items == 6
        assert report.actions == from_sql.actions
        assert sorted(load_embeddings(session, runtime.revision, store=traffic).ids) == sorted(kept)
    assert set(expired).isdisjoint(i for t in report.transitions for i in t.examples)
    assert traffic.status()["deleted"] == 4
