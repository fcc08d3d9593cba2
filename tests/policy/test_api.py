"""`/v1/policies` through Flask's test client against a real database: admin keys only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api.policies import RUNTIME_KEY
from clipmod import keys
from clipmod.db import transaction
from clipmod.models import ActivationMode
from clipmod.policy import versions
from tests.policy.conftest import StoreFn, policy_text, unit_rows

ENDPOINTS = [
    ("get", "/v1/policies"),
    ("post", "/v1/policies"),
    ("get", "/v1/policies/test@1"),
    ("post", "/v1/policies/test@1/activate"),
    ("post", "/v1/policies/lint"),
    ("post", "/v1/policies/backtest"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_needs_an_admin_key(
    client: FlaskClient, platform: dict[str, str], method: str, path: str
) -> None:
    call = getattr(client, method)
    anonymous = call(path, json={"yaml": policy_text()})
    assert anonymous.status_code == 401
    assert anonymous.json["error"]["code"] == "unauthorized"
    refused = call(path, json={"yaml": policy_text()}, headers=platform)
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "forbidden"


def test_publish_is_idempotent_and_activates(
    client: FlaskClient, admin: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    first = client.post("/v1/policies", json={"yaml": policy_text()}, headers=admin)
    assert first.status_code == 201
    body = first.json
    assert body["created"] is True
    assert body["activated"] == {"mode": "active", "tenants": None}
    assert body["version"]["label"] == "test@1"
    assert body["version"]["author"] == "api:ops"
    assert body["version"]["in_force"] == [{"tenant": None, "mode": "active"}]
    again = client.post(
        "/v1/policies", json={"yaml": policy_text(), "activate": False}, headers=admin
    )
    assert again.status_code == 200
    assert (again.json["created"], again.json["version"]["id"]) == (False, body["version"]["id"])
    with transaction(sessions) as session:
        keys.get_or_create_tenant(session, "acme")
    shadow = client.post(
        "/v1/policies",
        json={"yaml": policy_text(weapons=(0.4, 0.9)), "tenants": ["acme"], "shadow": True},
        headers=admin,
    )
    assert shadow.status_code == 201
    assert shadow.json["version"]["parent_id"] == body["version"]["id"]
    assert shadow.json["activated"] == {"mode": "shadow", "tenants": ["acme"]}
    with sessions() as session:
        acme = keys.get_or_create_tenant(session, "acme")
        live = versions.resolve(session, acme.id)
        shadowed = versions.resolve(session, acme.id, ActivationMode.SHADOW)
        assert live is not None and live.label == "test@1"
        assert shadowed is not None and shadowed.label == "test@2"


def test_invalid_policies_are_422_with_positions(
    client: FlaskClient, admin: dict[str, str]
) -> None:
    reply = client.post(
        "/v1/policies", json={"yaml": policy_text(weapons=(0.9, 0.5))}, headers=admin
    )
    assert reply.status_code == 422
    assert reply.json == {
        "error": {
            "code": "invalid_policy",
            "message": "yaml:8:15 categories[0].block_at: must be ≥ review_at",
            "problems": [
                {
                    "source": "yaml",
                    "line": 8,
                    "column": 15,
                    "field": "categories[0].block_at",
                    "message": "must be ≥ review_at",
                }
            ],
        }
    }
    unknown = client.post("/v1/policies", json={"yaml": "x", "colour": 1}, headers=admin)
    assert (unknown.status_code, unknown.json["error"]["message"]) == (
        422,
        "colour: unknown field",
    )
    not_json = client.post("/v1/policies", data="name: x", headers=admin)
    assert (not_json.status_code, not_json.json["error"]["code"]) == (422, "invalid_json")
    nobody = client.post(
        "/v1/policies", json={"yaml": policy_text(), "tenants": ["nobody"]}, headers=admin
    )
    assert (nobody.status_code, nobody.json["error"]["code"]) == (422, "unknown_tenant")


def test_list_show_and_rollback(client: FlaskClient, admin: dict[str, str]) -> None:
    for thresholds in ((0.5, 0.8), (0.4, 0.8)):
        client.post("/v1/policies", json={"yaml": policy_text(weapons=thresholds)}, headers=admin)
    listed = client.get("/v1/policies", headers=admin).json["versions"]
    assert [(v["label"], v["in_force"]) for v in listed] == [
        ("test@2", [{"tenant": None, "mode": "active"}]),
        ("test@1", []),
    ]
    assert "yaml" not in listed[0]
    shown = client.get("/v1/policies/test@1", headers=admin)
    assert shown.status_code == 200 and shown.json["yaml"] == policy_text()
    by_id = client.get(f"/v1/policies/{listed[0]['id']}", headers=admin)
    assert by_id.json["label"] == "test@2"
    for missing in ("test@9", "nope", "test@x"):
        reply = client.get(f"/v1/policies/{missing}", headers=admin)
        assert (reply.status_code, reply.json["error"]["code"]) == (
            404,
            "policy_version_not_found",
        )
    rolled = client.post("/v1/policies/test@1/activate", headers=admin)
    assert rolled.status_code == 200
    assert rolled.json["version"]["in_force"] == [{"tenant": None, "mode": "active"}]
    assert client.get("/v1/policies/test@2", headers=admin).json["in_force"] == []


def test_lint_loads_the_model_once_on_first_use(
    app: Flask, client: FlaskClient, admin: dict[str, str]
) -> None:
    assert RUNTIME_KEY not in app.extensions
    text = policy_text(extra="escalation: {lower_by: 0.2}\n")
    reply = client.post("/v1/policies/lint", json={"yaml": text}, headers=admin)
    assert reply.status_code == 200
    runtime = app.extensions[RUNTIME_KEY]
    assert runtime.revision
    body = reply.json
    assert body["errors"] == 0 and body["status"] == 0
    unused = [f for f in body["findings"] if f["code"] == "escalation_unused"]
    assert unused == [
        {
            "severity": "warning",
            "code": "escalation_unused",
            "field": "escalation.lower_by",
            "message": "no category is `special`, so escalation never applies",
            "source": "yaml",
            "line": 14,
            "column": 24,
        }
    ]
    strict = client.post("/v1/policies/lint", json={"yaml": text, "strict": True}, headers=admin)
    assert strict.json["status"] == 1
    assert app.extensions[RUNTIME_KEY] is runtime
    every = client.post(
        "/v1/policies/lint", json={"yaml": text, "near_duplicate": -1}, headers=admin
    )
    near = [f for f in every.json["findings"] if f["code"] == "near_duplicate_prompt"]
    assert len(near) == 6  # every pair of the policy's 4 prompts
    bad = client.post("/v1/policies/lint", json={"yaml": "name: [\n"}, headers=admin)
    assert bad.status_code == 422 and bad.json["error"]["problems"][0]["line"] == 2


def test_backtest_endpoint(
    loaded: Flask,
    client: FlaskClient,
    admin: dict[str, str],
    store: StoreFn,
    runtime: Any,
) -> None:
    rng = np.random.default_rng(5)
    for i in range(12):
        store(
            "acme",
            image=unit_rows(rng, 1, runtime.dim)[0],
            text=unit_rows(rng, i % 3 + 1, runtime.dim),
        )
    none = client.post("/v1/policies/backtest", json={"yaml": policy_text()}, headers=admin)
    assert (none.status_code, none.json["error"]["code"]) == (409, "no_active_policy")
    client.post("/v1/policies", json={"yaml": policy_text()}, headers=admin)
    draft = policy_text(weapons=(-1.0, -1.0), drugs=(-1.0, -1.0))  # blocks everything
    reply = client.post("/v1/policies/backtest", json={"yaml": draft, "examples": 2}, headers=admin)
    assert reply.status_code == 200
    report = reply.json
    assert report["items"] == 12 and report["baselines"] == {"test@1": 12}
    assert report["draft"] == "test (draft)"
    assert report["actions"]["draft"] == {"allow": 0, "review": 0, "block": 12}
    assert (
        sum(t["count"] for t in report["transitions"])
        == 12 - report["actions"]["baseline"]["block"]
    )
    assert all(len(t["examples"]) <= 2 for t in report["transitions"])
    assert [c["id"] for c in report["categories"]] == ["weapons", "drugs"]
    assert report["categories"][1]["draft"]["rate"] == 1.0
    since = client.post(
        "/v1/policies/backtest",
        json={"yaml": draft, "since": "2999-01-01T00:00:00Z"},
        headers=admin,
    )
    assert since.json["items"] == 0
    against = client.post(
        "/v1/policies/backtest", json={"yaml": draft, "against": "test@4"}, headers=admin
    )
    assert against.status_code == 404
