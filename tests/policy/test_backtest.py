"""Backtest = a per-item re-score with `scoring.decide`, only vectorised: it must agree exactly."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod import embeddings, keys
from clipmod.actions import Action
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import Decision, Item, ItemEmbedding, Tenant
from clipmod.policy import backtest, parse_policy, rescore, scoring, versions
from clipmod.policy.schema import Policy
from clipmod.policy.traffic import load_embeddings
from tests.policy.conftest import StoreFn, unit_rows

TEMPLATE = """\
name: {name}
escalation: {{lower_by: 0.05}}
audit_sample_rate: 0.3
categories:
  - id: weapons
    mode: contrast
    prompts: [a photo of a knife, {{text: a photo of a gun, weight: 2.0}}]
    negatives: [a photo of a cup, a photo of a flower, a photo of a tree]
    review_at: {t[0][0]}
    block_at: {t[0][1]}
  - id: drugs
    prompts: [a photo of a pill, {{text: a photo of a syringe, weight: 0.8}}]
    review_at: {t[1][0]}
    block_at: {t[1][1]}
  - id: gore
    special: true
    prompts: [a photo of a skull]
    review_at: {t[2][0]}
    block_at: {t[2][1]}
tenant_overrides:
  acme:
    thresholds:
      drugs: {{review_at: {o[0]}, block_at: {o[1]}}}
"""
PROMPTS = ["a photo of a knife", "a photo of a pill", "a photo of a skull", "a photo of a cup"]


def traffic(store: StoreFn, runtime: Any, n: int = 36, seed: int = 7) -> list[str]:
    """Image-only, text-only (1-4 windows) and both, pulled towards prompts for varied scores."""
    rng = np.random.default_rng(seed)
    anchors = runtime.encode_texts(PROMPTS)

    def vec(k: int) -> np.ndarray:
        x = (
            unit_rows(rng, k, runtime.dim)
            + rng.uniform(0, 2.5, (k, 1)) * anchors[rng.integers(0, len(PROMPTS), k)]
        )
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    ids = []
    for i in range(n):
        tenant = ("acme", "globex", "initech")[i % 3]
        kind = i % 3
        image = vec(1)[0] if kind != 1 else None
        text = vec(int(rng.integers(1, 5))) if kind != 0 else None
        ids.append(store(tenant, image=image, text=text, id=f"item{i:028d}"))  # fixed audit draw
    return ids


def brute_force(session: Session, bank: scoring.PromptBank, revision: str) -> dict[str, Any]:
    """The reference: decode each item's rows and `decide` it alone."""
    out = {}
    rows = session.execute(
        select(ItemEmbedding, Tenant.name)
        .join(Item, Item.id == ItemEmbedding.item_id)
        .join(Tenant, Tenant.id == Item.tenant_id)
        .where(ItemEmbedding.model_revision == revision)
    ).all()
    for emb, tenant in rows:
        parts = []
        if emb.image is not None:
            parts.append(("image", embeddings.from_bytes(emb.image, emb.dim)))
        if emb.text is not None:
            parts.append(("text", embeddings.from_bytes(emb.text, emb.dim)))
        out[emb.item_id] = scoring.decide(bank, parts, item_id=emb.item_id, tenant=tenant)
    return out


def calibrated(name: str, scores: np.ndarray, lo: float, hi: float) -> str:
    """A policy whose thresholds sit at quantiles of these scores, so every action occurs."""
    t = [tuple(round(float(np.quantile(scores[:, c], q)), 3) for q in (lo, hi)) for c in range(3)]
    o = (round(float(np.quantile(scores[:, 1], lo / 2)), 3), t[1][1])
    return TEMPLATE.format(name=name, t=t, o=o)


@pytest.fixture
def world(store: StoreFn, runtime: Any, sessions: sessionmaker[Session]) -> dict[str, Any]:
    ids = traffic(store, runtime)
    banks = rescore.BankCache()
    probe = parse_policy(TEMPLATE.format(name="probe", t=[(0, 1)] * 3, o=(0, 1)))
    with sessions() as session:
        emb = load_embeddings(session, runtime.revision)
    scores = rescore.item_scores(banks.get(probe, runtime), emb)
    return {
        "ids": ids,
        "banks": banks,
        "draft": parse_policy(calibrated("draft", scores, 0.65, 0.9)),
        "active": calibrated("live", scores, 0.5, 0.85),
        "globex": calibrated("live", scores, 0.2, 0.6),
    }


