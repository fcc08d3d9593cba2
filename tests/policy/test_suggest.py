"""Threshold suggestions from moderator decisions: the documented rule, checked by brute force."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import Decision
from clipmod.policy import parse_policy, rescore, suggest, traffic, versions
from tests.policy.conftest import StoreFn, policy_text, unit_rows


def test_pr_curve_and_rule_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.1, 0.5], dtype=np.float32)
    labels = np.array([1, 1, 0, 1, 0, -1], dtype=np.int8)  # the last item was not judged
    curve = suggest.pr_curve(scores, labels)
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.1], rtol=1e-6)
    np.testing.assert_allclose(curve.precision, [1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 3, 2 / 3, 1, 1])
    s = suggest.suggest_category(
        "c",
        {"review_at": 0.5, "block_at": 0.6},
        scores,
        labels,
        target_precision=0.95,
        review_precision=0.7,
    )
    # block: lowest threshold with precision >= 0.95 is 0.9, written as 0.89 (still above 0.8)
    assert (s.block_at, s.block_quality) == (
        0.89,
        {"threshold": 0.89, "precision": 1.0, "recall": 0.3333},
    )
    # review: lowest with precision >= 0.7 is 0.7 (precision 0.75, recall 1)
    assert (s.review_at, s.review_quality) == (
        0.69,
        {"threshold": 0.69, "precision": 0.75, "recall": 1.0},
    )
    assert (s.labelled, s.positives) == (5, 3)
    assert s.note == "only 5 labelled items: a hint, not a calibration"


def test_no_positive_labels_suggests_nothing() -> None:
    s = suggest.suggest_category(
        "c",
        {"review_at": 0.5, "block_at": 0.6},
        np.array([0.2, 0.4], dtype=np.float32),
        np.array([0, 0], dtype=np.int8),
        target_precision=0.9,
        review_precision=0.5,
    )
    assert (s.review_at, s.block_at) == (None, None)
    assert s.note is not None and s.note.startswith("no positive labels")


def labelled_world(
    store: StoreFn, runtime: Any, sessions: sessionmaker[Session], n: int = 80
) -> list[str]:
    """Items pulled towards "a photo of a pill" by a random amount; the closer ones are drugs
    (with 10% label noise), so precision rises with the threshold but not perfectly."""
    rng = np.random.default_rng(3)
    pill = runtime.encode_texts(["a photo of a pill"])[0]
    ids = []
    pulls = rng.uniform(0, 3, n)
    for pull in pulls:
        x = unit_rows(rng, 1, runtime.dim)[0] + pull * pill
        ids.append(store("acme", image=x / np.linalg.norm(x)))
    with transaction(sessions) as session:
        for item_id, pull in zip(ids, pulls, strict=True):
            label = bool(pull > 1.5) != bool(rng.random() < 0.1)
            session.add(Decision(item_id=item_id, moderator="m", labels={"drugs": label}))
    return ids


def test_suggestions_follow_the_rule_on_stored_traffic(
    store: StoreFn, runtime: Any, sessions: sessionmaker[Session]
) -> None:
    labelled_world(store, runtime, sessions)
    store("acme", image=unit_rows(np.random.default_rng(9), 1, runtime.dim)[0])  # unlabelled
    policy = parse_policy(policy_text())
    with sessions() as session:
        report = suggest.suggest(session, policy, runtime, target_precision=0.9)
        emb = traffic.load_embeddings(session, runtime.revision, labelled_only=True)
        labels = suggest.load_labels(session, emb.ids, ["drugs"])[:, 0] == 1
    scores = rescore.item_scores(rescore.BankCache().get(policy, runtime), emb)[:, 1]
    assert report.labelled_items == 80 and len(emb) == 80
    drugs = report.categories[1]
    assert (drugs.labelled, drugs.positives) == (80, int(labels.sum()))

    def precision(t: float) -> float:
        flagged = scores >= t
        return float((flagged & labels).sum() / flagged.sum())

    for target, chosen, quality in (
        (0.9, drugs.block_at, drugs.block_quality),
        (0.5, drugs.review_at, drugs.review_quality),
    ):
        ok = [float(t) for t in np.unique(scores) if precision(float(t)) >= target]
        best = min(ok)  # the lowest threshold precise enough
        assert chosen is not None and quality is not None
        assert (scores >= chosen).sum() == (scores >= best).sum()  # same items flagged
        assert chosen <= best and len(str(chosen)) <= 8
        assert quality["precision"] == pytest.approx(precision(best), abs=1e-4)
        recall = (scores >= best)[labels].mean()
        assert quality["recall"] == pytest.approx(recall, abs=1e-4)
    assert drugs.review_at is not None and drugs.block_at is not None
    assert drugs.review_at <= drugs.block_at
    assert report.categories[0].positives == 0  # nobody judged weapons
    assert len(drugs.curve) == 20


def test_bad_precision_is_refused(runtime: Any, sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(ClipmodError) as caught:
        suggest.suggest(session, parse_policy(policy_text()), runtime, target_precision=1.5)
    assert caught.value.code == "invalid_precision"


def test_cli_suggest(
    store: StoreFn,
    runtime: Any,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    cli_env: None,
) -> None:
    assert main(["policy", "suggest"]) == 2
    assert capsys.readouterr().err.startswith("clipmod: no_policy: no active policy version")
    labelled_world(store, runtime, sessions)
    with transaction(sessions) as session:
        versions.activate(
            session, versions.publish(session, policy_text(), author="t").version, by="t"
        )
    assert main(["policy", "suggest", "--target-precision", "0.9", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "test@1" and data["labelled_items"] == 80
    assert data["categories"][1]["block_at"] is not None
    assert main(["policy", "suggest", "--policy", "test@1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "test@1: 80 labelled items; block_at at precision ≥ 0.95, review_at at precision ≥ 0.5"
    )
    assert out[2].startswith("  drugs                review_at 0.3 -> ")
