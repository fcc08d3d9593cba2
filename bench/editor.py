"""Benchmark: the policy editor's server side on 100,000 stored items, through HTTP.

Not a test: it prints numbers. On `bench.backtest`'s synthetic database (built on first use),
an admin signs in to the real app (Flask's test client: no network, everything else real) and
times what the editor's page waits for:

- `check`: the live validation of the demo policy (parse + lint, with lint's threshold checks
  over every stored item), the first time (stored traffic read) and then as while typing;
- `backtest`: the "Run backtest" button, from the POST to the finished report, for the last
  100k items of every tenant and for one tenant, polling as the page does.

    .venv/bin/python -m bench.editor [--items 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from api import create_app
from api.policies import RUNTIME_KEY
from bench.backtest import StubEncoder, build
from clipmod import migrate
from clipmod import settings as settings_mod
from clipmod.db import transaction
from clipmod.models import Role, User
from clipmod.review import users

EMAIL, PASSWORD = "bench@example.com", "bench password 1"


class StubRuntime(StubEncoder):
    """`bench.backtest`'s seeded prompt encoder, with what lint also asks of a model."""

    display_name = "clipmod-demo-clip"

    def text_windows(self, text: str) -> list[list[int]]:
        return [[0, *range(1, len(text.split()) + 1), 0]]


def _token(client: FlaskClient, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    start = html.index('name="csrf-token" content="') + len('name="csrf-token" content="')
    return html[start : html.index('"', start)]


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    walls, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - started)
    return walls, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(".bench") / "backtest")
    args = parser.parse_args(argv)
    path = args.dir / f"{args.items}x{args.dim}"
    if not (path / "clipmod.db").exists():
        build(path, args.items, args.dim)
    settings = settings_mod.load({"CLIPMOD_DATA_DIR": str(path), "CLIPMOD_BLUR_AT": "0.5"})
    migrate.upgrade(settings)  # a database built by an older checkout lacks newer tables
    app = create_app(settings)
    app.extensions[RUNTIME_KEY] = StubRuntime(args.dim)
    sessions = app.extensions["clipmod"].sessions
    with transaction(sessions) as session:
        if session.scalar(select(User).where(User.email == EMAIL)) is None:
            users.create_user(session, EMAIL, PASSWORD, Role.ADMIN, ())
    client = app.test_client()
    token = _token(client, "/dashboard/login")
    client.post(
        "/dashboard/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token}
    )
    token = _token(client, "/dashboard/policies")
    draft_url = client.post("/dashboard/policies/drafts", data={"csrf_token": token}).headers[
        "Location"
    ]
    text = settings_mod.BUNDLED_POLICY.read_text(encoding="utf-8")
    headers = {"X-CSRFToken": token, "X-Requested-With": "fetch"}

    def check() -> Any:
        resp = client.post(draft_url + "/check", json={"yaml": text}, headers=headers)
        assert resp.status_code == 200, resp.json
        return resp.json

    first, _ = _timed(check, 1)
    warm, said = _timed(check, args.repeat)
    print(
        f"check (parse + lint incl. traffic checks over {args.items:,} items): first "
        f"{first[0]:.3f} s (reads the stored traffic), then median {statistics.median(warm):.3f} s"
        f" ({said['errors']} errors, {said['warnings']} warnings)"
    )
    draft = text.replace("block_at: 0.76", "block_at: 0.7")
    for label, extra in (("all tenants", {}), ("one tenant", {"tenant": "acme"})):

        def run(extra: dict[str, Any] = extra) -> Any:
            body = {"yaml": draft, "last": args.items, **extra}
            state = client.post("/dashboard/policies/backtest", json=body, headers=headers).json
            polls = 0
            while state["status"] == "running":
                polls += 1
                state = client.get(state["poll"], headers=headers).json
            assert state["status"] == "done", state
            return state["result"], polls

        walls, (result, polls) = _timed(run, args.repeat)
        print(
            f"backtest button, {label}: {result['items']:,} items, median "
            f"{statistics.median(walls):.3f} s, best {min(walls):.3f} s from click to report "
            f"(server {result['elapsed_s']:.3f} s; {polls} polls)"
        )
    app.extensions["clipmod"].engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
