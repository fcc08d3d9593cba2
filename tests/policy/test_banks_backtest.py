"""Banks in backtests: the vectorised backtest agrees item for item with `decide` + banks, on
SQL rows and on the traffic store; a bank change is backtested like a policy change."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings
from clipmod.actions import Action
from clipmod.banks import backtest as bank_backtest
from clipmod.banks import live, registry
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import Item, ItemEmbedding, Tenant
from clipmod.policy import backtest, parse_policy, rescore, scoring, versions
from clipmod.policy.traffic import load_embeddings
from clipmod.traffic.sync import TrafficStore
from tests.policy.conftest import StoreFn
from tests.policy.test_backtest import TEMPLATE, calibrated, traffic

BANKS = "banks:\n  - {name: known-bad, threshold: 0.9}\n  - {name: logos, threshold: 0.85}\n"


def noisy(row: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    x = row + scale * rng.standard_normal(row.shape)
    return x / np.linalg.norm(x)


@pytest.fixture
def banked(store: StoreFn, runtime: Any, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """The backtest world plus near-copies of some items, a block and an allow bank."""
    ids = traffic(store, runtime)
    rng = np.random.default_rng(11)
    with sessions() as session:
        rows = {
            e.item_id: embeddings.from_bytes(e.image, e.dim)[0]
            for e in session.scalars(select(ItemEmbedding))
            if e.image is not None
        }
    with_image = [i for i in ids if i in rows]
    bad, good = with_image[:3], with_image[3:6]
    for k, source in enumerate(bad + good):  # re-uploads: cosine ~0.95 to their original
        store("acme", image=noisy(rows[source], rng, 0.02), id=f"copy{k:028d}")
    banks = rescore.BankCache()
    probe = parse_policy(TEMPLATE.format(name="probe", t=[(0, 1)] * 3, o=(0, 1)))
    with sessions() as session:
        scores = rescore.item_scores(
            banks.get(probe, runtime), load_embeddings(session, runtime.revision)
        )
    with transaction(sessions) as session:
        for name, kind, items in (("known-bad", "block", bad), ("logos", "allow", good)):
            bank = registry.create_bank(
                session, name, kind, model_revision=runtime.revision, dim=runtime.dim, author="t"
            )
            new = registry.from_items(session, bank, items)
            registry.add_entries(session, bank, new, author="t")
        live_version = versions.publish(session, calibrated("live", scores, 0.5, 0.85), author="t")
        versions.activate(session, live_version.version, by="t")
    draft = calibrated("draft", scores, 0.3, 0.6) + BANKS
    return {"ids": ids, "bad": bad, "good": good, "draft": parse_policy(draft), "banks": banks}


def brute_force(
    session: Session, policy: Any, runtime: Any, banks: rescore.BankCache
) -> dict[str, Any]:
    """Each item alone through `decide`, with the banks the worker would resolve."""
    bank_set, skipped = live.resolve(session, policy, runtime.revision)
    assert skipped == []
    prompts = banks.get(policy, runtime)
    out = {}
    for emb, tenant in session.execute(
        select(ItemEmbedding, Tenant.name).join(Item, Item.id == ItemEmbedding.item_id).join(Tenant)
    ).all():
        parts = [
            (source, embeddings.from_bytes(raw, emb.dim))
            for source, raw in (("image", emb.image), ("text", emb.text))
            if raw is not None
        ]
        out[emb.item_id] = scoring.decide(
            prompts, parts, item_id=emb.item_id, tenant=tenant, banks=bank_set
        )
    return out


@pytest.mark.parametrize("from_store", [False, True])
def test_backtest_with_banks_matches_decide_item_for_item(
    banked: dict[str, Any],
    runtime: Any,
    sessions: sessionmaker[Session],
    settings: Any,
    from_store: bool,
) -> None:
    store = TrafficStore(settings.traffic_dir, runtime.revision) if from_store else None
    with sessions() as session:
        report = backtest.backtest(
            session, banked["draft"], runtime, banks=banked["banks"], store=store
        )
        want = brute_force(session, banked["draft"], runtime, banked["banks"])
    matched = Counter(o.bank_match.label if o.bank_match else None for o in want.values())
    assert matched["known-bad@1"] == 6 and matched["logos@1"] == 6  # 3 sources + 3 copies each
    assert report.bank_matches == {"draft": {"known-bad@1": 6, "logos@1": 6}, "baseline": {}}
    assert report.actions["draft"] == {
        a.value: sum(o.action == a for o in want.values()) for a in Action
    }
    flagged = [sum(o.categories[c].action != "allow" for o in want.values()) for c in range(3)]
    assert [c.draft["flagged"] for c in report.categories if c.draft] == flagged
    assert all(want[i].action == Action.BLOCK for i in banked["bad"])
    suppressed = [want[i] for i in banked["good"]]
    assert all(o.action in (Action.ALLOW, Action.REVIEW) for o in suppressed)
    assert all(c.action == Action.ALLOW for o in suppressed for c in o.categories)
    assert report.notes == []


def test_a_bank_change_is_backtested_before_it_is_made(
    banked: dict[str, Any], runtime: Any, sessions: sessionmaker[Session], settings: Any
) -> None:
    store = TrafficStore(settings.traffic_dir, runtime.revision)
    extra = banked["ids"][-1]  # a text-and-image item not in any bank yet
    with transaction(sessions) as session:  # the active policy now references the banks
        active = versions.resolve(session, None)
        assert active is not None
        published = versions.publish(session, active.yaml_text + BANKS, author="t")
        versions.activate(session, published.version, by="t")
    with sessions() as session:
        bank = registry.get_bank(session, "known-bad")
        now = registry.snapshot(session, bank)
        first = int(now.entry_ids[0])
        after = bank_backtest.proposed(
            session, bank, now, add_items=[extra], remove_entries=[first]
        )
        report = bank_backtest.backtest_change(
            session, bank, runtime, before=now, after=after, store=store, examples=10
        )
    assert (report.before, report.after, report.threshold) == ("known-bad@1", "known-bad@2", 0.9)
    assert (report.matched_before, report.matched_after) == (6, 5)
    assert (report.newly_matched, report.stopped_matching) == (1, 2)
    assert [e["item"] for e in report.examples["newly_matched"]] == [extra]
    stopped = {e["item"] for e in report.examples["stopped_matching"]}
    assert banked["bad"][0] in stopped and all(
        e["entry"] == first for e in report.examples["stopped_matching"]
    )
    assert report.policy is not None and report.policy.bank_matches["draft"] == {
        "known-bad@2": 5,
        "logos@1": 6,
    }
    moved = sum(t.count for t in report.policy.transitions)
    assert moved >= 1 and report.policy.items == len(banked["ids"]) + 6
    with sessions() as session:  # nothing was written
        assert registry.resolve_version(session, registry.get_bank(session, "known-bad"), None) == 1


def test_bank_backtest_needs_a_threshold_when_no_policy_uses_the_bank(
    banked: dict[str, Any], runtime: Any, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        bank = registry.get_bank(session, "known-bad")
        snap = registry.snapshot(session, bank)
        empty = registry.snapshot(session, bank, 0)
        with pytest.raises(ClipmodError) as err:
            bank_backtest.backtest_change(session, bank, runtime, before=empty, after=snap)
        assert err.value.code == "bank_not_referenced"
        with pytest.raises(ClipmodError) as err:
            bank_backtest.backtest_change(
                session, bank, runtime, before=empty, after=snap, threshold=1.5
            )
        assert err.value.code == "invalid_threshold"
        report = bank_backtest.backtest_change(
            session, bank, runtime, before=empty, after=snap, threshold=0.9
        )
    assert (report.newly_matched, report.stopped_matching, report.policy) == (6, 0, None)


def test_a_worker_leaves_out_what_it_cannot_match_and_says_why(
    banked: dict[str, Any], runtime: Any, sessions: sessionmaker[Session]
) -> None:
    draft = banked["draft"]
    gone = draft.banks[1].model_copy(update={"name": "gone"})
    policy = draft.model_copy(update={"banks": [draft.banks[0], gone]})
    with transaction(sessions) as session:
        registry.create_bank(session, "old-model", "block", model_revision="0ld", dim=4, author="t")
    pinned = policy.model_copy(
        update={"banks": [*policy.banks, policy.banks[0].model_copy(update={"name": "old-model"})]}
    )
    with sessions() as session:
        found, skipped = live.resolve(session, pinned, runtime.revision)
        report = backtest.backtest(session, pinned, runtime, banks=banked["banks"])
    assert [s.label for s in found.banks] == ["known-bad@1"]
    assert skipped == [
        "bank 'gone' does not exist",
        f"bank 'old-model' holds model revision 0ld, not {runtime.revision}",
    ]
    assert report.notes == sorted(f"draft: {s}: not matched" for s in skipped)
