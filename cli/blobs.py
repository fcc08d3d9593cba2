"""`clipmod blobs sweep`: remove what the blob store holds and no row names (`clipmod.blobsweep`).

Delivery workers run the same sweep every `CLIPMOD_BLOB_SWEEP_EVERY_S`; the command is for an
operator who wants it now (after an incident that refused many uploads, or before an audit of
what is kept), or who wants to see first what it would remove (`--dry-run`). Exit status: 0
success; 2 a refused request (bad settings).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import guarded, load_settings, print_json


@guarded
def cmd_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clipmod import blobsweep
    from clipmod.db import make_engine, make_sessionmaker
    from clipmod.storage import BlobStore

    settings = load_settings()
    grace_s = settings.blob_sweep_grace_s if args.grace_s is None else args.grace_s
    engine = make_engine(settings.database_url)
    try:
        with tqdm(desc="sweep", unit="file", file=sys.stderr, leave=False, disable=None) as bar:
            report = blobsweep.sweep(
                make_sessionmaker(engine),
                BlobStore(settings.blob_dir),
                grace_s=grace_s,
                dry_run=args.dry_run,
                progress=bar.update,
            )
    finally:
        engine.dispose()
    print_json(report.to_dict()) if args.json else print(report.line())
    return 0


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds >= 0")
    return value


def register(subparsers: Any) -> None:
    """Add `blobs` and its subcommand to the `clipmod` parser."""
    blobs = subparsers.add_parser("blobs", help="the blob store of uploaded images")
    sub = blobs.add_subparsers(dest="blobs_cmd", required=True)
    p = sub.add_parser(
        "sweep", help="remove blobs no item or bank entry names, and unfinished writes"
    )
    p.add_argument(
        "--grace-s",
        type=_seconds,
        default=None,
        help="leave files younger than this alone (default: CLIPMOD_BLOB_SWEEP_GRACE_S, 3600)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sweep)
