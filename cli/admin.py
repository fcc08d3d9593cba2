"""`clipmod db …` and `clipmod keys …`: the schema and the tenants' API keys.

A key's secret is printed once, as the last line of `keys create` / `keys rotate` (so scripts
can take `tail -1`); `keys list` shows prefixes, never secrets.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import database, guarded, load_settings, print_json
from clipmod.settings import Settings


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@guarded
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from clipmod import migrate

    settings = load_settings()
    migrate.upgrade(settings, args.revision)
    print(f"database at {args.revision}: {_redact(settings.database_url)}")
    return 0


def create_key(
    settings: Settings,
    tenant: str,
    label: str,
    *,
    admin: bool = False,
    scopes: list[str] | None = None,
) -> str:
    from clipmod import keys

    with database(settings) as session:
        return keys.create_key(session, tenant, label, admin=admin, scopes=scopes)


@guarded
def cmd_keys_create(args: argparse.Namespace) -> int:
    key = create_key(load_settings(), args.tenant, args.label, admin=args.admin, scopes=args.scope)
    kind = "an admin API key" if args.admin else "an API key"
    print(f"created {kind} for tenant {args.tenant!r}; it is shown only once:", file=sys.stderr)
    print(key)
    return 0


@guarded
def cmd_keys_list(args: argparse.Namespace) -> int:
    from clipmod import keys

    with database(load_settings()) as session:
        rows = [keys.describe(r) for r in keys.list_keys(session, args.tenant)]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'prefix':<14} {'tenant':<16} {'state':<8} {'admin':<6} scopes / label")
    for r in rows:
        state = "active" if r["active"] else "revoked"
        admin = "yes" if r["admin"] else ""
        print(
            f"{r['prefix']:<14} {r['tenant']:<16} {state:<8} {admin:<6} "
            f"{','.join(r['scopes'])} {r['label']}"
        )
    return 0


@guarded
def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from clipmod import keys

    with database(load_settings()) as session:
        row = keys.revoke(session, args.prefix)
        print(f"revoked key {row.prefix} of tenant {row.tenant.name!r}", file=sys.stderr)
    return 0


@guarded
def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from clipmod import keys

    with database(load_settings()) as session:
        rotated = keys.rotate(session, args.prefix, args.grace)
        when = f"in {args.grace:g} s" if args.grace else "now"
        print(
            f"replaced key {rotated.old.prefix} (it stops working {when}); the new key is "
            "shown only once:",
            file=sys.stderr,
        )
        print(rotated.key)
    return 0


def register(sub: Any) -> None:
    from clipmod.keys import SCOPES

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    upgrade = db.add_parser("upgrade", help="apply migrations (the only way the schema is made)")
    upgrade.add_argument(
        "revision", nargs="?", default="head", help="Alembic revision to reach (default: head)"
    )
    upgrade.set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    create = keys.add_parser("create", help="create a tenant's API key; prints it last")
    create.add_argument(
        "--tenant", required=True, help="tenant name (created if new); its items are its own"
    )
    create.add_argument("--label", default="", help="a note to recognise the key by later")
    create.add_argument(
        "--admin", action="store_true", help="may also manage policies, keys and tenants"
    )
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="what the key may do (repeat; default: every scope)",
    )
    create.set_defaults(func=cmd_keys_create)

    listing = keys.add_parser("list", help="keys and their state (never their secrets)")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_keys_list)

    revoke = keys.add_parser("revoke", help="refuse a key from the next request on")
    revoke.add_argument("prefix", help="the key's prefix (from `keys list`)")
    revoke.set_defaults(func=cmd_keys_revoke)

    rotate = keys.add_parser("rotate", help="replace a key (same tenant, scopes); prints it last")
    rotate.add_argument("prefix", help="the key's prefix (from `keys list`)")
    rotate.add_argument(
        "--grace", type=float, default=0, help="seconds the old key keeps working (default 0)"
    )
    rotate.set_defaults(func=cmd_keys_rotate)
