"""`POST /v1/items/<id>/decisions`: the platform's own moderators' decisions."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import keys
from clipmod.actions import Action
from clipmod.db import transaction
from clipmod.models import Decision, Item, ItemStatus, Verdict
from clipmod.policy import labels

CATEGORIES = [
    {"id": "weapons", "score": 0.97, "review_at": 0.5, "block_at": 0.8, "action": "block",
     "top_prompt": "a photo of a knife", "source": "image"},
    {"id": "drugs", "score": 0.1, "review_at": 0.5, "block_at": 0.8, "action": "allow",
     "top_prompt": "a photo of a syringe", "source": "image"},
]  # fmt: skip


def scored_item(sessions: sessionmaker[Session], version_id: int, tenant: str = "acme") -> str:
    with transaction(sessions) as session:
        item = Item(
            tenant_id=keys.get_or_create_tenant(session, tenant).id,
            text="a knife for sale",
            status=ItemStatus.SCORED,
        )
        session.add(item)
        session.flush()
        session.add(
            Verdict(
                item_id=item.id,
                policy_version_id=version_id,
                action=Action.BLOCK,
                categories=CATEGORIES,
                model_name="m",
                model_revision="r",
            )
        )
        return item.id


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_decision_is_recorded_with_labels_from_its_action_and_feeds_suggest(
    client: FlaskClient, sessions: sessionmaker[Session], seeded: int, api_key: str
) -> None:
    item_id = scored_item(sessions, seeded)
    resp = client.post(
        f"/v1/items/{item_id}/decisions",
        json={"action": "remove", "moderator": "alice", "reason": "knife sale"},
        headers=auth(api_key),
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["labels"] == {"weapons": True, "drugs": False}
    assert body["moderator"] == "api:acme:alice" and body["source"] == "api"
    assert body["answered"] == {"verdict_action": "block", "policy_version_id": seeded}
    with sessions() as session:
        got = labels.load_labels(session, [item_id], ["weapons", "drugs"])
    assert got.tolist() == [[1, 0]]


def test_a_later_platform_decision_supersedes_the_earlier_one(
    client: FlaskClient, sessions: sessionmaker[Session], seeded: int, api_key: str
) -> None:
    item_id = scored_item(sessions, seeded)
    first = client.post(
        f"/v1/items/{item_id}/decisions",
        json={"action": "remove", "moderator": "alice"},
        headers=auth(api_key),
    ).get_json()
    second = client.post(
        f"/v1/items/{item_id}/decisions",
        json={"action": "allow", "moderator": "bob", "labels": {"weapons": False}},
        headers=auth(api_key),
    )
    assert second.status_code == 201 and second.get_json()["supersedes"] == first["id"]
    history = client.get(f"/v1/items/{item_id}/decisions", headers=auth(api_key)).get_json()
    assert [d["action"] for d in history["decisions"]] == ["remove", "allow"]
    with sessions() as session:
        assert len(session.scalars(select(Decision).where(Decision.item_id == item_id)).all()) == 2


def test_refusals_change_nothing(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    seeded: int,
    api_key: str,
    other_key: str,
) -> None:
    item_id = scored_item(sessions, seeded)
    with transaction(sessions) as session:
        queued = Item(tenant_id=keys.get_or_create_tenant(session, "acme").id, text="hello")
        session.add(queued)
        session.flush()
        queued_id = queued.id
    cases = [
        (item_id, {"action": "remove", "moderator": "x"}, other_key, 404, "item_not_found"),
        (queued_id, {"action": "remove", "moderator": "x"}, api_key, 409, "not_scored"),
        (item_id, {"action": "delete", "moderator": "x"}, api_key, 422, "invalid_input"),
        (item_id, {"action": "remove"}, api_key, 422, "invalid_input"),
        (
            item_id,
            {"action": "remove", "moderator": "x", "labels": {"nudity": True}},
            api_key,
            422,
            "invalid_labels",
        ),
    ]
    for target, body, key, status, code in cases:
        resp = client.post(f"/v1/items/{target}/decisions", json=body, headers=auth(key))
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code), body
    with sessions() as session:
        assert session.scalars(select(Decision)).all() == []
