"""Dashboard accounts: argon2id password hashes, roles, tenant assignment, sign-in with lockout.

Passwords are hashed with argon2-cffi's defaults (argon2id, RFC 9106's low-memory profile,
~80 ms here): slow enough that a stolen table resists guessing, fast enough for a sign-in.
A run of failed sign-ins locks the account for a while; the lock is checked before the password
so a locked account gives an attacker no oracle. An unknown email costs the same hash
verification as a wrong password, so response time does not tell which emails exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.errors import ClipmodError, InvalidInput
from clipmod.models import Role, Tenant, User, utcnow
from clipmod.review import audit
from clipmod.review.access import aware

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; this only bounds the work per request
_HASHER = PasswordHasher()
# Verified against when the email is unknown, so that path costs what a real check costs.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    local, _, domain = value.partition("@")
    if not local or "." not in domain or len(value) > 254 or any(c.isspace() for c in value):
        raise InvalidInput(f"{email[:80]!r} is not an email address", code="invalid_email")
    return value


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            f"password: at least {MIN_PASSWORD_CHARS} characters", code="weak_password"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(
            f"password: at most {MAX_PASSWORD_CHARS} characters", code="invalid_password"
        )


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def create_user(
    session: Session,
    email: str,
    password: str,
    role: Role | str,
    tenant_names: Sequence[str] = (),
    *,
    created_by: str = "cli",
) -> User:
    """A new account. Tenants must already exist: a typo must not invent an empty tenant."""
    role = Role(role)
    address = normalise_email(email)
    check_password_strength(password)
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise ClipmodError(f"a user {address} already exists", code="user_exists", status=409)
    names = sorted(set(tenant_names))
    tenants = list(session.scalars(select(Tenant).where(Tenant.name.in_(names))))
    missing = sorted(set(names) - {t.name for t in tenants})
    if missing:
        known = ", ".join(session.scalars(select(Tenant.name).order_by(Tenant.name))) or "none"
        raise InvalidInput(
            f"unknown tenant {', '.join(missing)} (known: {known}); tenants are created with "
            "`clipmod keys create --tenant NAME`",
            code="unknown_tenant",
        )
    if role is Role.MODERATOR and not tenants:
        raise InvalidInput(
            "a moderator needs at least one --tenant (admins see every tenant)",
            code="no_tenants",
        )
    user = User(email=address, password_hash=hash_password(password), role=role, tenants=tenants)
    session.add(user)
    session.flush()
    audit.record(
        session,
        "user_created",
        actor=created_by,
        detail={"email": address, "role": role.value, "tenants": names},
    )
    return user


@dataclass(frozen=True)
class LoginPolicy:
    lock_after: int = 5
    lock_for: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    message: str | None = None  # what to tell the person when `user` is None

    @property
    def ok(self) -> bool:
        return self.user is not None


WRONG = "Wrong email or password."


def _minutes(delta: timedelta) -> int:
    return max(1, -(-int(delta.total_seconds()) // 60))


def authenticate(
    session: Session,
    email: str,
    password: str,
    policy: LoginPolicy,
    *,
    now: datetime | None = None,
    client: str = "",
) -> LoginResult:
    """Check a sign-in and record it (success, failure, lock) in the audit log."""
    now = now or utcnow()
    address = email.strip().lower()[:254]
    user = session.scalar(select(User).where(User.email == address)) if address else None
    detail = {"email": address, "client": client[:64]}
    if user is None or not user.active:
        _verify(_DUMMY_HASH, password)
        audit.record(session, "login_failed", actor=address or "?", detail=detail)
        return LoginResult(None, WRONG)
    if user.locked_until is not None and aware(user.locked_until) > now:
        wait = _minutes(aware(user.locked_until) - now)
        audit.record(session, "login_failed", user=user, detail={**detail, "reason": "locked"})
        return LoginResult(None, f"Too many failed sign-ins: try again in {wait} min.")
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        reason = "wrong_password"
        message = WRONG
        if user.failed_logins >= policy.lock_after:
            user.locked_until = now + policy.lock_for
            user.failed_logins = 0
            reason = "locked"
            message = (
                f"{WRONG} Too many failed sign-ins: locked for {_minutes(policy.lock_for)} min."
            )
        audit.record(session, "login_failed", user=user, detail={**detail, "reason": reason})
        return LoginResult(None, message)
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record(session, "login", user=user, detail=detail)
    return LoginResult(user)


def _verify(stored: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def end_sessions(user: User) -> None:
    """Every signed session cookie of this user stops working (see `User.session_epoch`)."""
    user.session_epoch += 1


def session_id(user: User) -> str:
    return f"{user.id}:{user.session_epoch}"


def load_session_user(session: Session, token: str) -> User | None:
    """The user a session names, if that session has not been ended since."""
    user_id, _, epoch = token.partition(":")
    if not user_id.isdigit() or not epoch.isdigit():
        return None
    user = session.get(User, int(user_id))
    if user is None or not user.active or user.session_epoch != int(epoch):
        return None
    return user
