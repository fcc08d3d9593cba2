"""`clipmod banks …`: create banks, add and remove entries, inspect versions, backtest a change.

Every change is a new immutable bank version (`clipmod.banks.registry`); workers pick it up
within `CLIPMOD_POLICY_REFRESH_S`. Adding uploaded images and backtesting load the workers'
model (`CLIPMOD_MODEL`) to embed images and prompts; everything else is database work only.
Exit status: 0 success; 2 a refused request, printed as `clipmod: code: message`.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import Any

from cli.common import database, guarded, load_runtime, load_settings, print_json


def _author(args: argparse.Namespace) -> str:
    return args.author or f"cli:{getpass.getuser()}"


def _ref(text: str) -> tuple[str, int | None]:
    name, _, version = text.partition("@")
    if version and not version.isdigit():
        raise argparse.ArgumentTypeError(f"not NAME or NAME@N: {text!r}")
    return name, int(version) if version else None


@guarded
def cmd_create(args: argparse.Namespace) -> int:
    from clipmod.banks import registry, views

    settings = load_settings()
    revision, dim = args.revision, args.dim
    if revision is None:
        runtime = load_runtime(settings)
        revision, dim = runtime.revision, runtime.dim
    elif dim is None:
        from clipmod.errors import InvalidInput

        raise InvalidInput("--revision needs --dim: the bank's embedding size")
    with database(settings) as session:
        bank = registry.create_bank(
            session,
            args.name,
            args.kind,
            model_revision=revision,
            dim=dim,
            author=_author(args),
            description=args.description,
        )
        body = views.bank_json(session, bank)
    if args.json:
        print_json(body)
    else:
        print(f"created {args.kind} bank {args.name} for model revision {revision} (no entries)")
    return 0


@guarded
def cmd_add(args: argparse.Namespace) -> int:
    from clipmod import images
    from clipmod.banks import registry, views
    from clipmod.banks.uploads import embed_uploads, ensure_stored
    from clipmod.storage import BlobStore

    settings = load_settings()
    blobs = BlobStore(settings.blob_dir)
    uploads = [(Path(f).name, Path(f).read_bytes()) for f in args.files]
    uploaded = []
    if uploads:
        uploaded = embed_uploads(
            load_runtime(settings),
            uploads,
            limits=images.ImageLimits.from_settings(settings),
            max_bytes=settings.max_upload_bytes,
            blobs=blobs,
        )
    with database(settings) as session:
        bank = registry.get_bank(session, args.name, lock=True)
        new = registry.from_items(session, bank, args.item or []) + uploaded
        change = registry.add_entries(session, bank, new, author=_author(args), note=args.note)
        body = views.change_json(bank, change)
    ensure_stored(blobs, uploads, uploaded)
    if args.json:
        print_json(body)
    else:
        print(f"{body['label']}: added entries {body['added'] or 'none'}; {body['entries']} in all")
        for key in body["skipped"]:
            print(f"  skipped {key}: already in the bank")
    return 0


@guarded
def cmd_remove(args: argparse.Namespace) -> int:
    from clipmod.banks import registry, views

    with database(load_settings()) as session:
        bank = registry.get_bank(session, args.name, lock=True)
        change = registry.remove_entries(
            session, bank, args.entry, author=_author(args), note=args.note
        )
        body = views.change_json(bank, change)
    if args.json:
        print_json(body)
    else:
        print(f"{body['label']}: removed entries {body['removed']}; {body['entries']} left")
    return 0


@guarded
def cmd_list(args: argparse.Namespace) -> int:
    from clipmod.banks import registry, views

    with database(load_settings()) as session:
        rows = [views.bank_json(session, b) for b in registry.all_banks(session)]
    if args.json:
        print_json({"banks": rows})
        return 0
    for b in rows:
        print(
            f"{b['label']:<28} {b['kind']:<6} {b['entries']:>8} entries  "
            f"revision {b['model_revision']}  {b['description']}"
        )
    return 0


@guarded
def cmd_show(args: argparse.Namespace) -> int:
    from clipmod.banks import registry, views

    name, version = args.ref
    with database(load_settings()) as session:
        bank = registry.get_bank(session, name)
        body = views.bank_json(session, bank, history=True)
        entries = registry.entries(session, bank, version)
        body["shown_version"] = registry.resolve_version(session, bank, version)
        body["entry_list"] = [views.entry_json(e) for e in entries] if args.entries else None
    if args.json:
        print_json(body)
        return 0
    print(f"# {name}@{body['shown_version']} ({body['kind']}), revision {body['model_revision']}")
    for v in body["versions"]:
        print(
            f"  v{v['version']:<4} {v['entries']:>8} entries  +{v['added']} -{v['removed']}  "
            f"{v['author']}  {v['note']}"
        )
    for e in body["entry_list"] or []:
        print(f"  entry {e['id']}: {e['source']} {e['item_id'] or e['image_sha256']} {e['label']}")
    return 0


@guarded
def cmd_backtest(args: argparse.Namespace) -> int:
    from clipmod.banks import backtest, registry
    from clipmod.traffic.sync import TrafficStore

    settings = load_settings()
    runtime = load_runtime(settings)
    with database(settings) as session:
        bank = registry.get_bank(session, args.name)
        report = backtest.backtest_request(
            session,
            bank,
            runtime,
            from_version=args.from_,
            to_version=args.to,
            add_items=args.add_item or [],
            remove_entries=args.remove or [],
            threshold=args.threshold,
            store=TrafficStore(settings.traffic_dir, runtime.revision),
            examples=args.examples,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.render())
    return 0


def register(subparsers: Any) -> None:
    """Add `banks` and its subcommands to the `clipmod` parser."""
    banks = subparsers.add_parser("banks", help="embedding banks of known images")
    sub = banks.add_subparsers(dest="banks_cmd", required=True)

    def common(p: argparse.ArgumentParser, *, change: bool = False) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if change:
            p.add_argument("--author", default=None, help="recorded as who did it")
            p.add_argument("--note", default="", help="why: recorded on the new version")

    create = sub.add_parser("create", help="a new, empty bank")
    create.add_argument("name", help="lowercase letters, digits, '_' and '-'")
    create.add_argument(
        "--kind",
        required=True,
        choices=("block", "review", "allow"),
        help=("what a match does: block or review the item, or allow it (suppress prompt flags)"),
    )
    create.add_argument("--description", default="", help="what the bank holds")
    create.add_argument("--revision", default=None, help="model revision (default: the model's)")
    create.add_argument("--dim", type=int, default=None, help="embedding size, with --revision")
    create.add_argument("--author", default=None, help="recorded as who did it")
    create.add_argument("--json", action="store_true", help="machine-readable output")
    create.set_defaults(func=cmd_create)

    add = sub.add_parser("add", help="add stored items and/or image files: a new version")
    add.add_argument("name", help="the bank")
    add.add_argument("files", nargs="*", help="image files to embed and add")
    add.add_argument("--item", action="append", help="a stored item's id (repeatable)")
    common(add, change=True)
    add.set_defaults(func=cmd_add)

    remove = sub.add_parser("remove", help="remove entries by id: a new version")
    remove.add_argument("name", help="the bank")
    remove.add_argument("entry", type=int, nargs="+", help="entry ids (see `banks show`)")
    common(remove, change=True)
    remove.set_defaults(func=cmd_remove)

    lst = sub.add_parser("list", help="every bank with its newest version")
    common(lst)
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="a bank's versions (and entries)")
    show.add_argument("ref", type=_ref, help="NAME or NAME@N")
    show.add_argument("--entries", action="store_true", help="list the version's entries")
    common(show)
    show.set_defaults(func=cmd_show)

    bt = sub.add_parser("backtest", help="what a bank change newly matches / stops matching")
    bt.add_argument("name", help="the bank")
    bt.add_argument("--from", dest="from_", type=int, default=None, help="before (default: to-1)")
    bt.add_argument("--to", type=int, default=None, help="after (default: the newest)")
    bt.add_argument("--add-item", action="append", help="propose adding this item (repeatable)")
    bt.add_argument("--remove", type=int, action="append", default=[], help="propose removing")
    bt.add_argument("--threshold", type=float, default=None, help="default: the active policy's")
    bt.add_argument("--examples", type=int, default=5, help="example items per change")
    common(bt)
    bt.set_defaults(func=cmd_backtest)
