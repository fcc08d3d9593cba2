"""The dashboard over HTTP (Flask's test client): sign-in, CSRF, scoping, conflicts, media."""

from __future__ import annotations

import io
import stat

from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from api.dashboard.shell import SIGNED_IN_AT
from clipmod.db import transaction
from clipmod.models import AuditEvent, Decision, Item, User
from clipmod.review import claims
from clipmod.review.secret import FILE_NAME
from clipmod.settings import Settings
from tests.conftest import make_settings
from tests.dashboard.conftest import LEASE, PASSWORD, MakeItem, csrf_of, sign_in
from tests.images import encode


def _count(sessions: sessionmaker[Session], model: type, **where: object) -> int:
    with sessions() as session:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return int(session.scalar(stmt) or 0)


def test_item_page_shows_text_and_metadata_as_text(
    client: FlaskClient, alice: User, make_item: MakeItem
) -> None:
    item = make_item(
        image=Image.new("RGB", (64, 64), "red"),
        text="<script>alert(1)</script>",
        meta={"title": "<img src=x onerror=alert(1)>"},
    )
    sign_in(client, alice.email)
    queue = client.get("/dashboard/").get_data(as_text=True)
    assert item[:8] in queue and 'id="waiting-count">1<' in queue
    resp = client.get(f"/dashboard/items/{item}")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "You hold this item" in html and "demo@1" in html
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


def test_failed_sign_in_says_so_and_starts_no_session(
    client: FlaskClient, alice: User, sessions: sessionmaker[Session]
) -> None:
    token = csrf_of(client)
    resp = client.post(
        "/dashboard/login",
        data={"email": alice.email, "password": "not the password", "csrf_token": token},
    )
    assert resp.status_code == 401 and "Wrong email or password." in resp.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302
    assert _count(sessions, AuditEvent, action="login_failed") == 1


def test_session_cookie_flags(settings: Settings, alice: User) -> None:
    secure = create_app(make_settings(settings.data_dir, secure_cookies="true"))
    for app, is_secure in ((create_app(settings), False), (secure, True)):
        client = app.test_client()
        token = csrf_of(client)
        resp = client.post(
            "/dashboard/login",
            data={"email": alice.email, "password": PASSWORD, "csrf_token": token},
        )
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is is_secure
        app.extensions["clipmod"].engine.dispose()


def test_secret_key_is_made_in_the_data_dir(app: Flask, settings: Settings) -> None:
    path = settings.data_dir / FILE_NAME
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert app.secret_key == path.read_text().strip()


def test_missing_csrf_token_is_refused_and_changes_nothing(
    client: FlaskClient, alice: User, make_item: MakeItem, sessions: sessionmaker[Session]
) -> None:
    item = make_item()
    assert (
        client.post(
            "/dashboard/login", data={"email": alice.email, "password": PASSWORD}
        ).status_code
        == 400
    )
    sign_in(client, alice.email)
    resp = client.post(f"/dashboard/items/{item}/decide", data={"action": "allow"})
    assert resp.status_code == 400
    assert "security token is missing" in resp.get_data(as_text=True)
    fetch = client.post(f"/dashboard/items/{item}/reveal", json={})
    assert fetch.status_code == 400 and fetch.get_json()["error"]["code"] == "csrf_failed"
    assert _count(sessions, Decision) == 0
    assert _count(sessions, AuditEvent, action="reveal") == 0


def test_signed_out_pages_redirect_and_fetches_get_401(client: FlaskClient, alice: User) -> None:
    resp = client.get("/dashboard/items/abc?tenant=x")
    assert resp.status_code == 302 and "/dashboard/login?next=" in resp.headers["Location"]
    fetch = client.post("/dashboard/items/abc/claim", headers={"X-Requested-With": "fetch"})
    assert fetch.status_code == 401 and fetch.get_json()["error"]["code"] == "session_expired"


def test_logout_ends_the_session_even_for_a_copied_cookie(client: FlaskClient, alice: User) -> None:
    token = sign_in(client, alice.email)
    stolen = client.get_cookie("clipmod_session")
    assert stolen is not None
    resp = client.post("/dashboard/logout", data={"csrf_token": token})
    assert resp.status_code == 302
    client.set_cookie("clipmod_session", stolen.value)
    again = client.get("/dashboard/")
    assert again.status_code == 302 and "/dashboard/login" in again.headers["Location"]


def test_next_parameter_never_leaves_the_dashboard(client: FlaskClient, alice: User) -> None:
    token = csrf_of(client)
    resp = client.post(
        "/dashboard/login",
        data={
            "email": alice.email,
            "password": PASSWORD,
            "csrf_token": token,
            "next": "https://evil.example/dashboard/",
        },
    )
    assert resp.headers["Location"] == "/dashboard/"


def test_another_tenants_item_and_image_are_404(
    client: FlaskClient, alice: User, make_item: MakeItem
) -> None:
    theirs = make_item("globex", image=Image.new("RGB", (64, 64), "blue"))
    sign_in(client, alice.email)
    for path in ("", "/image", "/similar"):
        resp = client.get(f"/dashboard/items/{theirs}{path}")
        assert resp.status_code == 404, path
        assert "globex" not in resp.get_data(as_text=True)


