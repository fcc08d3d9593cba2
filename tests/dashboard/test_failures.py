"""The Failed page for admins: failures by error code, retried one at a time or all of a code,
each retry audited (Flask's test client; the browser test is in test_failures_browser.py)."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import keys
from clipmod.db import transaction
from clipmod.models import AuditEvent, Item, ItemStatus, User
from tests.dashboard.conftest import sign_in


def failed(sessions: sessionmaker[Session], code: str, tenant: str = "acme") -> str:
    """A failed item as a worker leaves it (status, code, message, attempts spent)."""
    with transaction(sessions) as session:
        item = Item(
            tenant_id=keys.get_or_create_tenant(session, tenant).id,
            text="a photo of a cup",
            status=ItemStatus.FAILED,
            error_code=code,
            error_message=f"it went wrong: {code}",
            attempts=3,
        )
        session.add(item)
        session.flush()
        return item.id


def statuses(sessions: sessionmaker[Session], ids: list[str]) -> list[ItemStatus]:
    with sessions() as session:
        found = {i.id: i.status for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
    return [found[i] for i in ids]


def test_admins_only(client: FlaskClient, alice: User) -> None:
    token = sign_in(client, alice.email)
    assert "/dashboard/failed" not in client.get("/dashboard/").get_data(as_text=True)
    assert client.get("/dashboard/failed").status_code == 403
    resp = client.post("/dashboard/failed/retry", data={"csrf_token": token})
    assert resp.status_code == 403


def test_failures_by_code_and_retries(
    client: FlaskClient, admin: User, sessions: sessionmaker[Session]
) -> None:
    down = [failed(sessions, "url_unreachable") for _ in range(3)]
    died = failed(sessions, "scoring_error", tenant="globex")
    corrupt = failed(sessions, "corrupt_image")
    token = sign_in(client, admin.email)
    html = client.get("/dashboard/failed").get_data(as_text=True)
    assert '<strong id="failed-total">5</strong>' in html
    assert 'data-code="url_unreachable"' in html and "it went wrong: corrupt_image" in html
    assert "Retry all 4 transient failures" in html  # the corrupt image is not among them
    only = client.get("/dashboard/failed?code=corrupt_image").get_data(as_text=True)
    assert only.count("<tr data-item=") == 1 and corrupt in only
    assert client.get("/dashboard/failed?tenant=nobody").status_code == 422

    # One item, from its row: back to the queue, attempts and error cleared.
    resp = client.post("/dashboard/failed/retry", data={"csrf_token": token, "item": down[0]})
    assert resp.status_code == 303 and resp.headers["Location"] == "/dashboard/failed"
    with sessions() as session:
        first = session.get(Item, down[0])
        assert first is not None
        assert (first.status, first.attempts, first.error_code) == (ItemStatus.QUEUED, 0, None)
    assert "Queued 1 failed item again." in client.get("/dashboard/failed").get_data(as_text=True)

    # "Retry all" without a code: every transient failure of the tenant filter, nothing else.
    resp = client.post("/dashboard/failed/retry", data={"csrf_token": token, "tenant": "acme"})
    assert resp.headers["Location"] == "/dashboard/failed?tenant=acme"
    assert statuses(sessions, [*down, died, corrupt]) == [ItemStatus.QUEUED] * 3 + [
        ItemStatus.FAILED,
        ItemStatus.FAILED,
    ]
    # A code picked on the page: that code only, transient or not.
    client.post("/dashboard/failed/retry", data={"csrf_token": token, "code": "corrupt_image"})
    assert statuses(sessions, [died, corrupt]) == [ItemStatus.FAILED, ItemStatus.QUEUED]
    again = client.post("/dashboard/failed/retry", data={"csrf_token": token, "item": down[0]})
    assert again.status_code == 303  # already queued: nothing to do, said so
    assert "Nothing to retry." in client.get("/dashboard/failed").get_data(as_text=True)

    with sessions() as session:
        events = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == "retry").order_by(AuditEvent.id)
            )
        )
    assert [(e.item_id, e.detail["count"]) for e in events] == [
        (down[0], 1),
        (None, 2),
        (None, 1),
        (down[0], 0),
    ]
    assert events[1].detail["tenant"] == "acme" and events[2].detail["code"] == "corrupt_image"


def test_retry_needs_the_csrf_token(
    client: FlaskClient, admin: User, sessions: sessionmaker[Session]
) -> None:
    item = failed(sessions, "url_timeout")
    sign_in(client, admin.email)
    assert client.post("/dashboard/failed/retry", data={"item": item}).status_code == 400
    assert statuses(sessions, [item]) == [ItemStatus.FAILED]


def test_an_admin_retries_from_the_items_own_page(
    client: FlaskClient, admin: User, alice: User, sessions: sessionmaker[Session]
) -> None:
    item = failed(sessions, "scoring_error")
    token = sign_in(client, alice.email)
    assert 'id="retry-item"' not in client.get(f"/dashboard/items/{item}").get_data(as_text=True)
    client.post("/dashboard/logout", data={"csrf_token": token})
    token = sign_in(client, admin.email)
    page = client.get(f"/dashboard/items/{item}").get_data(as_text=True)
    assert 'id="retry-item"' in page and "scoring_error" in page
    resp = client.post(
        "/dashboard/failed/retry", data={"csrf_token": token, "item": item, "back": "item"}
    )
    assert resp.headers["Location"] == f"/dashboard/items/{item}"
    assert statuses(sessions, [item]) == [ItemStatus.QUEUED]
    page = client.get(f"/dashboard/items/{item}").get_data(as_text=True)
    assert "Queued 1 failed item again." in page and 'id="retry-item"' not in page
