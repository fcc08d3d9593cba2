"""`clipmod items failed | retry`: what failed, and queueing it again after an incident.

`failed` counts failed items by error code (and lists the newest with `--list`); `retry` puts
them back in the queue (`clipmod.retry`). Without `--code` or an item id, `retry` takes the
transient codes only (a corrupt image fails again however often it is retried), and it shows
what it would do unless `--yes` is given.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import database, guarded, load_settings, print_json


def _filter(session: Any, args: argparse.Namespace, *, default_codes: bool) -> Any:
    from clipmod import keys, retry

    tenant_ids = None
    if args.tenant:
        tenant_ids = [keys.get_tenant(session, name).id for name in args.tenant]
    codes = args.code or (list(retry.TRANSIENT_CODES) if default_codes else None)
    return retry.FailedFilter(
        tenant_ids=tenant_ids,
        codes=None if getattr(args, "item", None) else codes,
        item_ids=getattr(args, "item", None) or None,
    )


@guarded
def cmd_failed(args: argparse.Namespace) -> int:
    from clipmod import retry
    from clipmod.views import iso

    with database(load_settings()) as session:
        which = _filter(session, args, default_codes=False)
        out: dict[str, Any] = {"by_code": retry.by_code(session, which)}
        if args.list:
            out["newest"] = [
                {
                    "id": item.id,
                    "external_id": item.external_id,
                    "tenant_id": item.tenant_id,
                    "code": item.error_code,
                    "message": item.error_message,
                    "failed_at": iso(item.updated_at),
                }
                for item in retry.newest(session, which, args.list)
            ]
    out["transient_codes"] = list(retry.TRANSIENT_CODES)
    print_json(out)
    return 0


@guarded
def cmd_retry(args: argparse.Namespace) -> int:
    from clipmod import retry
    from clipmod.queue import make_celery

    settings = load_settings()
    limit = min(args.limit or retry.MAX_RETRY, retry.MAX_RETRY)
    with database(settings) as session:
        which = _filter(session, args, default_codes=True)
        if not args.yes:
            counts = retry.by_code(session, which)
            total = sum(counts.values())
            print_json({"would_retry": min(total, limit), "by_code": counts})
            print("nothing changed: add --yes to queue them again", file=sys.stderr)
            return 0
        ids = retry.requeue(session, which, limit)
    woken = retry.wake(make_celery(settings), ids)
    print(f"queued {len(ids)} failed items again", file=sys.stderr)
    if ids and not woken:
        print(
            "the broker is unreachable: the reconciler will wake a worker for them",
            file=sys.stderr,
        )
    print_json({"retried": len(ids), "ids": ids if len(ids) <= 100 else ids[:100]})
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("items", help="failed items: count them, queue them again")
    cmds = group.add_subparsers(dest="items_cmd", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
        p.add_argument("--code", action="append", help="only this error code (repeatable)")

    failed = cmds.add_parser("failed", help="failed items by error code")
    filters(failed)
    failed.add_argument("--list", type=int, default=0, metavar="N", help="and the newest N")
    failed.set_defaults(func=cmd_failed)

    retry = cmds.add_parser(
        "retry", help="queue failed items again (default: the transient error codes)"
    )
    filters(retry)
    retry.add_argument("item", nargs="*", help="these item ids (any error code)")
    retry.add_argument("--limit", type=int, help="at most this many (default and most: 10,000)")
    retry.add_argument("--yes", action="store_true", help="do it (default: only show)")
    retry.set_defaults(func=cmd_retry)
