"""`clipmod db …` and `clipmod keys …`: the schema and the tenants' API keys."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import database, guarded, load_settings
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


def create_key(settings: Settings, tenant: str, label: str, *, admin: bool = False) -> str:
    from clipmod import keys

    with database(settings) as session:
        return keys.create_key(session, tenant, label, admin=admin)


@guarded
def cmd_keys_create(args: argparse.Namespace) -> int:
    key = create_key(load_settings(), args.tenant, args.label, admin=args.admin)
    kind = "an admin API key" if args.admin else "an API key"
    print(f"created {kind} for tenant {args.tenant!r}; it is shown only once:", file=sys.stderr)
    print(key)
    return 0


def register(sub: Any) -> None:
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
        "--admin", action="store_true", help="may also use /v1/policies (publish, activate, …)"
    )
    create.set_defaults(func=cmd_keys_create)
