"""Measure the demo model where it matters to the service: on (object, colour) pairs it never saw.

Two numbers, both on the world's ``heldout`` split:

* zero-shot top-1 accuracy over every object kind, with one "a photo of a {object}" prompt per
  kind, on single-object images. Captions never name a held-out pair, so this measures
  generalisation, not recall of training captions.
* per-category precision/recall/F1 of a moderation policy, a category "flagging" an image when
  it reaches ``review_at``. An image truly violates a category when any of its objects belongs
  to it.

Scoring goes through the service's own code (``clipmod.runtime``, ``clipmod.policy``,
``clipmod.policy.scoring``), so these are the numbers a deployment with the demo policy would see.

    python -m clipmod.demo.evaluate [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from clipmod.demo import world
from clipmod.policy.loader import load_policy_file
from clipmod.policy.schema import Policy
from clipmod.policy.scoring import F32, apply_thresholds, build_bank, score, thresholds
from clipmod.runtime import ClipRuntime

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo-clip"
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "policies" / "demo.yaml"
DEFAULT_N = 1000
_BATCH = 64


def load(model_dir: str | Path, policy_path: str | Path) -> tuple[ClipRuntime, Policy]:
    runtime = ClipRuntime.load(str(model_dir), device="cpu")
    policy, _ = load_policy_file(policy_path)
    return runtime, policy


def embed(
    rt: ClipRuntime, samples: Sequence[world.Sample], progress: bool = False, desc: str = ""
) -> F32:
    """L2-normalised image embeddings, in batches (progress on stderr)."""
    chunks = [np.zeros((0, rt.dim), dtype=np.float32)]
    for i in tqdm(range(0, len(samples), _BATCH), desc=desc, disable=not progress, file=sys.stderr):
        chunks.append(rt.encode_images([s.image for s in samples[i : i + _BATCH]]))
    return np.concatenate(chunks)


def category_scores(rt: ClipRuntime, policy: Policy, embeddings: F32) -> F32:
    """Scores (n, C), columns in the policy's category order."""
    bank = build_bank(policy, rt.encode_texts, rt.logit_scale)
    scores, _ = score(bank, embeddings)
    return scores


def flags(policy: Policy, scores: F32) -> npt.NDArray[np.bool_]:
    """(n, C) booleans: the category reaches review (after escalation), as the worker decides."""
    review, block = thresholds(policy)
    severity, _, _ = apply_thresholds(policy, scores, review, block)
    return severity >= 1


def prf(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float]:
    tp = sum(t and p for t, p in zip(truth, pred, strict=True))
    fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
    fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def truth_for(category: str, objects: Sequence[str]) -> bool:
    return any(world.category_of(o) == category for o in objects)


def zero_shot_accuracy(rt: ClipRuntime, n: int, seed: int, progress: bool = False) -> float:
    samples = [world.render(seed + i, "heldout", n_objects=1) for i in range(n)]
    images = embed(rt, samples, progress, "zero-shot")
    prompts = rt.encode_texts([f"a photo of {world.article(o)}" for o in world.OBJECTS])
    guess = (images @ prompts.T).argmax(axis=1)
    hits = sum(world.OBJECTS[g] == s.objects[0] for g, s in zip(guess, samples, strict=True))
    return float(hits) / n


def policy_metrics(
    rt: ClipRuntime, policy: Policy, n: int, seed: int, progress: bool = False
) -> dict[str, dict[str, float]]:
    samples = [world.render(seed + i, "heldout") for i in range(n)]
    flagged = flags(policy, category_scores(rt, policy, embed(rt, samples, progress, "policy")))
    return {
        cat.id: prf([truth_for(cat.id, s.objects) for s in samples], flagged[:, c].tolist())
        for c, cat in enumerate(policy.categories)
    }


def evaluate(
    model_dir: str | Path = DEFAULT_MODEL,
    policy_path: str | Path = DEFAULT_POLICY,
    n: int = DEFAULT_N,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot accuracy and per-category P/R/F1, each on ``n`` held-out images."""
    rt, policy = load(model_dir, policy_path)
    return {
        "zero_shot_accuracy": zero_shot_accuracy(rt, n, seed, progress),
        "categories": policy_metrics(rt, policy, n, seed, progress),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"zero-shot accuracy (held-out pairs): {result['zero_shot_accuracy']:.3f}",
        "",
        f"{'category':<12} {'precision':>9} {'recall':>9} {'f1':>9}",
    ]
    for cid, m in result["categories"].items():
        lines.append(f"{cid:<12} {m['precision']:>9.3f} {m['recall']:>9.3f} {m['f1']:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate the demo model on held-out pairs.")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--policy", default=str(DEFAULT_POLICY))
    parser.add_argument("-n", type=int, default=DEFAULT_N, help="images per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.policy, n=args.n, seed=args.seed, progress=True)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
