"""The backtest's traffic window: last N, a time range, one tenant; subsets score as the whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from clipmod.errors import InvalidInput
from clipmod.policy import backtest, scoring, window
from clipmod.policy.loader import parse_policy
from clipmod.policy.rescore import item_scores
from clipmod.policy.traffic import load_embeddings
from tests.policy.conftest import StoreFn, policy_text, unit_rows

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def traffic(store: StoreFn, runtime: Any) -> list[tuple[str, str, datetime]]:
    """24 items an hour apart over two tenants: image only, text only (1-3 windows), both."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(24):
        tenant = "acme" if i % 3 else "globex"
        image = unit_rows(rng, 1, runtime.dim)[0] if i % 4 != 1 else None
        text = unit_rows(rng, 1 + i % 3, runtime.dim) if i % 2 or image is None else None
        at = T0 + timedelta(hours=i)
        out.append((store(tenant, image, text, created_at=at), tenant, at))
    return out


def _ids(emb: Any) -> set[str]:
    return set(emb.ids)


def test_windows_pick_the_right_items(
    sessions: sessionmaker[Session], runtime: Any, traffic: list[tuple[str, str, datetime]]
) -> None:
    rev = runtime.revision
    with sessions() as s:
        newest = window.load_window(s, rev, window.Window(last=5))
        assert _ids(newest) == {i for i, _, _ in traffic[-5:]}
        acme = window.load_window(s, rev, window.Window(last=5, tenant="acme"))
        assert _ids(acme) == {i for i, t, _ in traffic if t == "acme"}.difference(
            i for i, _, _ in traffic[:17]
        )
        assert len(acme) == 5 and set(acme.tenant_names.values()) >= {"acme"}
        span = window.Window(since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=9))
        assert _ids(window.load_window(s, rev, span)) == {i for i, _, at in traffic[3:9]}
        assert len(window.load_window(s, rev, window.Window())) == 24
        empty = window.load_window(s, rev, window.Window(since=T0 + timedelta(days=9), last=3))
        assert len(empty) == 0
        for bad, says in (
            (window.Window(last=0), "last: between 1"),
            (window.Window(since=T0, until=T0), "until: must be after since"),
            (window.Window(tenant="nobody"), "no tenant named 'nobody'"),
        ):
            with pytest.raises(InvalidInput, match=says):
                window.load_window(s, rev, bad)
    assert span.describe() == (
        "all stored items of every tenant from 2026-11-01 03:00 UTC until 2026-11-01 09:00 UTC"
    )


def test_a_subset_scores_exactly_as_those_items_did_in_the_whole(
    sessions: sessionmaker[Session], runtime: Any, traffic: list[tuple[str, str, datetime]]
) -> None:
    bank = scoring.build_bank(
        parse_policy(policy_text()), runtime.encode_texts, runtime.logit_scale
    )
    with sessions() as s:
        whole = load_embeddings(s, runtime.revision)
    whole_scores = item_scores(bank, whole)
    for keep in (
        np.arange(24) % 2 == 0,
        np.arange(24) >= 20,
        np.zeros(24, bool),
        np.ones(24, bool),
    ):
        part = window.subset(whole, keep)
        assert list(part.ids) == [i for i, k in zip(whole.ids, keep, strict=True) if k]
        np.testing.assert_array_equal(item_scores(bank, part), whole_scores[keep])


def test_backtest_on_a_window_counts_only_its_items(
    sessions: sessionmaker[Session],
    runtime: Any,
    seeded: int,
    traffic: list[tuple[str, str, datetime]],
) -> None:
    draft = parse_policy(policy_text())
    with sessions() as s:
        emb = window.load_window(s, runtime.revision, window.Window(tenant="globex"))
        report = backtest.backtest(s, draft, runtime, traffic=emb)
    assert report.items == sum(t == "globex" for _, t, _ in traffic) == 8
    assert sum(report.actions["draft"].values()) == 8
