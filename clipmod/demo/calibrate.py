"""Suggest ``review_at``/``block_at`` for each category of a policy from the world's val split.

Thresholds are chosen on ``val`` (the same (object, colour) pairs as training, unseen images) and
judged on ``heldout`` by ``clipmod.demo.evaluate``, so the reported numbers are not tuned on the
data they are measured on.

* ``review_at``: the threshold with the best F1 on val. Among thresholds that tie, the median one
  is taken, which puts it in the middle of the gap between the classes rather than against the
  edge of one of them.
* ``block_at``: the lowest threshold at or above ``review_at`` whose val precision reaches
  ``--block-precision`` (blocking is automatic, so it must be nearly always right).

    python -m clipmod.demo.calibrate
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

from clipmod.demo import world
from clipmod.demo.evaluate import (
    DEFAULT_MODEL,
    DEFAULT_POLICY,
    category_scores,
    embed,
    load,
    prf,
    truth_for,
)


def _candidates(scores: Sequence[float]) -> list[float]:
    values = sorted(set(scores))
    return [(a + b) / 2 for a, b in itertools.pairwise(values)]


def review_threshold(scores: Sequence[float], truth: Sequence[bool]) -> float:
    """The median of the thresholds that maximise F1."""
    results = [(prf(truth, [s >= t for s in scores])["f1"], t) for t in _candidates(scores)]
    best = max(f for f, _ in results)
    tied = [t for f, t in results if f >= best - 1e-9]
    return tied[len(tied) // 2]


def block_threshold(
    scores: Sequence[float], truth: Sequence[bool], floor: float, precision: float
) -> float:
    """The lowest threshold >= ``floor`` reaching ``precision``; 1.0 if none does."""
    for t in [floor, *(c for c in _candidates(scores) if c > floor)]:
        pred = [s >= t for s in scores]
        if any(pred) and prf(truth, pred)["precision"] >= precision:
            return t
    return 1.0


def calibrate(
    model_dir: str | Path = DEFAULT_MODEL,
    policy_path: str | Path = DEFAULT_POLICY,
    n: int = 1500,
    seed: int = 0,
    block_precision: float = 0.99,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Suggested thresholds per category id, rounded to two decimals."""
    rt, policy = load(model_dir, policy_path)
    samples = [world.render(seed + i, "val") for i in range(n)]
    scores = category_scores(rt, policy, embed(rt, samples, progress, "val"))
    out = {}
    for c, cat in enumerate(policy.categories):
        column = scores[:, c].tolist()
        truth = [truth_for(cat.id, s.objects) for s in samples]
        review = review_threshold(column, truth)
        block = block_threshold(column, truth, review, block_precision)
        review = math.floor(review * 100) / 100
        block = max(review, math.ceil(block * 100) / 100)
        val = prf(truth, [s >= review for s in column])
        out[cat.id] = {"review_at": review, "block_at": min(block, 1.0), **val}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Suggest policy thresholds from the val split.")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--policy", default=str(DEFAULT_POLICY))
    parser.add_argument("-n", type=int, default=1500, help="val images to score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-precision", type=float, default=0.99)
    args = parser.parse_args(argv)
    result = calibrate(
        args.model,
        args.policy,
        n=args.n,
        seed=args.seed,
        block_precision=args.block_precision,
        progress=True,
    )
    for cid, r in result.items():
        print(
            f"{cid}:  review_at: {r['review_at']:.2f}  block_at: {r['block_at']:.2f}"
            f"   (val at review_at: precision {r['precision']:.3f}, recall {r['recall']:.3f},"
            f" f1 {r['f1']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
