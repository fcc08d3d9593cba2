"""The worker's batch with banks: one scorer, real database and model, bank changes picked up."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.actions import Action
from clipmod.banks import prefilter, registry
from clipmod.banks.uploads import embed_uploads
from clipmod.db import transaction
from clipmod.images import ImageLimits
from clipmod.models import Verdict
from clipmod.policy import versions
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.unit.test_pipeline import add_item
from workers.pipeline import Scorer

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def reencoded(name: str) -> bytes:
    """The sample saved again as a JPEG: other bytes, nearly the same embedding."""
    out = io.BytesIO()
    Image.open(SAMPLES / name).convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


@pytest.mark.parametrize("coded", [False, True], ids=["float32", "int8-prefilter"])
def test_a_batch_is_matched_against_the_newest_bank_version(
    settings: Settings,
    sessions: sessionmaker[Session],
    runtime,
    seeded: int,  # type: ignore[no-untyped-def]
    coded: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Also with the int8 prefilter a worker builds for large banks, forced here for one entry."""
    if coded:
        monkeypatch.setattr(prefilter, "WORTH_FROM", 0)
    caplog.set_level(logging.INFO, logger="clipmod.banks.live")
    entries = embed_uploads(
        runtime,
        [("blue-cup.png", (SAMPLES / "blue-cup.png").read_bytes())],
        limits=ImageLimits.from_settings(settings),
        max_bytes=settings.max_upload_bytes,
    )
    with transaction(sessions) as session:
        bank = registry.create_bank(
            session,
            "known-bad",
            "block",
            model_revision=runtime.revision,
            dim=runtime.dim,
            author="t",
        )
        active = versions.resolve(session, None)
        assert active is not None
        text = active.yaml_text + "banks:\n  - {name: known-bad, threshold: 0.9}\n"
        versions.activate(session, versions.publish(session, text, author="t").version, by="t")
    scorer = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    try:
        cup, star = (reencoded(n) for n in ("blue-cup.png", "yellow-flower.png"))
        first = [add_item(settings, sessions, image=cup), add_item(settings, sessions, image=star)]
        scorer.score_batch(first)  # the bank is still empty: version 0
        with transaction(sessions) as session:
            bank = registry.get_bank(session, "known-bad")
            registry.add_entries(session, bank, entries, author="t")
        second = [add_item(settings, sessions, image=cup), add_item(settings, sessions, image=star)]
        scorer.score_batch(second)
    finally:
        scorer.close()
    with sessions() as session:
        got = {v.item_id: v for v in session.scalars(select(Verdict))}
    assert [got[i].action for i in first] == [Action.ALLOW, Action.ALLOW]
    assert [got[i].bank_match for i in first] == [None, None]
    assert [got[i].action for i in second] == [Action.BLOCK, Action.ALLOW]
    match = got[second[0]].bank_match
    assert match is not None and got[second[1]].bank_match is None
    assert (match["label"], match["kind"], match["threshold"]) == ("known-bad@1", "block", 0.9)
    assert 0.9 <= match["similarity"] <= 1.0 and isinstance(match["entry"], int)
    matched_with = "int8 prefilter" if coded else "float32"
    assert f"known-bad@1 (1 entries); matched with the {matched_with}" in caplog.text
