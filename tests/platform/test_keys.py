"""Keys as the README describes them: `clipmod keys create/list/revoke/rotate` and the same for
admins over the API; scopes; a revoked key is refused at once."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod import keys
from clipmod.db import transaction
from clipmod.settings import Settings
from tests.api.conftest import auth


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `clipmod ARGS…` in-process against the test database; returns (status, out, err)."""
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def admin_key(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        return keys.create_key(session, "ops", admin=True)


def test_cli_create_admin_with_scopes_list_revoke_rotate(cli, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    status, out, err = cli(
        "keys", "create", "--tenant", "acme", "--admin", "--scope", "items:write",
        "--scope", "items:read", "--label", "pipeline",
    )  # fmt: skip
    assert status == 0 and "admin" in err
    key = out.strip().splitlines()[-1]
    assert client.get("/v1/items", headers=auth(key)).status_code == 200
    refused = client.delete("/v1/items/x", headers=auth(key))
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (403, "insufficient_scope")

    status, out, _ = cli("keys", "list", "--json")
    (listed,) = json.loads(out)
    prefix = keys.prefix_of(key)
    assert listed["prefix"] == prefix and listed["admin"] is True
    assert listed["scopes"] == ["items:read", "items:write"] and listed["label"] == "pipeline"
    assert key.split("_", 2)[2] not in out  # never the secret
    status, text_out, _ = cli("keys", "list")
    assert prefix in text_out and key.split("_", 2)[2] not in text_out

    status, out, err = cli("keys", "rotate", prefix)
    new = out.strip().splitlines()[-1]
    assert status == 0 and new != key and keys.prefix_of(new) != prefix
    assert client.get("/v1/items", headers=auth(key)).status_code == 401  # at once
    assert client.get("/v1/items", headers=auth(new)).status_code == 200
    rotated = json.loads(cli("keys", "list", "--json")[1])
    assert [k["scopes"] for k in rotated if k["active"]] == [["items:read", "items:write"]]

    assert cli("keys", "revoke", keys.prefix_of(new))[0] == 0
    resp = client.get("/v1/items", headers=auth(new))
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (401, "invalid_api_key")
    status, _, err = cli("keys", "revoke", "nosuchprefix")
    assert status == 2 and "key_not_found" in err


def test_cli_rotate_with_grace_keeps_the_old_key_for_a_while(cli, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    key = cli("keys", "create", "--tenant", "acme")[1].strip()
    new = cli("keys", "rotate", keys.prefix_of(key), "--grace", "3600")[1].strip()
    assert client.get("/v1/items", headers=auth(key)).status_code == 200
    assert client.get("/v1/items", headers=auth(new)).status_code == 200


def test_cli_refuses_an_unknown_scope(cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as caught:
        cli("keys", "create", "--tenant", "acme", "--scope", "everything")
    assert caught.value.code == 2


def test_admin_api_creates_lists_rotates_and_revokes(
    client: FlaskClient, admin_key: str, api_key: str
) -> None:
    created = client.post(
        "/v1/keys",
        json={"tenant": "globex", "label": "ci", "scopes": ["items:read"]},
        headers=auth(admin_key),
    )
    assert created.status_code == 201, created.get_json()
    key = created.get_json()["key"]
    assert client.get("/v1/items", headers=auth(key)).status_code == 200
    assert client.post("/v1/items", json={"text": "x"}, headers=auth(key)).status_code == 403

    listed = client.get("/v1/keys?tenant=globex", headers=auth(admin_key)).get_json()["keys"]
    assert [k["prefix"] for k in listed] == [keys.prefix_of(key)]
    assert key not in json.dumps(client.get("/v1/keys", headers=auth(admin_key)).get_json())

    rotated = client.post(
        f"/v1/keys/{keys.prefix_of(key)}/rotate", json={"grace_s": 0}, headers=auth(admin_key)
    )
    assert rotated.status_code == 201
    new = rotated.get_json()["key"]
    assert client.get("/v1/items", headers=auth(key)).status_code == 401
    revoked = client.post(f"/v1/keys/{keys.prefix_of(new)}/revoke", headers=auth(admin_key))
    assert revoked.status_code == 200 and revoked.get_json()["active"] is False
    assert client.get("/v1/items", headers=auth(new)).status_code == 401

    for method, path in [("get", "/v1/keys"), ("post", "/v1/keys/x/revoke")]:
        resp = getattr(client, method)(path, headers=auth(api_key))
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (403, "forbidden")


def test_admin_api_refuses_bad_bodies(client: FlaskClient, admin_key: str) -> None:
    for body in ({"tenant": "a", "scopes": ["root"]}, {"tenant": ""}, {"tenant": "a", "x": 1}):
        resp = client.post("/v1/keys", json=body, headers=auth(admin_key))
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (422, "invalid_input")
    resp = client.post("/v1/keys/nope/rotate", headers=auth(admin_key))
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (404, "key_not_found")


def test_keys_from_before_scopes_keep_every_scope(
    client: FlaskClient, api_key: str, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        row = keys.find(session, keys.prefix_of(api_key))
        assert row.scopes is None
    assert client.delete("/v1/items/nothing", headers=auth(api_key)).status_code == 404
