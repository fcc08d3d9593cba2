"""The policy editor over HTTP (Flask's test client): admins only, drafts per person, checks,
publishing refused with errors, shipping forms, diff and shadow pages, backtest and suggest."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from api.dashboard.shell import SESSION_COOKIE
from api.policies import RUNTIME_KEY
from clipmod import retention
from clipmod.db import transaction
from clipmod.models import AuditEvent, PolicyDraft, User
from clipmod.policy import ship, versions
from clipmod.settings import Settings
from tests.conftest import POLICY_FILE
from tests.dashboard.conftest import MakeItem, People, sign_in

DEMO = POLICY_FILE.read_text(encoding="utf-8")


@pytest.fixture
def loaded(app: Flask, runtime: Any) -> Flask:
    app.extensions[RUNTIME_KEY] = runtime
    return app


def _open(client: FlaskClient, token: str, version_id: int | None = None) -> str:
    """Open a version (or a blank draft) in the editor; returns the draft's URL."""
    data = {"csrf_token": token}
    if version_id is not None:
        data["version_id"] = str(version_id)
    resp = client.post("/dashboard/policies/drafts", data=data)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    return resp.headers["Location"]


def _json(client: FlaskClient, url: str, token: str, body: dict[str, Any]) -> Any:
    return client.post(url, json=body, headers={"X-CSRFToken": token, "X-Requested-With": "fetch"})


def test_a_moderator_cannot_open_anything_of_the_editor(
    client: FlaskClient, alice: User, admin: User, seeded: int
) -> None:
    token = sign_in(client, alice.email)
    assert "/dashboard/policies" not in client.get("/dashboard/").get_data(as_text=True)
    for path in (
        "/dashboard/policies",
        "/dashboard/policies/diff",
        "/dashboard/policies/shadow-report",
        "/dashboard/policies/drafts/1",
    ):
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert "this page is for admins" in resp.get_data(as_text=True)
    for path in (
        "/dashboard/policies/drafts",
        f"/dashboard/policies/versions/{seeded}/activate",
        "/dashboard/policies/shadow/stop",
    ):
        assert client.post(path, data={"csrf_token": token}).status_code == 403, path
    for path in (
        "/dashboard/policies/drafts/1/check",
        "/dashboard/policies/drafts/1/publish",
        "/dashboard/policies/backtest",
        "/dashboard/policies/suggest",
        "/dashboard/policies/apply",
    ):
        resp = _json(client, path, token, {"yaml": DEMO})
        assert (resp.status_code, resp.json["error"]["code"]) == (403, "forbidden"), path


def test_drafts_are_saved_per_person_and_survive_a_reload(
    loaded: Flask, client: FlaskClient, admin: User, people: People, seeded: int
) -> None:
    token = sign_in(client, admin.email)
    url = _open(client, token, seeded)
    page = client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "demo@1" in html
    nonce = html.split("editor.js")[1].split('nonce="')[1].split('"')[0]
    csp = page.headers["Content-Security-Policy"]
    assert f"style-src 'self' 'nonce-{nonce}'" in csp and "script-src 'self';" in csp
    assert "img-src 'self' data:;" in csp  # CodeMirror's lint icons; other pages keep 'self'
    assert "img-src 'self';" in client.get("/dashboard/policies").headers["Content-Security-Policy"]
    edited = DEMO.replace("block_at: 0.76", "block_at: 0.9")
    checked = _json(client, url + "/check", token, {"yaml": edited})
    assert checked.status_code == 200 and checked.json["saved"] is True
    assert checked.json["errors"] == 0
    assert "block_at: 0.9" in client.get(url).get_data(as_text=True)  # the reload shows it
    other = people.add("root2@example.com", "admin", ())
    client.post("/dashboard/logout", data={"csrf_token": token})
    token2 = sign_in(client, other.email)
    assert client.get(url).status_code == 404
    assert _json(client, url + "/check", token2, {"yaml": DEMO}).status_code == 404
    blank = client.get(_open(client, token2)).get_data(as_text=True)
    assert "name: my-policy" in blank and "model: clipmod-demo-clip" in blank


def test_check_positions_errors_and_never_saves_a_5mb_paste(
    loaded: Flask, client: FlaskClient, admin: User, seeded: int, sessions: sessionmaker[Session]
) -> None:
    token = sign_in(client, admin.email)
    url = _open(client, token, seeded)
    typo = DEMO.replace("  block_at: 0.76", "  block_att: 0.76")
    body = _json(client, url + "/check", token, {"yaml": typo}).json
    assert body["errors"] == 2
    where = {(m["line"], m["column"], m["field"], m["message"]) for m in body["markers"]}
    assert (126, 3, "categories[0].block_att", "unknown key") in where
    huge = DEMO + "#" * (5 * 2**20) + "\n"
    said = _json(client, url + "/check", token, {"yaml": huge}).json
    assert said["saved"] is False and said["markers"][0]["line"] == 1
    assert said["markers"][0]["message"].startswith("the policy is 5.3 MB; the limit is 1 MiB")
    with sessions() as s:
        draft = s.scalar(select(PolicyDraft))
        assert draft is not None and draft.yaml_text == typo


