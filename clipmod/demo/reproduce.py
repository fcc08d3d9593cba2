"""Retrain the demo model from scratch and check it matches the committed one.

The committed weights are only trustworthy if the one training command gives them back: this
trains into a scratch folder with the committed run's seed and hyperparameters (from its
``training.json``), evaluates both models on the same held-out images under the same policy,
and fails when any number differs by more than ``--tolerance`` (2 points by default). On the
machine that trained the committed model the weights come out bit-identical; another CPU may
differ in the last bits, which is what the tolerance allows for.

Takes as long as training (about 25 minutes on two cores), so it is a ``make`` target and not
part of the test suite:

    make reproduce-demo      # python -m clipmod.demo.reproduce
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from clipmod.demo import evaluate, train

TOLERANCE = 0.02


def flatten(result: dict[str, Any]) -> dict[str, float]:
    """``evaluate`` output as ``{"zero_shot_accuracy": x, "weapons.precision": y, ...}``."""
    flat = {"zero_shot_accuracy": float(result["zero_shot_accuracy"])}
    for cid, metrics in result["categories"].items():
        flat.update({f"{cid}.{name}": float(v) for name, v in metrics.items()})
    return flat


def compare(
    committed: dict[str, float], retrained: dict[str, float], tolerance: float
) -> list[str]:
    """The metrics that moved by more than ``tolerance`` (empty when the retrain reproduces)."""
    return [
        f"{k}: committed {committed[k]:.3f}, retrained {retrained.get(k, float('nan')):.3f}"
        for k in committed
        if not abs(committed[k] - retrained.get(k, float("inf"))) <= tolerance + 1e-9
    ]


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(evaluate.DEFAULT_MODEL), help="committed model")
    parser.add_argument("--policy", default=str(evaluate.DEFAULT_POLICY))
    parser.add_argument("-n", type=int, default=1000, help="held-out images per measurement")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--out", help="keep the retrained model here (default: a temp folder)")
    args = parser.parse_args(argv)

    committed_dir = Path(args.model)
    info = json.loads((committed_dir / "training.json").read_text())
    hp = {k: v for k, v in info["hyperparameters"].items() if k != "steps"}
    with tempfile.TemporaryDirectory(prefix="clipmod-retrain-") as tmp:
        out = Path(args.out or tmp)
        train.train(out, seed=info["seed"], steps=info["steps"], **hp)
        committed = flatten(evaluate.evaluate(committed_dir, args.policy, n=args.n))
        retrained = flatten(evaluate.evaluate(out, args.policy, n=args.n))
        same = _digest(out) == _digest(committed_dir)

    print(f"{'metric':<22} {'committed':>9} {'retrained':>9}")
    for k, v in committed.items():
        print(f"{k:<22} {v:>9.3f} {retrained[k]:>9.3f}")
    print(f"weights bit-identical: {'yes' if same else 'no'}")
    moved = compare(committed, retrained, args.tolerance)
    if moved:
        print(f"NOT reproduced (tolerance {args.tolerance}):", *moved, sep="\n  ", file=sys.stderr)
        return 1
    print(f"reproduced within {args.tolerance}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
