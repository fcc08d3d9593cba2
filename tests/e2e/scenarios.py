"""The end-to-end scenarios, shared by both configurations so they can never drift apart."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api import create_app
from clipmod import embeddings
from clipmod.db import transaction
from clipmod.demo import world
from clipmod.models import ItemEmbedding, ItemStatus, PolicyVersion, Verdict
from clipmod.policy import scoring, versions
from clipmod.policy.traffic import load_embeddings
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.traffic.sync import TrafficStore
from tests.e2e.conftest import Stack, wait_for
from tests.images import encode


@contextmanager
def api_client(settings: Settings) -> Iterator[FlaskClient]:
    """The real API app in-process; its pooled connections are closed afterwards."""
    app = create_app(settings)
    try:
        yield app.test_client()
    finally:
        app.extensions["clipmod"].engine.dispose()


def upload_world_images(stack: Stack, n: int) -> dict[str, world.Sample]:
    """POST n demo-world images through the real API code; returns item id → ground truth."""
    with api_client(stack.settings) as client:
        return _upload(client, stack.key, n)


def _upload(client: FlaskClient, key: str, n: int) -> dict[str, world.Sample]:
    headers = {"Authorization": f"Bearer {key}"}
    out = {}
    for seed in range(n):
        sample = world.render(seed, "heldout")
        resp = client.post(
            "/v1/items",
            data={
                "file": (io.BytesIO(encode(sample.image, "PNG")), f"{seed}.png"),
                "external_id": f"img-{seed}",
            },
            headers=headers,
            content_type="multipart/form-data",
        )
        assert resp.status_code == 202, resp.get_json()
        out[resp.get_json()["id"]] = sample
    return out


def count_scored(sessions) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return session.scalar(select(func.count(Verdict.id))) or 0


def full_path(stack: Stack, runtime: ClipRuntime) -> None:
    """Upload → broker → real worker → verdict rows that the stored embeddings reproduce."""
    samples = upload_world_images(stack, 24)
    started = time.monotonic()
    rows = wait_for(stack.sessions, list(samples))
    assert time.monotonic() - started < 60
    assert {r.status for r in rows} == {ItemStatus.SCORED}, [r.error_code for r in rows]
    with stack.sessions() as session:
        verdicts = {v.item_id: v for v in session.scalars(select(Verdict))}
        assert len(verdicts) == len(samples)
        stored = session.scalars(select(ItemEmbedding.item_id)).all()
        assert sorted(stored) == sorted(samples)
        bank = scoring.build_bank(
            versions.load(next(iter(verdicts.values())).policy_version),
            runtime.encode_texts,
            runtime.logit_scale,
        )
        for item_id, v in verdicts.items():
            assert v.policy_version.name == "demo"
            assert (v.model_name, v.model_revision) == (runtime.display_name, runtime.revision)
            # The worker's verdict is exactly what the scoring maths gives for the stored
            # embedding: nothing between the forward pass and the database bent the numbers.
            row = session.get(ItemEmbedding, (item_id, runtime.revision))
            assert row is not None and row.image is not None
            again = scoring.decide(
                bank,
                [("image", embeddings.from_bytes(row.image, row.dim))],
                item_id=item_id,
                tenant="acme",
            )
            assert v.action == again.action
            for stored, fresh in zip(v.categories, again.categories, strict=True):
                assert stored["score"] == pytest.approx(fresh.score, abs=5e-3)
                assert stored["top_prompt"] == fresh.top_prompt
        # The worker's decode → preprocess → forward equals the runtime's in this process.
        item_id, sample = next(iter(samples.items()))
        row = session.get(ItemEmbedding, (item_id, runtime.revision))
        assert row is not None and row.image is not None
        stored = embeddings.from_bytes(row.image, row.dim)[0]
        np.testing.assert_allclose(stored, runtime.encode_images([sample.image])[0], atol=5e-3)
        # The traffic store holds what the worker wrote: the log trigger fed it (on SQLite and
        # on PostgreSQL alike), and its rows are the stored bytes.
        store = TrafficStore(stack.settings.traffic_dir, runtime.revision)
        mirrored = load_embeddings(session, runtime.revision, store=store)
        assert sorted(mirrored.ids) == sorted(samples)
        k = mirrored.ids.positions([item_id])[0]
        np.testing.assert_array_equal(
            mirrored.image[mirrored.image_items == k][0], embeddings.rows(row.image, row.dim)[0]
        )
    # Deleting an item through the API reaches the store: the deletion trigger logged it (on
    # SQLite and on PostgreSQL alike) and the next read leaves its row out.
    with api_client(stack.settings) as client:
        reply = client.delete(
            f"/v1/items/{item_id}", headers={"Authorization": f"Bearer {stack.key}"}
        )
        assert reply.status_code == 204
    with stack.sessions() as session:
        mirrored = load_embeddings(session, runtime.revision, store=store)
        assert sorted(mirrored.ids) == sorted(set(samples) - {item_id})
        assert len(mirrored.image) == len(samples) - 1
        assert store.verify(session) == []  # nothing in the store that SQL no longer holds


def hot_reload(stack: Stack) -> None:
    """A newly activated version is used by the running worker without a restart."""
    first = upload_world_images(stack, 2)
    wait_for(stack.sessions, list(first))
    text = stack.settings.policy.read_text(encoding="utf-8")
    stricter = text.replace("review_at: ", "review_at: 0.0 #", 1)
    with transaction(stack.sessions) as session:
        published = versions.publish(session, stricter, author="test")
        versions.activate(session, published.version, by="test")
        new_id = published.version.id
    time.sleep(1.5)  # the worker re-checks activations every 0.5 s in these tests
    with api_client(stack.settings) as client:
        resp = client.post(
            "/v1/items",
            json={"text": "a photo of a cup"},
            headers={"Authorization": f"Bearer {stack.key}"},
        )
    item_id = resp.get_json()["id"]
    wait_for(stack.sessions, [item_id])
    with stack.sessions() as session:
        verdict = session.scalar(select(Verdict).where(Verdict.item_id == item_id))
        assert verdict is not None and verdict.policy_version_id == new_id
        assert session.get(PolicyVersion, new_id).version == 2  # type: ignore[union-attr]