def test_deciding_an_item_someone_else_holds_is_409_naming_them(
    client: FlaskClient,
    alice: User,
    bob: User,
    make_item: MakeItem,
    sessions: sessionmaker[Session],
) -> None:
    item = make_item()
    with transaction(sessions) as session:
        claims.claim(session, session.get(Item, item), bob, LEASE)  # type: ignore[arg-type]
    token = sign_in(client, alice.email)
    page = client.get(f"/dashboard/items/{item}").get_data(as_text=True)
    assert "bob@example.com is reviewing this item" in page
    resp = client.post(
        f"/dashboard/items/{item}/decide", data={"action": "remove", "csrf_token": token}
    )
    assert resp.status_code == 409
    assert "bob@example.com is reviewing this item" in resp.get_data(as_text=True)
    assert _count(sessions, Decision) == 0


def test_images_are_reencoded_with_safe_headers(
    client: FlaskClient, alice: User, make_item: MakeItem
) -> None:
    png = make_item(image=Image.new("RGB", (64, 64), "green"))
    jpeg = make_item(image=encode(Image.new("RGB", (640, 480), "white"), "JPEG"))
    sign_in(client, alice.email)
    resp = client.get(f"/dashboard/items/{png}/image?size=thumb")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"] == f'inline; filename="{png}-thumb.png"'
    assert Image.open(io.BytesIO(resp.data)).size == (64, 64)
    big = client.get(f"/dashboard/items/{jpeg}/image?size=thumb")
    assert big.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(big.data)).size == (256, 192)
    assert "blobs" not in resp.headers["Content-Disposition"]


def test_a_blob_that_is_not_an_image_is_never_served(
    client: FlaskClient, alice: User, make_item: MakeItem
) -> None:
    hostile = make_item(image=b"<html><script>alert(1)</script></html>")
    sign_in(client, alice.email)
    resp = client.get(f"/dashboard/items/{hostile}/image")
    assert resp.status_code == 415 and b"<script>" not in resp.data
    assert resp.mimetype != "text/html" or b"alert(1)" not in resp.data


def test_a_10000_character_search_is_refused_with_a_message(
    client: FlaskClient, alice: User, sessions: sessionmaker[Session]
) -> None:
    sign_in(client, alice.email)
    resp = client.get("/dashboard/search", query_string={"q": "knife " * 1667})
    assert resp.status_code == 422
    assert "the limit is 300" in resp.get_data(as_text=True)
    assert _count(sessions, AuditEvent, action="search") == 0


def test_bulk_over_the_limit_needs_a_confirmation(
    client: FlaskClient, alice: User, make_item: MakeItem, sessions: sessionmaker[Session]
) -> None:
    ids = [make_item() for _ in range(11)]
    token = sign_in(client, alice.email)
    form = {"action": "allow", "csrf_token": token, "item": [f"{i}:" for i in ids]}
    resp = client.post("/dashboard/bulk", data=form)
    assert resp.status_code == 422 and "needs a confirmation" in resp.get_data(as_text=True)
    assert _count(sessions, Decision) == 0
    resp = client.post("/dashboard/bulk", data={**form, "confirmed": "yes"}, follow_redirects=True)
    assert "Allowed 11 items." in resp.get_data(as_text=True)
    assert _count(sessions, Decision) == 11


def test_audit_log_is_for_admins_and_exports_csv(
    client: FlaskClient, alice: User, admin: User, make_item: MakeItem
) -> None:
    token = sign_in(client, alice.email)
    assert client.get("/dashboard/audit").status_code == 403
    assert client.get("/dashboard/audit.csv").status_code == 403
    client.post("/dashboard/logout", data={"csrf_token": token})
    sign_in(client, admin.email)
    page = client.get("/dashboard/audit?action=login").get_data(as_text=True)
    assert "alice@example.com" in page and "root@example.com" in page
    csv = client.get("/dashboard/audit.csv?actor=alice")
    assert csv.mimetype == "text/csv" and "attachment;" in csv.headers["Content-Disposition"]
    body = csv.get_data(as_text=True)
    assert body.startswith("id,at,actor,action") and "alice@example.com,login" in body
    assert "root@example.com" not in body
    assert client.get("/dashboard/audit?since=yesterday").status_code == 422


def test_an_expired_session_sends_you_to_sign_in_again(
    settings: Settings, alice: User, make_item: MakeItem, sessions: sessionmaker[Session]
) -> None:
    item = make_item()
    app = create_app(make_settings(settings.data_dir, session_hours="1"))
    client = app.test_client()
    token = sign_in(client, alice.email)
    assert client.get("/dashboard/").status_code == 200  # each response renews the cookie...
    with client.session_transaction("/dashboard/") as cookie:  # ...but the session ends on time:
        cookie[SIGNED_IN_AT] -= 3601  # signed in an hour ago (no sleep: a loaded CI stalls)
    resp = client.post(
        f"/dashboard/items/{item}/decide", data={"action": "allow", "csrf_token": token}
    )
    assert resp.status_code == 302 and "/dashboard/login" in resp.headers["Location"]
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Your session has ended: sign in again." in page
    assert _count(sessions, Decision) == 0
    app.extensions["clipmod"].engine.dispose()
