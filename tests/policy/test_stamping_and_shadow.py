"""Verdicts name the exact version that produced them; new activations apply to the next item;
shadow versions are recorded beside the real verdict and reported.

The worker's `Scorer` runs in-process with the real model, the real database and real blobs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod import keys
from clipmod.db import transaction
from clipmod.models import ActivationMode, Item, PolicyVersion, ShadowVerdict, Verdict
from clipmod.policy import versions
from clipmod.policy.shadow import shadow_report
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.policy.conftest import policy_text
from workers.pipeline import Scorer

NEVER = policy_text(name="p", weapons=(1.0, 1.0), drugs=(1.0, 1.0))  # nothing reaches 1.0
ALWAYS = policy_text(name="p", weapons=(0.0, 0.0), drugs=(-1.0, -1.0))  # everything blocks


@pytest.fixture
def scorer(settings: Settings, sessions: sessionmaker[Session], runtime: Any) -> Iterator[Scorer]:
    assert settings.policy_refresh_s == 0
    s = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    yield s
    s.close()


def publish(sessions: sessionmaker[Session], text: str, **activation: Any) -> PolicyVersion:
    with transaction(sessions) as session:
        version = versions.publish(session, text, author="test").version
        tenants = [keys.get_or_create_tenant(session, t) for t in activation.pop("tenants", [])]
        versions.activate(session, version, by="test", tenants=tenants, **activation)
        return version


def add_item(
    settings: Settings, sessions: sessionmaker[Session], tenant: str, *, image: bool = False
) -> str:
    digest = None
    if image:
        buf = io.BytesIO()
        Image.new("RGB", (80, 64), (200, 30, 30)).save(buf, format="PNG")
        digest = BlobStore(settings.blob_dir).put(buf.getvalue())
    with transaction(sessions) as session:
        keys.create_key(session, tenant)  # the tenant as the API would have it
        tenant_id = keys.get_or_create_tenant(session, tenant).id
        item = Item(tenant_id=tenant_id, image_sha256=digest, text="a red knife on a cup")
        session.add(item)
        session.flush()
        return item.id


def verdict(sessions: sessionmaker[Session], item_id: str) -> Verdict:
    with sessions() as session:
        row = session.scalar(select(Verdict).where(Verdict.item_id == item_id))
        assert row is not None
        return row


def test_a_verdict_references_the_exact_version_and_model(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    v1 = publish(sessions, NEVER)
    item = add_item(settings, sessions, "acme", image=True)
    scorer.score_batch([item])
    row = verdict(sessions, item)
    assert row.policy_version_id == v1.id
    assert (row.model_name, row.model_revision) == (
        scorer.runtime.display_name,
        scorer.runtime.revision,
    )
    assert row.action == "allow"
    assert {(c["id"], c["review_at"], c["block_at"]) for c in row.categories} == {
        ("weapons", 1.0, 1.0),
        ("drugs", 1.0, 1.0),
    }


def test_hot_reload_scores_the_next_item_under_the_new_activation(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    v1 = publish(sessions, NEVER)
    first = add_item(settings, sessions, "acme")
    scorer.score_batch([first])
    v2 = publish(sessions, ALWAYS)
    second = add_item(settings, sessions, "acme")
    scorer.score_batch([second])
    assert (verdict(sessions, first).policy_version_id, verdict(sessions, first).action) == (
        v1.id,
        "allow",
    )
    assert (verdict(sessions, second).policy_version_id, verdict(sessions, second).action) == (
        v2.id,
        "block",
    )
    # A tenant-scoped rollback applies to that tenant's next item only.
    publish(sessions, NEVER, tenants=["acme"])
    acme, globex = add_item(settings, sessions, "acme"), add_item(settings, sessions, "globex")
    scorer.score_batch([acme, globex])
    assert verdict(sessions, acme).policy_version_id == v1.id
    assert verdict(sessions, globex).policy_version_id == v2.id


def test_shadow_versions_are_recorded_and_reported(
    scorer: Scorer,
    settings: Settings,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    cli_env: None,
) -> None:
    v1 = publish(sessions, NEVER)
    shadow = publish(sessions, ALWAYS, mode=ActivationMode.SHADOW)
    items = [add_item(settings, sessions, "acme", image=i == 0) for i in range(3)]
    scorer.score_batch(items)
    with sessions() as session:
        rows = session.scalars(select(ShadowVerdict)).all()
        assert sorted((r.item_id, r.policy_version_id, r.action) for r in rows) == sorted(
            (i, shadow.id, "block") for i in items
        )
        report = shadow_report(session, examples=2)
    assert all(verdict(sessions, i).policy_version_id == v1.id for i in items)
    (diff,) = report.versions
    assert (diff.shadow, diff.real, diff.compared, diff.agreed) == ("p@2", {"p@1": 3}, 3, 0)
    (move,) = diff.transitions
    assert (move["from"], move["to"], move["count"]) == ("allow", "block", 3)
    assert len(move["examples"]) == 2 and set(move["examples"]) <= set(items)
    by_id = {c.id: c for c in diff.categories}
    assert by_id["drugs"].disagreements == 3 and by_id["drugs"].transitions == {"allow->block": 3}
    assert by_id["drugs"].mean_score_delta == 0.0  # same prompts: same scores, other thresholds

    assert main(["policy", "shadow-report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["versions"][0]["disagreed"] == 3
    assert main(["policy", "shadow-report", "--version", "p@2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("shadow p@2 vs real p@1 (3): 3 items, 3 disagree (100.0%)")
    assert "allow->block: 3" in text
