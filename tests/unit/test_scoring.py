"""Scoring maths against values computed by hand (2-d embeddings, so the arithmetic is visible)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipmod.policy import parse_policy, scoring

VECTORS = {"p1": [1.0, 0.0], "p2": [0.0, 1.0], "n1": [-1.0, 0.0]}
ITEM = np.array([[0.6, 0.8]], dtype=np.float32)  # cos(p1)=0.6, cos(p2)=0.8, cos(n1)=-0.6

POLICY = """
name: hand
categories:
  - id: a
    mode: similarity
    prompts: [p1, {text: p2, weight: 0.5}]
    review_at: 0.5
    block_at: 0.7
  - id: b
    mode: contrast
    prompts: [p2]
    negatives: [p1]
    review_at: 0.5
    block_at: 0.85
"""


def encode(texts: list[str]) -> np.ndarray:
    return np.array([VECTORS[t] for t in texts], dtype=np.float32)


def bank(text: str = POLICY, scale: float = 10.0) -> scoring.PromptBank:
    return scoring.build_bank(parse_policy(text), encode, scale)


def test_similarity_is_weighted_max_cosine() -> None:
    scores, tops = scoring.score(bank(), ITEM)
    # a: max(1.0 * 0.6, 0.5 * 0.8) = 0.6, won by p1 (index 0)
    assert scores[0, 0] == pytest.approx(0.6)
    assert tops[0, 0] == 0


def test_contrast_is_softmax_mass_on_own_prompts() -> None:
    scores, _ = scoring.score(bank(), ITEM)
    # b: softmax(10 * [0.8, 0.6]) on p2 = 1 / (1 + e^-2)
    assert scores[0, 1] == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-5)


def test_contrast_weights_act_as_log_priors() -> None:
    weighted = POLICY.replace("prompts: [p2]", "prompts: [{text: p2, weight: 2.0}]")
    scores, _ = scoring.score(bank(weighted), ITEM)
    # 2e^8 / (2e^8 + e^6) = 1 / (1 + e^-2 / 2)
    assert scores[0, 1] == pytest.approx(1 / (1 + math.exp(-2) / 2), rel=1e-5)


def test_decide_takes_the_most_severe_category() -> None:
    outcome = scoring.decide(bank(), [("image", ITEM)], item_id="x")
    by_id = {c.id: c for c in outcome.categories}
    assert by_id["a"].action == "review"  # 0.5 <= 0.6 < 0.7
    assert by_id["b"].action == "block"  # 0.88 >= 0.85
    assert outcome.action == "block"
    assert by_id["a"].top_prompt == "p1"
    assert (by_id["a"].review_at, by_id["a"].block_at) == (0.5, 0.7)


def test_threshold_is_inclusive() -> None:
    at_edge = POLICY.replace(
        "review_at: 0.5\n    block_at: 0.7", "review_at: 0.3\n    block_at: 0.6"
    )
    outcome = scoring.decide(bank(at_edge), [("image", ITEM)], item_id="x")
    assert outcome.categories[0].action == "block"  # score 0.6 == block_at


def test_max_over_image_and_text_windows_per_category() -> None:
    text_windows = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    outcome = scoring.decide(bank(), [("image", ITEM), ("text", text_windows)], item_id="x")
    a, b = outcome.categories
    assert a.score == pytest.approx(1.0)  # window 1 matches p1 exactly
    assert a.source == "text"
    assert b.score == pytest.approx(1 / (1 + math.exp(-10)), rel=1e-5)  # window 2: p2 vs p1
    assert b.source == "text"


SPECIAL = """
name: care
escalation: {lower_by: 0.1}
categories:
  - id: minors
    special: true
    prompts: [p1]
    review_at: 0.55
    block_at: 1.0
  - id: a
    prompts: [p2]
    review_at: 0.85
    block_at: 0.9
"""


def test_special_category_lowers_other_thresholds() -> None:
    outcome = scoring.decide(bank(SPECIAL), [("image", ITEM)], item_id="x")
    minors, a = outcome.categories
    assert minors.score >= minors.review_at  # 0.6 >= 0.55 fires the special category...
    assert minors.action == "allow"  # ...which never acts by itself
    assert minors.review_at == pytest.approx(0.55)  # its own thresholds stay
    assert (a.review_at, a.block_at) == (pytest.approx(0.75), pytest.approx(0.8))
    assert a.action == "block"  # 0.8 >= lowered block_at


def test_no_escalation_when_special_does_not_fire() -> None:
    quiet = SPECIAL.replace("review_at: 0.55", "review_at: 0.65")
    outcome = scoring.decide(bank(quiet), [("image", ITEM)], item_id="x")
    assert outcome.categories[1].review_at == pytest.approx(0.85)
    assert outcome.categories[1].action == "allow"


def test_tenant_overrides_replace_thresholds() -> None:
    text = (
        POLICY + "tenant_overrides:\n  strict: {thresholds: {a: {review_at: 0.1, block_at: 0.2}}}\n"
    )
    outcome = scoring.decide(bank(text), [("image", ITEM)], item_id="x", tenant="strict")
    assert outcome.categories[0].action == "block"
    assert scoring.decide(bank(text), [("image", ITEM)], item_id="x").categories[0].action == (
        "review"
    )


def test_audit_sample_is_deterministic_and_near_rate() -> None:
    ids = [f"item-{i}" for i in range(4000)]
    sampled = [scoring.audit_sampled(i, 0.25) for i in ids]
    assert sampled == [scoring.audit_sampled(i, 0.25) for i in ids]
    assert 0.22 < sum(sampled) / len(ids) < 0.28
    assert not any(scoring.audit_sampled(i, 0.0) for i in ids)


def test_audited_allow_becomes_review() -> None:
    low = np.array([[-0.6, -0.8]], dtype=np.float32)
    text = POLICY.replace("name: hand", "name: hand\naudit_sample_rate: 1.0")
    outcome = scoring.decide(bank(text), [("image", low)], item_id="x")
    assert outcome.audit and outcome.action == "review"
    assert all(c.action == "allow" for c in outcome.categories)


def test_vectorised_scores_match_row_by_row() -> None:
    rng = np.random.default_rng(0)
    many = scoring.l2_normalise(rng.normal(size=(50, 2)))
    b = bank()
    all_scores, _ = scoring.score(b, many)
    for i in range(50):
        one, _ = scoring.score(b, many[i])
        np.testing.assert_allclose(all_scores[i], one[0], rtol=1e-6)
