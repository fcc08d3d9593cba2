"""`clipmod tenants …`: a tenant's callback URL, rate limit and signing secrets.

A signing secret is printed once, as the last line, when it is created; `tenants show` lists
secrets by id and first characters only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import database, guarded, load_settings, print_json


@guarded
def cmd_show(args: argparse.Namespace) -> int:
    from clipmod import keys, tenants

    with database(load_settings()) as session:
        print_json(tenants.tenant_json(session, keys.get_tenant(session, args.tenant)))
    return 0


def _print_secret(new: Any, what: str) -> None:
    print(f"created {what} signing secret {new.row.id}; it is shown only once:", file=sys.stderr)
    print(new.secret)


@guarded
def cmd_set(args: argparse.Namespace) -> int:
    from clipmod import keys, netguard, secretbox, tenants

    settings = load_settings()
    with database(settings) as session:
        tenant = keys.get_or_create_tenant(session, args.tenant)
        if args.rate_limit is not None:
            tenants.set_rate_limit(session, tenant, args.rate_limit or None)
        if args.callback_url is not None:
            policy = netguard.AddressPolicy.parse(settings.fetch_allow)
            box = secretbox.load(settings)
            new = tenants.set_callback(session, box, tenant, args.callback_url or None, policy)
            if new is not None:
                _print_secret(new, "a callback")
    return 0


@guarded
def cmd_secret(args: argparse.Namespace) -> int:
    from clipmod import keys, secretbox, tenants
    from clipmod.models import SecretPurpose

    settings = load_settings()
    purpose = SecretPurpose(args.purpose)
    with database(settings) as session:
        tenant = keys.get_or_create_tenant(session, args.tenant)
        box = secretbox.load(settings)
        if args.rotate:
            new = tenants.rotate_secret(session, box, tenant.id, purpose, args.grace)
        else:
            new = tenants.create_secret(session, box, tenant.id, purpose)
        _print_secret(new, f"a {purpose}")
    return 0


@guarded
def cmd_revoke_secret(args: argparse.Namespace) -> int:
    from clipmod import keys, tenants

    with database(load_settings()) as session:
        tenant = keys.get_tenant(session, args.tenant)
        tenants.revoke_secret(session, tenant.id, args.secret_id)
        print(f"revoked signing secret {args.secret_id}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("tenants", help="callback URL, rate limit and signing secrets")
    cmds = group.add_subparsers(dest="tenants_cmd", required=True)

    show = cmds.add_parser("show", help="a tenant's settings (secrets by id and hint only)")
    show.add_argument("tenant")
    show.set_defaults(func=cmd_show)

    setp = cmds.add_parser("set", help="set the callback URL and/or the rate limit")
    setp.add_argument("tenant")
    setp.add_argument("--callback-url", default=None, help='"" turns callbacks off')
    setp.add_argument(
        "--rate-limit", default=None, help='e.g. "100/minute;2000/hour"; "" uses the default'
    )
    setp.set_defaults(func=cmd_set)

    secret = cmds.add_parser("secret", help="create a signing secret; prints it last")
    secret.add_argument("tenant")
    secret.add_argument("--purpose", choices=("webhook", "callback"), required=True)
    secret.add_argument(
        "--rotate", action="store_true", help="end the older active secrets after --grace"
    )
    secret.add_argument(
        "--grace", type=float, default=86400, help="seconds both stay valid (default 1 day)"
    )
    secret.set_defaults(func=cmd_secret)

    revoke = cmds.add_parser("revoke-secret", help="stop accepting/signing with a secret")
    revoke.add_argument("tenant")
    revoke.add_argument("secret_id")
    revoke.set_defaults(func=cmd_revoke_secret)
