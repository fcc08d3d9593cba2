"""`clipmod traffic …`: the analytics store of stored embeddings (`clipmod.traffic`).

Readers (backtest, lint, suggest, search, bank backtests) sync the store themselves before
reading, so these commands are for operators: `rebuild` after restoring a database, to reclaim
a store in doubt, or to drop the bytes of deleted items (tombstoned rows stay in the files until
then; `status` counts them as `deleted`), `verify` to check every checksum and compare with
SQL, `sync` and `status` to see where it stands. The revision is the loaded model's unless
`--revision` names one (then no model is loaded). Exit status: 0 success; 1 `verify` found
problems (and, without `--no-repair`, rebuilt the store); 2 a refused request.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import database, guarded, load_runtime, load_settings, print_json


def _store(args: argparse.Namespace) -> Any:
    from clipmod.traffic.sync import TrafficStore

    settings = load_settings()
    revision = args.revision or load_runtime(settings).revision
    return settings, TrafficStore(settings.traffic_dir, revision)


def _progress(desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(desc=desc, unit="item", file=sys.stderr, leave=False, disable=None)


@guarded
def cmd_sync(args: argparse.Namespace) -> int:
    settings, store = _store(args)
    with database(settings) as session, _progress("sync") as bar:
        report = store.sync(session, bar.update)
    print_json(report.to_dict()) if args.json else print(_line(report))
    return 0


@guarded
def cmd_rebuild(args: argparse.Namespace) -> int:
    settings, store = _store(args)
    with database(settings) as session, _progress("rebuild") as bar:
        report = store.rebuild(session, reason="clipmod traffic rebuild", progress=bar.update)
    print_json(report.to_dict()) if args.json else print(_line(report))
    return 0


@guarded
def cmd_verify(args: argparse.Namespace) -> int:
    settings, store = _store(args)
    with database(settings) as session:
        problems = store.verify(session)
        repaired = None
        if problems and not args.no_repair:
            repaired = store.rebuild(session, reason="; ".join(problems)).to_dict()
    if args.json:
        print_json({"problems": problems, "rebuilt": repaired})
    else:
        for problem in problems:
            print(f"problem: {problem}")
        print("rebuilt from SQL" if repaired else "ok" if not problems else "not repaired")
    return 1 if problems else 0


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    _, store = _store(args)
    body = store.status()
    if args.json:
        print_json(body)
    else:
        for key, value in body.items():
            print(f"{key:<12} {value}")
    return 0


def _line(report: Any) -> str:
    if report.rebuilt:
        what = f"rebuilt ({report.reason})"
    else:
        what = f"appended {report.appended}, deleted {report.deleted}"
    return f"{what}: {report.items} items in the store, {report.seconds:.1f} s"


def register(subparsers: Any) -> None:
    """Add `traffic` and its subcommands to the `clipmod` parser."""
    traffic = subparsers.add_parser("traffic", help="the analytics store of stored embeddings")
    sub = traffic.add_subparsers(dest="traffic_cmd", required=True)
    for name, func, text in (
        ("sync", cmd_sync, "append embeddings stored since the last sync"),
        ("rebuild", cmd_rebuild, "write the store afresh from SQL"),
        ("verify", cmd_verify, "check every checksum and compare with SQL; rebuild if wrong"),
        ("status", cmd_status, "where the store stands"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--revision", default=None, help="model revision (default: the model's)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "verify":
            p.add_argument("--no-repair", action="store_true", help="report only, never rebuild")
        p.set_defaults(func=func)
