"""A broker outage at intake keeps the stored item and answers a retryable 503."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from cli.supervise import free_port
from clipmod.models import Item, ItemStatus
from clipmod.settings import Settings


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
