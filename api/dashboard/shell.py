"""The dashboard shell every page shares: the blueprint, sign-in state, navigation, errors.

Later admin pages (the policy editor) plug into the same shell: register routes on their own
blueprint, decorate views with `login_required` and `admin_required`, extend `base.html`, and
call `add_nav(...)` once so the header links to them for the roles that may open them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from api.services import services
from clipmod.errors import ClipmodError
from clipmod.models import User, utcnow
from clipmod.review import queue, secret, users
from clipmod.review.access import aware
from clipmod.settings import Settings

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
csrf = CSRFProtect()
SESSION_COOKIE = "clipmod_session"
SIGNED_IN_AT = "signed_in_at"
login_manager = LoginManager()

# Pages load only our own files: no inline script, no third-party origin. Score bars are SVG
# attributes, so no inline style is needed either.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


@dataclass(frozen=True)
class NavItem:
    label: str
    endpoint: str
    admin_only: bool = False


NAV: list[NavItem] = [
    NavItem("Queue", "dashboard.queue_page"),
    NavItem("Escalated", "dashboard.escalated_page", admin_only=True),
    NavItem("Search", "dashboard.search_page"),
    NavItem("Audit log", "dashboard.audit_page", admin_only=True),
]


def add_nav(label: str, endpoint: str, *, admin_only: bool = True) -> None:
    NAV.append(NavItem(label, endpoint, admin_only))


class Person(UserMixin):
    """The signed-in user for Flask-Login: a detached `User` row, loaded once per request."""

    def __init__(self, user: User):
        self.user = user

    def get_id(self) -> str:
        return users.session_id(self.user)


def me() -> User:
    return current_user.user  # type: ignore[no-any-return]


def wants_json() -> bool:
    return request.is_json or request.headers.get("X-Requested-With") == "fetch"


F = TypeVar("F", bound=Callable[..., Any])


def admin_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not me().is_admin:
            raise ClipmodError("this page is for admins", code="forbidden", status=403)
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def safe_next(target: str | None) -> str:
    """Only our own dashboard paths: a login link must not redirect off-site."""
    default = url_for("dashboard.queue_page")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard/"):
        return default
    return target


class DashboardSessions(SecureCookieSessionInterface):
    """Signed-cookie sessions on the dashboard's own paths, and none anywhere else.

    The API authenticates every call with a key and never reads a session. Opening one anyway
    (a new signing serializer and a cookie parse, then a save that adds `Vary: Cookie` to the
    answer) cost about a twentieth of an upload's CPU. Elsewhere Flask's null session stands
    in: it can be read (Flask-Login peeks at it after every request) but not written.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(f"{bp.url_prefix}/"):
            return super().open_session(app, request)
        return None  # Flask puts its null session in place


def configure(app: Flask, settings: Settings) -> None:
    app.secret_key = secret.load_or_create(settings.secret_key, settings.data_dir)
    app.session_interface = DashboardSessions()
    hours = timedelta(hours=settings.session_hours)
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=hours,
        # Only dashboard views are checked (in `bp.before_request`): /v1 uses bearer keys.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=int(hours.total_seconds()),
    )
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.session_protection = "basic"


@login_manager.user_loader
def _load(token: str) -> Person | None:
    with services().sessions() as session:
        user = users.load_session_user(session, token)
        return Person(user) if user else None


@login_manager.unauthorized_handler
def _unauthorized() -> Any:
    message = "Your session has ended or you are not signed in: sign in again."
    if wants_json():
        return jsonify({"error": {"code": "session_expired", "message": message}}), 401
    if request.cookies.get(SESSION_COOKIE):
        flash("Your session has ended: sign in again.", "warn")
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


@bp.before_request
def _guard() -> Any:
    """Sessions end `CLIPMOD_SESSION_HOURS` after sign-in, however busy (the cookie's own expiry
    slides with every response); signed-in state changes need a CSRF token.

    Signed out, a POST can change nothing (`login_required` refuses it) and its token died with
    the session: it is told to sign in again rather than "bad token". Sign-in itself is checked.
    """
    if current_user.is_authenticated:
        started = session.get(SIGNED_IN_AT, 0.0)
        if time.time() - started > current_app.permanent_session_lifetime.total_seconds():
            logout_user()
            session.clear()
            return _unauthorized()
        csrf.protect()
    elif request.endpoint == "dashboard.login_post":
        csrf.protect()
    return None


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "same-origin"
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.context_processor
def _shell() -> dict[str, Any]:
    if not current_user.is_authenticated:
        return {"nav": [], "counts": {}}
    user = me()
    with services().sessions() as session:
        counts = queue.counts(session, user)
    nav = [n for n in NAV if user.is_admin or not n.admin_only]
    return {"nav": nav, "counts": counts, "me": user}


@bp.app_template_filter("ago")
def ago(moment: datetime) -> str:
    """'3 min ago': how long an item has waited matters more than its timestamp."""
    seconds = (utcnow() - aware(moment)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _error(status: int, code: str, message: str) -> Any:
    if wants_json():
        return jsonify({"error": {"code": code, "message": message}}), status
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict"}
    return (
        render_template(
            "error.html", status=status, title=titles.get(status, "Error"), message=message
        ),
        status,
    )


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    return _error(
        400,
        "csrf_failed",
        "This form was not accepted: its security token is missing or expired "
        f"({exc.description}). Reload the page and try again.",
    )


@bp.errorhandler(ClipmodError)
def _domain_error(exc: ClipmodError) -> Any:
    return _error(exc.status, exc.code, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Any:
    return _error(exc.code or 500, "http_error", exc.description or exc.name)
