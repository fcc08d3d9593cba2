"""`clipmod users …`: the people who sign in to the review dashboard.

The password is never an argument (it would land in shell history and `ps`): it is prompted
for twice on a terminal, or read from the first line of stdin when piped, e.g.
`printf '%s\\n' "$PASSWORD" | clipmod users create a@b.c --role admin`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from cli.common import database, guarded, load_settings


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("clipmod: the two passwords differ; nothing was created")
    return first


@guarded
def cmd_users_create(args: argparse.Namespace) -> int:
    from clipmod.review import users

    password = read_password()
    with database(load_settings()) as session:
        user = users.create_user(session, args.email, password, args.role, args.tenant or [])
        tenants = ", ".join(sorted(t.name for t in user.tenants)) or "every tenant"
        print(f"created {user.role.value} {user.email} ({tenants})")
    return 0


@guarded
def cmd_users_list(_args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from clipmod.models import User

    with database(load_settings()) as session:
        for user in session.scalars(select(User).order_by(User.email)):
            tenants = ",".join(sorted(t.name for t in user.tenants)) or "*"
            state = "locked" if user.locked_until else ("active" if user.active else "disabled")
            print(f"{user.email}\t{user.role.value}\t{tenants}\t{state}")
    return 0


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="dashboard users (people, not API keys)")
    cmds = users.add_subparsers(dest="users_cmd", required=True)
    create = cmds.add_parser(
        "create", help="create a dashboard user; the password is prompted for (or read from stdin)"
    )
    create.add_argument("email")
    create.add_argument("--role", choices=("moderator", "admin"), required=True)
    create.add_argument(
        "--tenant",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="tenants this moderator reviews (`--tenant a b` or repeated; admins see every tenant)",
    )
    create.set_defaults(func=cmd_users_create)
    listing = cmds.add_parser("list", help="list dashboard users (never their passwords)")
    listing.set_defaults(func=cmd_users_list)
