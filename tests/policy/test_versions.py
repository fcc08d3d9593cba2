"""Publishing, activation per tenant, rollback, and the `clipmod policy` commands that do them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod import keys
from clipmod.db import transaction
from clipmod.models import ActivationMode, PolicyVersion
from clipmod.policy import versions
from tests.policy.conftest import policy_text


def test_publishing_the_same_text_twice_is_the_same_version(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        first = versions.publish(session, policy_text(), author="a")
        again = versions.publish(session, policy_text(), author="b")
        assert first.created and not again.created
        assert again.version.id == first.version.id
        assert again.version.author == "a"
        assert len(session.scalars(select(PolicyVersion)).all()) == 1


def test_versions_increment_and_point_at_their_parent(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        v1 = versions.publish(session, policy_text(), author="a").version
        v2 = versions.publish(session, policy_text(weapons=(0.4, 0.8)), author="a").version
        other = versions.publish(session, policy_text(name="other"), author="a").version
        v3 = versions.publish(session, policy_text(weapons=(0.3, 0.8)), author="a").version
        assert [(v.label, v.parent_id) for v in (v1, v2, v3)] == [
            ("test@1", None),
            ("test@2", v1.id),
            ("test@3", v2.id),
        ]
        assert (other.label, other.parent_id) == ("other@1", None)
        assert versions.get_version(session, "test@2").id == v2.id
        assert versions.get_version(session, str(v3.id)).id == v3.id


def test_activation_is_per_tenant_and_rollback_is_activating_an_older_version(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        acme = keys.get_or_create_tenant(session, "acme")
        globex = keys.get_or_create_tenant(session, "globex")
        v1 = versions.publish(session, policy_text(), author="a").version
        v2 = versions.publish(session, policy_text(weapons=(0.4, 0.8)), author="a").version
        versions.activate(session, v1, by="t")
        versions.activate(session, v2, by="t", tenants=[acme])
        assert versions.resolve(session, acme.id).id == v2.id
        assert versions.resolve(session, globex.id).id == v1.id
        assert versions.resolve(session, None).id == v1.id
        versions.activate(session, v2, by="t")
        assert versions.resolve(session, globex.id).id == v2.id
        versions.activate(session, v1, by="t", tenants=[acme])  # roll acme back
        assert versions.resolve(session, acme.id).id == v1.id
        assert versions.resolve(session, globex.id).id == v2.id
        assert versions.resolve(session, acme.id, ActivationMode.SHADOW) is None


# -- the CLI ----------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.usefixtures("cli_env")
def test_cli_publish_activate_list_show_and_rollback(
    tmp_path: Path, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with transaction(sessions) as session:
        keys.get_or_create_tenant(session, "acme")
    first = write(tmp_path, policy_text())
    assert main(["policy", "publish", first, "--author", "ed"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "published test@1 (id 1)",
        "test@1 is now active for everyone",
    ]
    assert main(["policy", "publish", first]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test@1 is already published with this exact content (id 1)")

    second = write(tmp_path, policy_text(weapons=(0.4, 0.9)), "p2.yaml")
    assert main(["policy", "publish", second, "--tenant", "acme", "--author", "ed"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "published test@2 (id 2, parent test@1)",
        "test@2 is now active for acme",
    ]
    assert main(["policy", "list", "--json"]) == 0
    listed = {v["label"]: v for v in json.loads(capsys.readouterr().out)["versions"]}
    assert listed["test@1"]["in_force"] == [{"tenant": None, "mode": "active"}]
    assert listed["test@2"]["in_force"] == [{"tenant": "acme", "mode": "active"}]
    assert listed["test@2"]["parent_id"] == listed["test@1"]["id"]

    assert main(["policy", "activate", "test@1", "--tenant", "acme"]) == 0  # rollback
    assert capsys.readouterr().out.strip() == "test@1 is now active for acme"
    assert main(["policy", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test@2") and lines[0].endswith("-")
    assert lines[1].startswith("test@1") and lines[1].endswith("active: everyone; active: acme")

    assert main(["policy", "show", "test@2"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# test@2 (id 2) by ed at ")
    assert shown.endswith(policy_text(weapons=(0.4, 0.9)))
    assert main(["policy", "show", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["yaml"] == policy_text(weapons=(0.4, 0.9))


@pytest.mark.usefixtures("cli_env")
def test_cli_publish_no_activate_and_shadow(
    tmp_path: Path, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "publish", write(tmp_path, policy_text()), "--no-activate"]) == 0
    assert main(["policy", "publish", write(tmp_path, policy_text(name="n")), "--shadow"]) == 0
    capsys.readouterr()
    with sessions() as session:
        assert versions.resolve(session, None) is None
        shadow = versions.resolve(session, None, ActivationMode.SHADOW)
        assert shadow is not None and shadow.label == "n@1"


@pytest.mark.usefixtures("cli_env")
def test_cli_errors_print_positions_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, policy_text(weapons=(0.9, 0.5)))
    assert main(["policy", "publish", bad]) == 2
    assert capsys.readouterr().err == f"{bad}:8:15 categories[0].block_at: must be ≥ review_at\n"
    assert main(["policy", "show", "nope@x"]) == 2
    assert "policy_version_not_found" in capsys.readouterr().err
    assert main(["policy", "activate", "test@7"]) == 2
    assert capsys.readouterr().err == (
        "clipmod: policy_version_not_found: policy version 'test@7' not found\n"
    )
    good = write(tmp_path, policy_text(), "good.yaml")
    assert main(["policy", "publish", good, "--tenant", "nobody"]) == 2
    assert capsys.readouterr().err == "clipmod: unknown_tenant: no tenant named 'nobody'\n"
    assert main(["policy", "publish", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path / 'missing.yaml'}:1:1 cannot read")
