"""The bank rule inside the verdict rule: pure numpy, checked on hand-made vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipmod.actions import Action
from clipmod.policy import parse_policy, scoring
from clipmod.policy.banks import BankScores, BankSet, BankSnapshot, decide, stack

DIM = 8
POLICY = """\
name: t
categories:
  - id: weapons
    prompts: [knife]
    review_at: 0.5
    block_at: 0.9
"""


def unit(v: list[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(v, dtype=np.float32)
    return x / np.linalg.norm(x)


def axis(i: int) -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[i]


def snap(name: str, kind: Action, rows: list[np.ndarray], version: int = 1) -> BankSnapshot:
    matrix = np.stack(rows) if rows else np.zeros((0, DIM), dtype=np.float32)
    ids = np.arange(100, 100 + len(rows), dtype=np.int64)
    return BankSnapshot(name, version, kind, "rev", ids, matrix.astype(np.float32))


@pytest.fixture
def prompts() -> scoring.PromptBank:
    """One similarity category whose only prompt is axis 0: an item's score is its x[0]."""
    return scoring.build_bank(parse_policy(POLICY), lambda t: np.stack([axis(0)]), 100.0)


def test_match_finds_the_closest_entry_of_every_bank_in_one_stacked_matrix() -> None:
    bad = snap("bad", Action.BLOCK, [axis(1), axis(2), unit([0, 1, 1, 0, 0, 0, 0, 0])])
    good = snap("good", Action.ALLOW, [axis(3)])
    found = stack([(bad, 0.9), (good, 0.9)]).match(
        np.stack([axis(2), unit([0, 0, 0, 1, 1, 0, 0, 0])])
    )
    assert found.entry.tolist() == [[1, 0], [0, 0]]
    np.testing.assert_allclose(found.similarity, [[1.0, 0.0], [0.0, 0.70710677]], atol=1e-6)


def test_a_block_match_blocks_an_item_the_prompts_allow(prompts: scoring.PromptBank) -> None:
    banks = stack([(snap("bad", Action.BLOCK, [axis(1)]), 0.9)])
    near = unit([0.1, 1, 0.05, 0, 0, 0, 0, 0])  # cosine ~0.99 to the entry, score 0.1
    far = unit([0.1, 0.3, 1, 0, 0, 0, 0, 0])
    got = scoring.decide_batch(
        prompts,
        [[("image", near)], [("image", far)]],
        item_ids=["a", "b"],
        tenants=[None] * 2,
        banks=banks,
    )
    assert [o.action for o in got] == [Action.BLOCK, Action.ALLOW]
    match = got[0].bank_match
    assert match is not None and got[1].bank_match is None
    assert (match.bank, match.version, match.kind, match.entry) == ("bad", 1, Action.BLOCK, 100)
    assert match.similarity == pytest.approx(float(near @ axis(1)), abs=1e-6)
    assert match.to_dict()["label"] == "bad@1" and match.threshold == 0.9
    assert got[0].categories[0].action == Action.ALLOW  # the prompts said allow


def test_an_allow_match_suppresses_prompt_flags_but_not_a_block_match(
    prompts: scoring.PromptBank,
) -> None:
    flagged = unit([1, 0, 0, 0.2, 0, 0, 0, 0])  # prompt score ~0.98: blocked by the prompts
    allow = snap("logos", Action.ALLOW, [axis(0)])
    alone = scoring.decide(prompts, [("image", flagged)], item_id="x", banks=stack([(allow, 0.9)]))
    assert alone.action == Action.ALLOW
    assert alone.categories[0].action == Action.ALLOW and alone.categories[0].score > 0.9
    assert alone.bank_match is not None and alone.bank_match.kind == Action.ALLOW
    without = scoring.decide(prompts, [("image", flagged)], item_id="x")
    assert without.action == Action.BLOCK and without.bank_match is None
    both = stack([(allow, 0.9), (snap("bad", Action.BLOCK, [axis(0)]), 0.95)])
    got = scoring.decide(prompts, [("image", flagged)], item_id="x", banks=both)
    assert got.action == Action.BLOCK
    assert got.bank_match is not None and got.bank_match.bank == "bad"