def test_backtest_matches_a_per_item_rescore_exactly(
    world: dict[str, Any], runtime: Any, sessions: sessionmaker[Session]
) -> None:
    draft: Policy = world["draft"]
    banks: rescore.BankCache = world["banks"]
    with transaction(sessions) as session:
        live = versions.publish(session, world["active"], author="t").version
        versions.activate(session, live, by="t")
        special = versions.publish(session, world["globex"], author="t").version
        globex = keys.get_or_create_tenant(session, "globex")
        versions.activate(session, special, by="t", tenants=[globex])
    with sessions() as session:
        report = backtest.backtest(session, draft, runtime, banks=banks, examples=3)
        emb = load_embeddings(session, runtime.revision)
        draft_actions = backtest.verdicts(
            draft, rescore.item_scores(banks.get(draft, runtime), emb), emb
        ).action
        want_draft = brute_force(session, banks.get(draft, runtime), runtime.revision)
        tenants = dict(session.execute(select(Item.id, Tenant.name).join(Tenant)).all())
        want_live = brute_force(session, banks.get(versions.load(live), runtime), runtime.revision)
        want_special = brute_force(
            session, banks.get(versions.load(special), runtime), runtime.revision
        )
    want_base = {i: (want_special if tenants[i] == "globex" else want_live)[i] for i in want_draft}

    # The item mix the brief asks for is really there.
    windows = np.diff(np.append(emb.text_starts, len(emb.text)))
    assert len(emb) == 36 and (windows > 1).any()
    assert len(set(emb.image_items) & set(emb.text_items)) == 12

    got = {i: Action.of(a) for i, a in zip(emb.ids, draft_actions, strict=True)}
    assert got == {i: o.action for i, o in want_draft.items()}
    assert len(set(got.values())) == 3, "thresholds should produce every action"
    assert any(o.audit for o in want_draft.values())

    assert report.items == 36
    assert report.baselines == {"live@1": 24, "live@2": 12}
    assert report.actions["draft"] == dict(Counter(got.values())) | {
        a: report.actions["draft"][a] for a in Action if a not in got.values()
    }
    assert report.actions["baseline"] == {
        a: sum(o.action == a for o in want_base.values()) for a in Action
    }
    moves = Counter(
        (want_base[i].action, want_draft[i].action)
        for i in want_draft
        if want_base[i].action != want_draft[i].action
    )
    assert {(t.before, t.after): t.count for t in report.transitions} == dict(moves)
    for t in report.transitions:
        assert 0 < len(t.examples) <= 3
        assert all(
            (want_base[i].action, want_draft[i].action) == (t.before, t.after) for i in t.examples
        )
    for c, cat in enumerate(report.categories):
        flagged = sum(o.categories[c].action != "allow" for o in want_draft.values())
        assert cat.draft is not None and cat.baseline is not None
        assert (cat.id, cat.draft["flagged"]) == (draft.categories[c].id, flagged)
        assert cat.draft["rate"] == pytest.approx(flagged / 36)
        base = sum(o.categories[c].action != "allow" for o in want_base.values())
        assert cat.baseline["flagged"] == base


