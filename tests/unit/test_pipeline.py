"""The batch scorer in-process, against a real database, real blobs and the real bundled model."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings, keys
from clipmod.db import transaction
from clipmod.models import Item, ItemEmbedding, ItemStatus, PolicyVersion, Verdict
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests import images
from workers.pipeline import Scorer


@pytest.fixture
def scorer(settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int) -> Scorer:  # type: ignore[no-untyped-def]
    s = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    yield s
    s.close()


def add_item(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    image: bytes | None = None,
    text: str | None = None,
) -> str:
    digest = BlobStore(settings.blob_dir).put(image) if image is not None else None
    with transaction(sessions) as session:
        tenant = keys.get_or_create_tenant(session, "acme")
        item = Item(tenant_id=tenant.id, image_sha256=digest, text=text)
        session.add(item)
        session.flush()
        return item.id


def test_scores_a_batch_in_one_pass_and_stamps_everything(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session], seeded: int
) -> None:
    ids = [
        add_item(settings, sessions, image=images.solid(colour=(i * 40, 10, 200))) for i in range(5)
    ]
    ids.append(add_item(settings, sessions, text="a photo of a knife"))
    scorer.score_batch(ids)
    with sessions() as session:
        verdicts = session.scalars(select(Verdict).where(Verdict.item_id.in_(ids))).all()
        assert len(verdicts) == 6
        version = session.get(PolicyVersion, seeded)
        for v in verdicts:
            assert v.policy_version_id == seeded and version is not None
            assert v.model_revision == scorer.runtime.revision
            assert {c["id"] for c in v.categories} == {
                c.id for c in scorer.policies.bank(session, seeded).policy.categories
            }
            for c in v.categories:
                assert set(c) == {
                    "id",
                    "score",
                    "review_at",
                    "block_at",
                    "action",
                    "top_prompt",
                    "source",
                }
                assert c["review_at"] <= c["block_at"]
        statuses = session.scalars(select(Item.status).where(Item.id.in_(ids))).all()
        assert set(statuses) == {ItemStatus.SCORED}


def test_embeddings_are_stored_and_reproduce_the_scores(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session], seeded: int
) -> None:
    from clipmod.policy import scoring

    long_text = "a photo of a knife " * 40  # > 77 tokens: several windows
    item_id = add_item(settings, sessions, image=images.solid(), text=long_text)
    scorer.score_batch([item_id])
    with sessions() as session:
        row = session.get(ItemEmbedding, (item_id, scorer.runtime.revision))
        verdict = session.scalar(select(Verdict).where(Verdict.item_id == item_id))
        assert row is not None and verdict is not None
        assert row.text_windows >= 2
        image = embeddings.from_bytes(row.image, row.dim)
        text = embeddings.from_bytes(row.text, row.dim)
        assert text.shape == (row.text_windows, row.dim)
        np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1.0, atol=2e-3)
        bank = scorer.policies.bank(session, seeded)
        again = scoring.decide(
            bank, [("image", image), ("text", text)], item_id=item_id, tenant="acme"
        )
        for stored, fresh in zip(verdict.categories, again.categories, strict=True):
            assert stored["score"] == pytest.approx(fresh.score, abs=5e-3)


def test_text_windows_take_the_maximum(scorer: Scorer, runtime) -> None:  # type: ignore[no-untyped-def]
    windows = runtime.text_windows("a photo of a cup " * 30 + "a photo of a knife")
    assert len(windows) >= 2
    assert all(len(w) <= 77 for w in windows)
    assert windows[0][0] == runtime.tokenizer.bos_token_id
    assert windows[-1][-1] == runtime.tokenizer.eos_token_id


def test_bad_inputs_fail_with_a_code_and_do_not_sink_the_batch(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    good = add_item(settings, sessions, image=images.solid())
    corrupt = add_item(settings, sessions, image=images.truncated_jpeg())
    bomb = add_item(settings, sessions, image=images.png_bomb())
    scorer.score_batch([good, corrupt, bomb])
    with sessions() as session:
        rows = {i.id: i for i in session.scalars(select(Item))}
    assert rows[good].status == ItemStatus.SCORED
    assert (rows[corrupt].status, rows[corrupt].error_code) == (ItemStatus.FAILED, "corrupt_image")
    assert (rows[bomb].status, rows[bomb].error_code) == (
        ItemStatus.FAILED,
        "image_too_many_pixels",
    )


def test_scoring_twice_is_idempotent(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    item_id = add_item(settings, sessions, image=images.solid())
    scorer.score_batch([item_id])
    scorer.score_batch([item_id, item_id])
    with sessions() as session:
        assert session.scalar(select(func.count(Verdict.id))) == 1
        assert session.get(Item, item_id).attempts == 1  # type: ignore[union-attr]


def test_unknown_ids_are_ignored(scorer: Scorer) -> None:
    assert scorer.score_batch(["does-not-exist"]) == []
