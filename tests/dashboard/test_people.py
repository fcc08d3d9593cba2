"""Accounts, sign-in with lockout, sessions, the secret key, and `clipmod users`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import AuditEvent, Role, User, utcnow
from clipmod.review import secret, users
from clipmod.settings import Settings
from tests.dashboard.conftest import PASSWORD, People
from tests.e2e.conftest import env_for

POLICY = users.LoginPolicy(lock_after=3, lock_for=timedelta(minutes=10))


def _login(sessions: sessionmaker[Session], email: str, password: str, **kw: object):  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return users.authenticate(session, email, password, POLICY, **kw)  # type: ignore[arg-type]


def test_passwords_are_stored_as_argon2id(people: People, sessions: sessionmaker[Session]) -> None:
    people.add("Alice@Example.com ")
    with sessions() as session:
        user = session.scalar(select(User))
        assert user is not None and user.email == "alice@example.com"
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


@pytest.mark.parametrize(
    ("email", "password", "role", "tenants", "code"),
    [
        ("not-an-email", PASSWORD, "moderator", ["acme"], "invalid_email"),
        ("a@example.com", "short", "moderator", ["acme"], "weak_password"),
        ("a@example.com", PASSWORD, "moderator", [], "no_tenants"),
        ("a@example.com", PASSWORD, "moderator", ["acem"], "unknown_tenant"),
        ("taken@example.com", PASSWORD, "admin", [], "user_exists"),
    ],
)
def test_bad_accounts_are_refused(
    people: People,
    sessions: sessionmaker[Session],
    email: str,
    password: str,
    role: str,
    tenants: list[str],
    code: str,
) -> None:
    people.add("taken@example.com")
    with pytest.raises(ClipmodError) as err, transaction(sessions) as session:
        users.create_user(session, email, password, Role(role), tenants)
    assert err.value.code == code
    if code == "unknown_tenant":
        assert "known: acme" in err.value.message


def test_sign_in_and_the_same_message_for_unknown_email(
    people: People, sessions: sessionmaker[Session]
) -> None:
    people.add("alice@example.com")
    assert _login(sessions, "ALICE@example.com", PASSWORD).ok
    wrong = _login(sessions, "alice@example.com", "nope nope nope")
    unknown = _login(sessions, "mallory@example.com", PASSWORD)
    assert not wrong.ok and not unknown.ok
    assert wrong.message == unknown.message == users.WRONG
    with sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions == ["user_created", "login", "login_failed", "login_failed"]


def test_repeated_failures_lock_the_account_then_it_unlocks(
    people: People, sessions: sessionmaker[Session]
) -> None:
    people.add("alice@example.com")
    for _ in range(POLICY.lock_after - 1):
        assert _login(sessions, "alice@example.com", "wrong password!").message == users.WRONG
    locked = _login(sessions, "alice@example.com", "wrong password!")
    assert "locked for 10 min" in (locked.message or "")
    # Even the right password is refused while locked, and says when to come back.
    refused = _login(sessions, "alice@example.com", PASSWORD)
    assert not refused.ok and "try again in 10 min" in (refused.message or "")
    later = utcnow() + POLICY.lock_for + timedelta(seconds=1)
    assert _login(sessions, "alice@example.com", PASSWORD, now=later).ok
    with sessions() as session:
        user = session.scalar(select(User))
        assert user is not None and user.failed_logins == 0 and user.locked_until is None


def test_ending_sessions_invalidates_every_cookie_of_the_user(
    people: People, sessions: sessionmaker[Session]
) -> None:
    user = people.add("alice@example.com")
    token = users.session_id(user)
    with transaction(sessions) as session:
        assert users.load_session_user(session, token) is not None
        row = session.get(User, user.id)
        assert row is not None
        users.end_sessions(row)
    with sessions() as session:
        assert users.load_session_user(session, token) is None
        assert users.load_session_user(session, "garbage") is None


def test_secret_key_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    first = secret.load_or_create("", tmp_path)
    path = tmp_path / secret.FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret.load_or_create("", tmp_path) == first and len(first) >= 48
    assert secret.load_or_create("configured", tmp_path) == "configured"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _clipmod(settings: Settings, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "users", *args],
        env=env_for(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_creates_users_with_a_password_from_stdin(
    settings: Settings, people: People, sessions: sessionmaker[Session]
) -> None:
    people.add("existing@example.com", tenants=("acme", "globex"))
    done = _clipmod(
        settings,
        "create",
        "mod@example.com",
        "--role",
        "moderator",
        "--tenant",
        "globex",
        "acme",
        stdin=PASSWORD + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert "created moderator mod@example.com (acme, globex)" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    assert _login(sessions, "mod@example.com", PASSWORD).ok
    bad = _clipmod(settings, "create", "x@example.com", "--role", "moderator", stdin="pw\n")
    assert bad.returncode == 2 and "weak_password" in bad.stderr
    listed = _clipmod(settings, "list", stdin="")
    assert "mod@example.com\tmoderator\tacme,globex\tactive" in listed.stdout
    assert "$argon2" not in listed.stdout