def test_precision_and_recall_against_moderator_decisions(
    world: dict[str, Any], runtime: Any, sessions: sessionmaker[Session]
) -> None:
    draft: Policy = world["draft"]
    ids = world["ids"]
    with transaction(sessions) as session:
        versions.activate(
            session, versions.publish(session, world["active"], author="t").version, by="t"
        )
        for k, item_id in enumerate(ids[:20]):
            session.add(Decision(item_id=item_id, moderator="m", labels={"weapons": k % 3 == 0}))
        # A later decision overrides an earlier one for the same item and category.
        session.add(Decision(item_id=ids[0], moderator="m2", labels={"weapons": False}))
    with sessions() as session:
        report = backtest.backtest(session, draft, runtime, banks=world["banks"])
        want = brute_force(session, world["banks"].get(draft, runtime), runtime.revision)
    truth = {i: (k % 3 == 0 and k != 0) for k, i in enumerate(ids[:20])}
    flagged = {i: want[i].categories[0].action != "allow" for i in truth}
    tp = sum(flagged[i] and truth[i] for i in truth)
    fp = sum(flagged[i] and not truth[i] for i in truth)
    fn = sum(not flagged[i] and truth[i] for i in truth)
    weapons = report.categories[0]
    assert weapons.labelled == 20
    quality = weapons.draft
    assert quality is not None
    assert (quality["tp"], quality["fp"], quality["fn"]) == (tp, fp, fn)
    assert quality["precision"] == (tp / (tp + fp) if tp + fp else None)
    assert quality["recall"] == (tp / (tp + fn) if tp + fn else None)
    assert report.categories[1].labelled == 0
    drugs = report.categories[1].draft
    assert drugs is not None
    assert {k: v for k, v in drugs.items() if k not in ("flagged", "rate")} == {
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "labelled": 0,
        "precision": None,
        "recall": None,
    }


def test_added_and_removed_categories(
    world: dict[str, Any], runtime: Any, sessions: sessionmaker[Session]
) -> None:
    renamed = world["draft"].model_dump()
    renamed["categories"][2]["id"] = "skulls"  # gore removed, skulls added
    with transaction(sessions) as session:
        live = versions.publish(session, world["active"], author="t").version
    with sessions() as session:
        report = backtest.backtest(session, Policy.model_validate(renamed), runtime, against=live)
    by_id = {c.id: c for c in report.categories}
    assert list(by_id) == ["weapons", "drugs", "skulls", "gore"]
    assert by_id["skulls"].baseline is None and by_id["skulls"].draft is not None
    assert by_id["gore"].draft is None and by_id["gore"].baseline is not None


def test_since_against_and_no_active_version(
    world: dict[str, Any], runtime: Any, sessions: sessionmaker[Session]
) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    with transaction(sessions) as session:
        for item in session.scalars(select(Item).where(Item.id.in_(world["ids"][:10]))):
            item.created_at = old
    with sessions() as session:
        with pytest.raises(ClipmodError) as caught:
            backtest.backtest(session, world["draft"], runtime)
        assert caught.value.code == "no_active_policy"
    with transaction(sessions) as session:
        other = versions.publish(session, world["active"], author="t").version
    with sessions() as session:
        recent = backtest.backtest(
            session, world["draft"], runtime, since=old + timedelta(days=1), against=other
        )
        everything = backtest.backtest(session, world["draft"], runtime, against=other)
    assert (recent.items, everything.items) == (26, 36)
    assert recent.baselines == {"live@1": 26}


def test_a_model_revision_sees_only_its_own_embeddings(
    store: StoreFn, runtime: Any, sessions: sessionmaker[Session]
) -> None:
    store("acme", image=unit_rows(np.random.default_rng(0), 1, runtime.dim)[0])
    with sessions() as session:
        assert len(load_embeddings(session, runtime.revision)) == 1
        assert len(load_embeddings(session, "another-revision")) == 0


def test_cli_backtest(
    world: dict[str, Any],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    cli_env: None,
) -> None:
    with transaction(sessions) as session:
        versions.activate(
            session, versions.publish(session, world["active"], author="t").version, by="t"
        )
    draft = tmp_path / "draft.yaml"
    draft.write_text(world["draft"].model_dump_json(), encoding="utf-8")  # JSON is YAML too
    assert main(["policy", "backtest", str(draft), "--json", "--examples", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["items"] == 36 and data["baselines"] == {"live@1": 36}
    assert sum(data["actions"]["draft"].values()) == 36
    assert main(["policy", "backtest", str(draft), "--since", "2000-01-01"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"backtest of {draft} against live@1 (36 items)")
    assert "weapons" in text and "actions (active -> draft):" in text
    draft.write_text("name: x\ncategories: []\n", encoding="utf-8")
    assert main(["policy", "backtest", str(draft)]) == 2
    assert capsys.readouterr().err.startswith(f"{draft}:2:13 categories: List should have")
