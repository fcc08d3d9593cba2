"""Scoring is sent after the row commits, never before, and never for a rolled-back row."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from cli.supervise import free_port
from clipmod import keys
from clipmod.db import transaction
from clipmod.models import Item, ItemStatus
from clipmod.queue import SCORE_QUEUE, enqueue_after_commit, make_celery, prepare_broker
from clipmod.settings import Settings


def _waiting(settings: Settings) -> int:
    app = make_celery(settings)
    prepare_broker(app)
    with app.connection_for_read() as conn:
        return int(conn.default_channel.queue_declare(SCORE_QUEUE, passive=True).message_count)


def _item(session: Session) -> str:
    item = Item(tenant_id=keys.get_or_create_tenant(session, "acme").id, text="hello")
    session.add(item)
    session.flush()
    return item.id


def test_sent_only_when_the_transaction_commits(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    app = make_celery(settings)
    prepare_broker(app)

    def fails_after_adding() -> None:
        with transaction(sessions) as session:
            enqueue_after_commit(session, app, [_item(session)])
            assert _waiting(settings) == 0  # not before the commit either
            raise RuntimeError("the request failed after the row was added")

    with pytest.raises(RuntimeError):
        fails_after_adding()
    assert _waiting(settings) == 0
    with transaction(sessions) as session:
        enqueue_after_commit(session, app, [_item(session)])
    assert _waiting(settings) == 1


def test_broker_down_at_intake_is_a_503_and_the_item_is_kept(
    settings: Settings, sessions: sessionmaker[Session], api_key: str
) -> None:
    dead = Settings(**{**vars(settings), "broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(dead)
    client: FlaskClient = app.test_client()
    try:
        resp = client.post(
            "/v1/items",
            json={"text": "hello", "external_id": "post-1"},
            headers={"Authorization": f"Bearer {api_key}"},
        )
    finally:
        app.extensions["clipmod"].engine.dispose()
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "queue_unavailable"
    with sessions() as session:
        item = session.scalar(select(Item).where(Item.external_id == "post-1"))
        assert item is not None and item.status == ItemStatus.QUEUED
