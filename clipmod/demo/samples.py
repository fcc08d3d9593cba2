"""Write the sample images in ``samples/`` and the README that states their expected verdicts.

The samples are picked from the world by content (the first val image holding exactly the wanted
objects in the wanted colours, shown in colour and without a rendered word), so regenerating them
is deterministic. A pair the world holds out from training is taken from the ``heldout`` split
instead, which makes some of the samples unseen combinations on purpose. Each verdict is what
the demo policy gives with the committed model, so the README is a prediction that the service
can be checked against end to end.

    python -m clipmod.demo.samples
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipmod.demo import world
from clipmod.demo.evaluate import DEFAULT_MODEL, DEFAULT_POLICY, load
from clipmod.policy.scoring import build_bank, decide

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "samples"
WANTED: tuple[tuple[tuple[str, str], ...], ...] = (
    (("knife", "red"),),
    (("gun", "black"),),
    (("pill", "white"),),
    (("syringe", "blue"),),
    (("skull", "white"),),
    (("splatter", "red"),),
    (("cup", "blue"),),
    (("flower", "yellow"),),
    (("cat", "orange"),),
    (("tree", "green"),),
    (("car", "red"),),
    (("heart", "pink"),),
    (("knife", "green"), ("cup", "pink")),
    (("star", "yellow"), ("heart", "red")),
)
_SEARCH = 20_000


def find(pairs: tuple[tuple[str, str], ...]) -> world.Sample:
    """The first colour image, by seed, holding exactly ``pairs`` in any order and no word."""
    held = [p in world.HELD_OUT_PAIRS for p in pairs]
    if any(held) and not all(held):
        raise ValueError(f"{pairs}: cannot mix held-out and trained pairs in one image")
    split = "heldout" if all(held) else "val"
    for seed in range(_SEARCH):
        s = world.render(seed, split, n_objects=len(pairs))
        if s.monochrome or s.word is not None:  # a "blue syringe" sample must look blue
            continue
        if sorted(zip(s.objects, s.colours, strict=True)) == sorted(pairs):
            return s
    raise LookupError(f"no {split} image with {pairs} in {_SEARCH} seeds")


def write_samples(
    out: Path = DEFAULT_OUT, model_dir: Path = DEFAULT_MODEL, policy_path: Path = DEFAULT_POLICY
) -> list[tuple[str, str, str | None]]:
    rt, policy = load(model_dir, policy_path)
    bank = build_bank(policy, rt.encode_texts, rt.logit_scale)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for pairs in WANTED:
        sample = find(pairs)
        name = "-and-".join(f"{c}-{o}" for o, c in pairs) + ".png"
        sample.image.save(out / name, optimize=True)
        outcome = decide(bank, [("image", rt.encode_images([sample.image]))], item_id=name)
        scores = {r.id: r.score for r in outcome.categories}
        acting = [r for r in outcome.categories if r.action == outcome.action != "allow"]
        category = max(acting, key=lambda r: r.score).id if acting else None
        held = " (held-out pair)" if pairs[0] in world.HELD_OUT_PAIRS else ""
        truth = sorted({c for o, _ in pairs if (c := world.category_of(o))})
        rows.append((name, outcome.action, category, held, scores, truth))
    lines = [
        "# Sample images",
        "",
        "Images from the generated demo world (`clipmod/demo/world.py`), 64x64 px, written by",
        "`python -m clipmod.demo.samples`. The verdict is what `policies/demo.yaml` gives with the",
        "bundled model `clipmod/assets/demo-clip`; an end-to-end run of the service with that",
        "policy should reproduce it. Scores are the policy's category scores (contrast mode);",
        '"truth" is the category the drawn objects belong to, so a wrong verdict shows.',
        "",
        "| file | content | truth | verdict | category | "
        + " | ".join(c.id for c in policy.categories)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(policy.categories),
    ]
    for name, action, category, held, scores, truth in rows:
        content = name.removesuffix(".png").replace("-and-", " and ").replace("-", " ") + held
        cells = " | ".join(f"{scores[c.id]:.2f}" for c in policy.categories)
        lines.append(
            f"| `{name}` | {content} | {', '.join(truth) or '-'} | **{action}** "
            f"| {category or '-'} | {cells} |"
        )
    (out / "README.md").write_text("\n".join(lines) + "\n")
    # The same verdicts, machine-readable: tests/e2e/test_cli.py checks the service against them.
    expected = {name: action for name, action, *_ in rows}
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return [(name, action, category) for name, action, category, *_ in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write samples/ from the demo world.")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--policy", default=str(DEFAULT_POLICY))
    args = parser.parse_args(argv)
    for name, action, category in write_samples(
        Path(args.out), Path(args.model), Path(args.policy)
    ):
        print(f"{name:<32} {action:<7} {category or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
