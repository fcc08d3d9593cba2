"""`/v1/banks` and `/v1/search` through Flask's test client against a real database."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.policy import versions
from tests.policy.conftest import StoreFn, policy_text, unit_rows

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/banks"),
        ("post", "/v1/banks"),
        ("get", "/v1/banks/x"),
        ("post", "/v1/banks/x/entries"),
        ("post", "/v1/banks/x/entries/remove"),
        ("delete", "/v1/banks/x/entries/1"),
        ("post", "/v1/banks/x/backtest"),
        ("get", "/v1/search?text=knife"),
    ],
)
def test_every_endpoint_needs_an_admin_key(
    client: FlaskClient, api_key: str, method: str, path: str
) -> None:
    reply = getattr(client, method)(path, json={}, headers={"Authorization": f"Bearer {api_key}"})
    assert (reply.status_code, reply.json["error"]["code"]) == (403, "forbidden")
    assert getattr(client, method)(path, json={}).status_code == 401


def test_a_bank_from_creation_to_backtest(
    loaded: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    store: StoreFn,
    runtime: Any,
    sessions: sessionmaker[Session],
) -> None:
    created = client.post("/v1/banks", json={"name": "known-bad", "kind": "block"}, headers=admin)
    assert created.status_code == 201, created.json
    assert created.json["model_revision"] == runtime.revision and created.json["label"] == (
        "known-bad@0"
    )
    rng = np.random.default_rng(0)
    items = [store("acme", image=unit_rows(rng, 1, runtime.dim)[0]) for _ in range(4)]
    added = client.post("/v1/banks/known-bad/entries", json={"items": items[:2]}, headers=admin)
    assert (added.status_code, added.json["version"], len(added.json["added"])) == (201, 1, 2)
    upload = client.post(
        "/v1/banks/known-bad/entries",
        data={
            "file": [
                (io.BytesIO((SAMPLES / "red-knife.png").read_bytes()), "red-knife.png"),
                (io.BytesIO((SAMPLES / "blue-cup.png").read_bytes()), "blue-cup.png"),
            ],
            "item": items[2],
            "note": "from the queue",
        },
        headers=admin,
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201, upload.json
    assert (upload.json["label"], upload.json["entries"]) == ("known-bad@2", 5)
    entry = upload.json["added"][-1]  # items come first, then uploads: blue-cup.png
    removed = client.delete(f"/v1/banks/known-bad/entries/{entry}", headers=admin)
    assert (removed.status_code, removed.json["removed"], removed.json["entries"]) == (
        201,
        [entry],
        4,
    )
    page = client.get("/v1/banks/known-bad?entries=1&limit=3&version=2", headers=admin).json
    assert [v["version"] for v in page["versions"]] == [3, 2, 1]
    assert page["shown_version"] == 2 and len(page["entry_list"]) == 3
    rest = client.get(
        f"/v1/banks/known-bad?entries=1&version=2&after={page['next_after']}", headers=admin
    ).json
    assert len(rest["entry_list"]) == 2 and rest["next_after"] is None
    sources = {e["source"] for e in page["entry_list"] + rest["entry_list"]}
    assert sources == {"item", "upload"}
    assert client.get("/v1/banks", headers=admin).json["banks"][0]["label"] == "known-bad@3"
    with transaction(sessions) as session:
        text = policy_text() + "banks:\n  - {name: known-bad, threshold: 0.95}\n"
        versions.activate(session, versions.publish(session, text, author="t").version, by="t")
    bt = client.post("/v1/banks/known-bad/backtest", json={"from": 0}, headers=admin)
    assert bt.status_code == 200, bt.json
    assert (bt.json["before"], bt.json["after"], bt.json["threshold"]) == (
        "known-bad@0",
        "known-bad@3",
        0.95,
    )
    assert bt.json["newly_matched"] == 3 and bt.json["policy"]["items"] == 4
    proposal = client.post(
        "/v1/banks/known-bad/backtest", json={"add_items": [items[3]]}, headers=admin
    ).json
    assert (proposal["after"], proposal["newly_matched"]) == ("known-bad@4 (proposed)", 1)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/banks", {"name": "Bad", "kind": "block"}, 422, "invalid_input"),
        ("/v1/banks", {"name": "ok", "kind": "delete"}, 422, "invalid_input"),
        ("/v1/banks/nope/entries", {"items": ["x"]}, 404, "bank_not_found"),
        ("/v1/banks/known-bad/entries", {"items": ["nope"]}, 404, "item_not_found"),
        ("/v1/banks/known-bad/entries", {"items": []}, 422, "invalid_input"),
        ("/v1/banks/known-bad/entries/remove", {"entries": [42]}, 404, "bank_entry_not_found"),
        ("/v1/banks/known-bad/backtest", {"threshold": 2}, 422, "invalid_input"),
        ("/v1/banks/known-bad/backtest", {}, 409, "bank_not_referenced"),
        ("/v1/banks/known-bad/backtest", {"to": 9}, 404, "bank_version_not_found"),
    ],
)
def test_refusals_have_stable_codes(
    loaded: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    client.post("/v1/banks", json={"name": "known-bad", "kind": "block"}, headers=admin)
    reply = client.post(path, json=body, headers=admin)
    assert (reply.status_code, reply.json["error"]["code"]) == (status, code), reply.json


def test_a_broken_upload_is_refused_naming_the_file(
    loaded: Flask, client: FlaskClient, admin: dict[str, str]
) -> None:
    client.post("/v1/banks", json={"name": "known-bad", "kind": "block"}, headers=admin)
    reply = client.post(
        "/v1/banks/known-bad/entries",
        data={"file": (io.BytesIO(b"%PDF-1.4 not an image"), "scan.pdf")},
        headers=admin,
        content_type="multipart/form-data",
    )
    assert reply.status_code == 415
    assert reply.json["error"]["message"].startswith("scan.pdf: ")
    assert client.get("/v1/banks/known-bad", headers=admin).json["version"] == 0


def test_search_by_text_and_by_item(
    loaded: Flask, client: FlaskClient, admin: dict[str, str], store: StoreFn, runtime: Any
) -> None:
    rng = np.random.default_rng(5)
    knife = runtime.encode_texts(["a photo of a knife"])[0]
    jitter = knife + 0.01 * rng.standard_normal(runtime.dim)
    near = store("acme", image=jitter / np.linalg.norm(jitter))
    nearer = store("globex", image=knife)
    others = [store("acme", image=unit_rows(rng, 1, runtime.dim)[0]) for _ in range(20)]
    store("acme", text=unit_rows(rng, 1, runtime.dim))  # text only: not searched
    reply = client.get("/v1/search?text=a photo of a knife&limit=2", headers=admin)
    assert reply.status_code == 200, reply.json
    body = reply.json
    assert [r["id"] for r in body["results"]] == [nearer, near]
    assert body["results"][0]["tenant"] == "globex" and body["searched"] == 22
    assert body["results"][0]["similarity"] == pytest.approx(1.0, abs=2e-3)
    like = client.get(f"/v1/search?like={near}&limit=3&tenant=acme", headers=admin).json
    assert near not in [r["id"] for r in like["results"]]
    assert {r["tenant"] for r in like["results"]} == {"acme"}
    assert {r["id"] for r in like["results"]} <= set(others)
    for query, code in (
        ("", "invalid_query"),
        ("?text=a&like=b", "invalid_query"),
        ("?text=a&limit=0", "invalid_query"),
        ("?like=nope", "item_not_found"),
        ("?text=a&tenant=nope", "unknown_tenant"),
    ):
        assert client.get(f"/v1/search{query}", headers=admin).json["error"]["code"] == code


def test_a_deleted_item_cannot_join_a_bank(
    loaded: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    platform: dict[str, str],
    store: StoreFn,
    runtime: Any,
) -> None:
    item = store("acme", image=unit_rows(np.random.default_rng(5), 1, runtime.dim)[0])
    client.post("/v1/banks", json={"name": "known-bad", "kind": "block"}, headers=admin)
    assert client.delete(f"/v1/items/{item}", headers=platform).status_code == 204
    reply = client.post("/v1/banks/known-bad/entries", json={"items": [item]}, headers=admin)
    assert (reply.status_code, reply.json["error"]["code"]) == (409, "item_deleted"), reply.json
    assert "was deleted" in reply.json["error"]["message"]
