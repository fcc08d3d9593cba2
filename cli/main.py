"""The `clipmod` entry point: builds the parser from each group's `register` and dispatches.

Heavy imports happen inside each command, so `clipmod --help` is instant and no command pays for
a part it does not use.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli import admin, banks, blobs, client, items, policy, run, tenants, traffic, users


def cmd_eval(args: argparse.Namespace) -> int:
    from clipmod.demo import evaluate

    argv = ["--json"] if args.json else []
    if args.n is not None:
        argv += ["-n", str(args.n)]
    return int(evaluate.main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipmod", description="Content moderation on CLIP: API, workers and policy tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    admin.register(sub)
    tenants.register(sub)
    items.register(sub)
    run.register(sub)
    client.register(sub)
    ev = sub.add_parser("eval", help="evaluate the bundled demo model and policy")
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ev.add_argument("--n", type=int, default=None, help="held-out images to score")
    ev.set_defaults(func=cmd_eval)
    policy.register(sub)
    users.register(sub)
    banks.register(sub)
    traffic.register(sub)
    blobs.register(sub)
    return parser


def _bundled_only() -> bool:
    """Skip hub look-ups when the model is a local folder: they only time out here."""
    model = os.environ.get("CLIPMOD_MODEL")
    return model is None or Path(model).exists()


def main(argv: list[str] | None = None) -> int:
    if _bundled_only():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