def test_publish_is_refused_with_errors_and_ships_without(
    loaded: Flask, client: FlaskClient, admin: User, seeded: int, sessions: sessionmaker[Session]
) -> None:
    token = sign_in(client, admin.email)
    url = _open(client, token, seeded)
    bad = _json(
        client,
        url + "/publish",
        token,
        {"yaml": DEMO.replace("model: clipmod-demo-clip", "model: openai/clip-vit-large")},
    )
    assert bad.status_code == 422
    assert bad.json["error"] == {
        "code": "policy_has_errors",
        "message": "not published: the draft has 1 error(s)",
    }
    assert bad.json["markers"][0]["code"] == "model_mismatch"
    same = _json(client, url + "/publish", token, {"yaml": DEMO})
    assert same.json["created"] is False and same.json["version"] == "demo@1"
    edited = DEMO.replace("block_at: 0.76", "block_at: 0.9")
    shipped = _json(client, url + "/publish", token, {"yaml": edited, "then": "shadow"})
    assert shipped.status_code == 200, shipped.json
    assert shipped.json["message"] == "Published demo@2. It runs in shadow for everyone."
    page = client.get("/dashboard/policies").get_data(as_text=True)
    assert "Published demo@2. It runs in shadow for everyone." in page
    with sessions() as s:
        events = [
            (e.action, e.actor, e.user_id)
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("policy_%")))
        ]
    assert events == [
        ("policy_publish", admin.email, admin.id),
        ("policy_shadow", admin.email, admin.id),
    ]