def test_the_most_severe_kind_decides_then_the_closest() -> None:
    bank_set = stack(
        [
            (snap("r", Action.REVIEW, [axis(0)]), 0.5),
            (snap("b1", Action.BLOCK, [axis(0)]), 0.5),
            (snap("b2", Action.BLOCK, [axis(0)]), 0.5),
            (snap("a", Action.ALLOW, [axis(0)]), 0.5),
        ]
    )
    sims = np.array([[0.99, 0.6, 0.7, 0.99], [0.9, 0.4, 0.3, 0.2], [0.1, 0.1, 0.1, 0.8]])
    scores = BankScores(sims.astype(np.float32), np.zeros((3, 4), dtype=np.int64))
    decision = decide(bank_set, scores)
    assert decision.bank.tolist() == [2, 0, 3]
    assert decision.severity.tolist() == [2, 1, 0]
    assert decision.suppressed.tolist() == [True, False, True]


def test_text_rows_and_empty_banks_match_nothing(prompts: scoring.PromptBank) -> None:
    banks = stack([(snap("bad", Action.BLOCK, [axis(1)]), 0.5), (snap("e", Action.BLOCK, []), 0.0)])
    text_only = scoring.decide(prompts, [("text", axis(1)[None, :])], item_id="t", banks=banks)
    assert text_only.bank_match is None and text_only.action == Action.ALLOW
    image = scoring.decide(prompts, [("image", axis(1))], item_id="i", banks=banks)
    assert image.bank_match is not None and image.bank_match.bank == "bad"


def test_the_threshold_is_inclusive_like_the_category_thresholds(
    prompts: scoring.PromptBank,
) -> None:
    x = unit([0, 3, 4, 0, 0, 0, 0, 0])  # cosine exactly 0.6 to axis 1 in float32
    at = float(np.float32(x @ axis(1)))
    for threshold, blocked in ((at, True), (np.nextafter(at, 1.0), False)):
        banks = stack([(snap("bad", Action.BLOCK, [axis(1)]), float(threshold))])
        got = scoring.decide(prompts, [("image", x)], item_id="i", banks=banks)
        assert (got.action == Action.BLOCK) is blocked


def test_the_device_path_gives_what_numpy_gives() -> None:
    """On a GPU the product and the per-bank maximum run there; torch on the CPU stands in."""
    rng = np.random.default_rng(3)
    banks = [
        snap(f"b{k}", Action.BLOCK, [unit(r) for r in rng.normal(size=(n, DIM))])
        for k, n in enumerate((5, 0, 17))
    ]
    host = stack([(b, 0.5) for b in banks])
    device = BankSet(
        host.banks, host.thresholds, host.matrix, host.starts, torch.from_numpy(host.matrix)
    )
    rows = np.stack([unit(r) for r in rng.normal(size=(9, DIM))])
    a, b = host.match(rows), device.match(rows)
    np.testing.assert_array_equal(a.entry, b.entry)
    np.testing.assert_allclose(a.similarity, b.similarity, atol=1e-6)
    assert (a.entry[:, 1] == -1).all() and np.isneginf(a.similarity[:, 1]).all()


def test_splitting_a_large_bank_across_cores_changes_nothing() -> None:
    """A batch's rows against 20,000 entries (split across cores) and a thousand rows (split by
    rows) give what one product gives; a tie keeps the first entry, across a split too."""
    rng = np.random.default_rng(4)
    entries = np.stack([unit(r) for r in rng.normal(size=(20_000, DIM))])
    entries[15_000] = entries[5]  # the same image twice, far apart
    big = snap("big", Action.BLOCK, list(entries))
    small = snap("small", Action.REVIEW, [axis(0), axis(1)])
    bank_set = stack([(small, 0.5), (big, 0.5)])
    for rows in (np.stack([entries[5], axis(1), *entries[:30]]), rng.normal(size=(1_000, DIM))):
        rows = np.stack([unit(r) for r in rows])
        found = bank_set.match(rows)
        sims = rows.astype(np.float32) @ bank_set.matrix.T
        np.testing.assert_array_equal(found.entry[:, 0], sims[:, :2].argmax(axis=1))
        np.testing.assert_array_equal(found.entry[:, 1], sims[:, 2:].argmax(axis=1))
        np.testing.assert_allclose(found.similarity[:, 1], sims[:, 2:].max(axis=1), atol=1e-6)
    assert bank_set.match(entries[5][None, :]).entry[0, 1] == 5
