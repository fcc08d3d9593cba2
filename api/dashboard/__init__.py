"""The moderator review dashboard, served under /dashboard by the API app.

`init_app` is one step of the app factory: it configures sessions, CSRF and sign-in, and
registers the blueprint whose views live in the modules imported below.
"""

from __future__ import annotations

from flask import Flask

from api.dashboard import (
    auditlog,
    auth,
    backtests,
    banking,
    editor,
    failures,
    media,
    policies,
    searching,
    views,
)
from api.dashboard.shell import add_nav, admin_required, bp, configure, me
from clipmod.settings import Settings

# The view modules register their routes on `bp` when imported.
__all__ = [
    "add_nav",
    "admin_required",
    "auditlog",
    "auth",
    "backtests",
    "banking",
    "bp",
    "editor",
    "failures",
    "init_app",
    "me",
    "media",
    "policies",
    "searching",
    "views",
]


def init_app(app: Flask, settings: Settings) -> None:
    configure(app, settings)
    app.register_blueprint(bp)