def test_shipping_forms_activate_stop_roll_back_and_refuse_clearly(
    client: FlaskClient, admin: User, seeded: int, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as s:
        v2 = ship.publish(
            s, DEMO.replace("block_at: 0.76", "block_at: 0.9"), actor=ship.Actor("cli:x")
        ).version.id
    token = sign_in(client, admin.email)

    def post(path: str, **form: str) -> str:
        resp = client.post(path, data={"csrf_token": token, **form}, follow_redirects=True)
        assert resp.status_code == 200
        return resp.get_data(as_text=True)

    assert "demo@2 now runs in shadow for everyone" in post(
        f"/dashboard/policies/versions/{v2}/activate", mode="shadow"
    )
    assert "Stopped the shadow run of demo@2 for everyone." in post(
        "/dashboard/policies/shadow/stop"
    )
    assert "Nothing changed: no shadow run of its own for everyone" in post(
        "/dashboard/policies/shadow/stop"
    )
    assert "demo@2 is active for everyone." in post(
        f"/dashboard/policies/versions/{v2}/activate", mode="active"
    )
    page = post(f"/dashboard/policies/versions/{seeded}/activate", mode="active")
    assert "Rolled back: demo@1 is active for everyone." in page
    missing = post("/dashboard/policies/versions/999/activate", mode="active")
    assert "Nothing changed: policy version 999 does not exist" in missing
    nobody = post(f"/dashboard/policies/versions/{v2}/activate", mode="active", tenant="nobody")
    assert "Nothing changed: no tenant named &#39;nobody&#39;" in nobody
    with sessions() as s:
        assert versions.resolve(s, None).label == "demo@1"  # type: ignore[union-attr]
    for action in ("policy_shadow", "policy_shadow_stop", "policy_activate", "policy_rollback"):
        assert f'data-action="{action}"' in page


def test_diff_and_shadow_report_pages(
    client: FlaskClient,
    admin: User,
    seeded: int,
    sessions: sessionmaker[Session],
    make_item: MakeItem,
) -> None:
    with transaction(sessions) as s:
        v2 = ship.publish(
            s, DEMO.replace("review_at: 0.34", "review_at: 0.3"), actor=ship.Actor("cli:x")
        ).version.id
    sign_in(client, admin.email)
    html = client.get(f"/dashboard/policies/diff?a={seeded}&b={v2}").get_data(as_text=True)
    assert "category drugs: review_at 0.34 → 0.3 (lowered)" in html
    assert html.count('class="changed"') == 1
    report = client.get("/dashboard/policies/shadow-report").get_data(as_text=True)
    assert "No shadow verdicts yet" in report
    assert client.get("/dashboard/policies/diff?a=nope").status_code == 404


def test_a_backtest_started_on_one_replica_is_read_on_another(
    loaded: Flask,
    client: FlaskClient,
    admin: User,
    settings: Settings,
    seeded: int,
    runtime: Any,
    make_item: MakeItem,
) -> None:
    """Production runs API replicas behind a load balancer: the page's poll may reach another
    one. The job's state is in the database, so that replica answers it (it said
    `job_not_found` while jobs lived in the memory of the process that ran them)."""
    cup = runtime.encode_texts(["a photo of a cup"])[0]
    item = make_item(embedding=cup / np.linalg.norm(cup), revision=runtime.revision)
    strict = DEMO.replace(
        "  review_at: 0.49\n  block_at: 0.76", "  review_at: 0.0\n  block_at: 0.0"
    )
    replica = create_app(settings)
    replica.extensions[RUNTIME_KEY] = runtime
    try:
        token = sign_in(client, admin.email)
        there = replica.test_client()
        cookie = client.get_cookie(SESSION_COOKIE)
        assert cookie is not None
        there.set_cookie(SESSION_COOKIE, cookie.value)
        started = _json(client, "/dashboard/policies/backtest", token, {"yaml": strict, "last": 5})
        state = there.get(started.json["poll"], headers={"X-Requested-With": "fetch"}).json
        deadline = time.monotonic() + 30
        while state["status"] == "running" and time.monotonic() < deadline:
            state = there.get(state["poll"]).json
        assert state["status"] == "done", state
        assert state["job"] == started.json["job"] and state["result"]["items"] == 1
        assert set(state["result"]["examples"]) == {item}
        # The report keeps ids only: an item deleted since is no longer shown.
        svc = loaded.extensions["clipmod"]
        assert retention.delete_item(svc.sessions, svc.blobs, item) == retention.Outcome.DELETED
        state = client.get(state["poll"]).json
        assert state["result"]["items"] == 1 and state["result"]["examples"] == {}
    finally:
        replica.extensions["clipmod"].engine.dispose()


def test_backtest_job_suggest_and_apply(
    loaded: Flask,
    client: FlaskClient,
    admin: User,
    seeded: int,
    runtime: Any,
    make_item: MakeItem,
) -> None:
    knife = runtime.encode_texts(["a photo of a knife"])[0]
    cup = runtime.encode_texts(["a photo of a cup"])[0]
    ids = [
        make_item(embedding=e / np.linalg.norm(e), revision=runtime.revision) for e in (knife, cup)
    ]
    token = sign_in(client, admin.email)
    url = _open(client, token, seeded)
    strict = DEMO.replace(
        "  review_at: 0.49\n  block_at: 0.76", "  review_at: 0.0\n  block_at: 0.0"
    )
    started = _json(client, "/dashboard/policies/backtest", token, {"yaml": strict, "last": 10})
    state = started.json
    deadline = time.monotonic() + 30
    while state["status"] == "running" and time.monotonic() < deadline:
        state = client.get(state["poll"]).json
    assert state["status"] == "done", state
    result = state["result"]
    assert result["items"] == 2 and result["window"] == "the last 10 items of every tenant"
    assert result["actions"]["draft"]["block"] == 2
    moved = {i for t in result["transitions"] for i in t["examples"]}
    assert moved and moved <= set(ids)
    example = result["examples"][next(iter(moved))]
    assert example["href"] == f"/dashboard/items/{example['id']}" and example["image"] is None
    span = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z", "tenant": "acme"}
    early = _json(client, "/dashboard/policies/backtest", token, {"yaml": strict, **span}).json
    while early["status"] == "running":
        early = client.get(early["poll"]).json
    assert early["result"]["items"] == 0  # the page's datetime-local values parse; none then
    assert early["result"]["window"] == (
        "all stored items of tenant acme from 2026-01-01 00:00 UTC until 2026-01-02 00:00 UTC"
    )
    bad = _json(client, "/dashboard/policies/backtest", token, {"yaml": "name: [", "last": 10})
    assert bad.status_code == 422 and bad.json["markers"][0]["message"].startswith("YAML syntax")
    other = client.get(
        "/dashboard/policies/backtest/" + "0" * 32, headers={"X-Requested-With": "fetch"}
    )
    assert (other.status_code, other.json["error"]["code"]) == (404, "job_not_found")
    suggested = _json(client, "/dashboard/policies/suggest", token, {"yaml": DEMO}).json
    assert [c["id"] for c in suggested["categories"]] == ["weapons", "drugs", "gore"]
    applied = _json(
        client,
        "/dashboard/policies/apply",
        token,
        {"yaml": DEMO, "category": "gore", "block_at": 0.8},
    ).json
    assert applied["yaml"] == DEMO.replace("  block_at: 0.75", "  block_at: 0.8")
    assert url.startswith("/dashboard/policies/drafts/")
