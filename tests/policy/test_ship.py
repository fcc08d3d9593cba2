"""Shipping: shadow runs that stop, rollbacks recorded as such, races between two publishes,
and the audit trail whichever front end (CLI, API) made the change."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod import keys
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import ActivationMode, AuditEvent, PolicyActivation, PolicyVersion
from clipmod.policy import ship, versions
from clipmod.policy.versions import PublishConflict
from tests.policy.conftest import policy_text

CLI = ship.Actor("cli:test")


def _publish(session: Session, **thresholds: Any) -> PolicyVersion:
    return ship.publish(session, policy_text(**thresholds), actor=CLI).version


def _events(sessions: sessionmaker[Session]) -> list[tuple[str, str, dict[str, Any]]]:
    with sessions() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.action, e.actor, e.detail) for e in rows]


def test_a_stopped_shadow_run_resolves_to_none_and_a_tenant_falls_back_to_everyones(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        acme = keys.get_or_create_tenant(s, "acme")
        v1, v2, v3 = (_publish(s, weapons=(w, 0.9)) for w in (0.5, 0.4, 0.3))
        ship.activate(s, v1, actor=CLI, tenant_names=[])
        ship.activate(s, v2, actor=CLI, tenant_names=[], shadow=True)
        ship.activate(s, v3, actor=CLI, tenant_names=["acme"], shadow=True)
    with transaction(sessions) as s:
        assert versions.resolve(s, acme.id, ActivationMode.SHADOW).label == "test@3"  # type: ignore[union-attr]
        assert ship.stop_shadow(s, actor=CLI, tenant_names=["acme"]) == ["test@3"]
        # acme's own run ended: it follows everyone's shadow again.
        assert versions.resolve(s, acme.id, ActivationMode.SHADOW).label == "test@2"  # type: ignore[union-attr]
        where = versions.activations_by_version(s)
        assert v3.id not in where
        assert where[v2.id] == [{"tenant": None, "mode": "shadow"}]
    with transaction(sessions) as s:
        ship.stop_shadow(s, actor=CLI, tenant_names=[])
        assert versions.resolve(s, acme.id, ActivationMode.SHADOW) is None
        assert versions.resolve(s, None, ActivationMode.SHADOW) is None
        assert versions.resolve(s, acme.id).label == "test@1"  # type: ignore[union-attr]
        assert all(
            w["mode"] == "active" for ws in versions.activations_by_version(s).values() for w in ws
        )
        # a new shadow run after a stop is in force again
        ship.activate(s, v3, actor=CLI, tenant_names=[], shadow=True)
        assert versions.resolve(s, acme.id, ActivationMode.SHADOW).label == "test@3"  # type: ignore[union-attr]


def test_stopping_what_does_not_run_is_refused_and_writes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        keys.get_or_create_tenant(s, "acme")
        v1 = _publish(s)
        ship.activate(s, v1, actor=CLI, tenant_names=[], shadow=True)
    with sessions() as s, s.begin():
        rows_before = len(list(s.scalars(select(PolicyActivation))))
    for tenants, says in (
        (["acme"], "no shadow run of its own for tenant 'acme'; it follows everyone's (test@1)"),
        (["nobody"], "no tenant named 'nobody'"),
    ):
        with pytest.raises(ClipmodError) as caught, transaction(sessions) as s:
            ship.stop_shadow(s, actor=CLI, tenant_names=tenants)
        assert says in caught.value.message
    with sessions() as s:
        assert len(list(s.scalars(select(PolicyActivation)))) == rows_before
    assert [a for a, _, _ in _events(sessions)] == ["policy_publish", "policy_shadow"]


def test_activating_an_older_version_is_recorded_as_a_rollback(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        v1 = _publish(s)
        ship.activate(s, v1, actor=CLI, tenant_names=[])
        v2 = _publish(s, weapons=(0.4, 0.8))
        ship.activate(s, v2, actor=CLI, tenant_names=[])
        ship.activate(s, v1, actor=ship.Actor("api:ops"), tenant_names=[])
        again = ship.publish(s, policy_text(), actor=CLI)  # the same text: no new version
        assert (again.created, again.version.id) == (False, v1.id)
    assert [(a, who, d["version"]) for a, who, d in _events(sessions)] == [
        ("policy_publish", "cli:test", "test@1"),
        ("policy_activate", "cli:test", "test@1"),
        ("policy_publish", "cli:test", "test@2"),
        ("policy_activate", "cli:test", "test@2"),
        ("policy_rollback", "api:ops", "test@1"),
    ]


def test_two_publishes_at_once_let_exactly_one_in(sessions: sessionmaker[Session]) -> None:
    """Both read "the newest is @1" before either writes: the second is refused whole."""
    with transaction(sessions) as s:
        _publish(s)
    first, second = sessions(), sessions()
    try:
        planned = versions.plan(first, policy_text(weapons=(0.4, 0.8)), author="a")
        assert planned.version.label == "test@2"
        with second.begin():
            won = versions.publish(second, policy_text(weapons=(0.3, 0.8)), author="b")
            assert won.version.label == "test@2"
        with pytest.raises(PublishConflict, match="someone else published 'test' at the same"):
            versions.store(first, planned)
        first.rollback()
    finally:
        first.close()
        second.close()
    with sessions() as s:
        rows = s.execute(select(PolicyVersion.version, PolicyVersion.author)).all()
    assert sorted(rows) == [(1, "cli:test"), (2, "b")]


def test_cli_shadow_stop(
    cli_env: None, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with transaction(sessions) as s:
        ship.activate(s, _publish(s), actor=CLI, tenant_names=[], shadow=True)
    assert main(["policy", "shadow-stop", "--author", "cli:ann"]) == 0
    assert capsys.readouterr().out.strip() == "stopped the shadow run of test@1 for everyone"
    assert main(["policy", "shadow-stop"]) == 2
    assert "no_shadow_run: no shadow run of its own for everyone" in capsys.readouterr().err
    assert _events(sessions)[-1][:2] == ("policy_shadow_stop", "cli:ann")


def test_api_shadow_stop(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        key = keys.create_key(s, "ops", admin=True)
        keys.get_or_create_tenant(s, "acme")
    admin = {"Authorization": f"Bearer {key}"}
    published = client.post(
        "/v1/policies",
        json={"yaml": policy_text(), "shadow": True, "tenants": ["acme"]},
        headers=admin,
    )
    assert published.status_code == 201
    stop = client.post("/v1/policies/shadow/stop", json={"tenants": ["acme"]}, headers=admin)
    assert (stop.status_code, stop.json) == (200, {"stopped": ["test@1"], "tenants": ["acme"]})
    again = client.post("/v1/policies/shadow/stop", json={"tenants": ["acme"]}, headers=admin)
    assert (again.status_code, again.json["error"]["code"]) == (409, "no_shadow_run")
    missing = client.post("/v1/policies/999/activate", headers=admin)
    assert (missing.status_code, missing.json["error"]["message"]) == (
        404,
        "policy version '999' not found",
    )
    assert [(a, who) for a, who, _ in _events(sessions)] == [
        ("policy_publish", "api:ops"),
        ("policy_shadow", "api:ops"),
        ("policy_shadow_stop", "api:ops"),
    ]
