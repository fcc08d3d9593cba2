"""The `clipmod` command: one entry point for every role and tool.

Roles by configuration (after HMA): `serve` runs the API, `worker` a scoring worker, `up` both
plus migrations, for a laptop. Heavy imports happen inside each command, so `clipmod --help`
is instant and no command pays for a part it does not use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from clipmod import settings as settings_mod
from clipmod.settings import Settings

DEV_KEY_FILE = "dev-api-key"
DEFAULT_URL = "http://127.0.0.1:8000"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _settings() -> Settings:
    try:
        return settings_mod.load()
    except settings_mod.SettingsError as exc:
        sys.exit(f"clipmod: {exc}")


# -- database and keys ------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from clipmod import migrate

    settings = _settings()
    migrate.upgrade(settings, args.revision)
    print(f"database at {args.revision}: {_redact(settings.database_url)}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _create_key(settings: Settings, tenant: str, label: str) -> str:
    from clipmod import keys
    from clipmod.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return keys.create_key(session, tenant, label)
    finally:
        engine.dispose()


def cmd_keys_create(args: argparse.Namespace) -> int:
    key = _create_key(_settings(), args.tenant, args.label)
    print(f"created an API key for tenant {args.tenant!r}; it is shown only once:", file=sys.stderr)
    print(key)
    return 0


# -- running ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from waitress import serve

    from api import create_app

    settings = _settings()
    _setup_logging(settings.log_level)
    app = create_app(settings)
    print(f"clipmod API on http://{args.host}:{args.port}", flush=True)
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="clipmod")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers import service

    settings = _settings()
    _setup_logging(settings.log_level)
    service.run(settings, health_port=args.health_port, loglevel=settings.log_level.upper())
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    """Fail before the slow model load, not after it."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise SystemExit(
                f"clipmod: {host}:{port} is in use; pick another with --port"
            ) from None


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"clipmod: the worker exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"clipmod: the worker was not ready after {timeout:.0f} s")


def cmd_up(args: argparse.Namespace) -> int:
    """Migrations, a worker subprocess, then the API in this process, on the embedded default."""
    from clipmod import migrate

    settings = _settings()
    _check_port_free(args.host, args.port)
    migrate.upgrade(settings)
    from clipmod.queue import make_celery, prepare_broker

    prepare_broker(make_celery(settings))
    health_port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "clipmod.cli", "worker", "--health-port", str(health_port)],
        env=os.environ.copy(),
    )

    def _stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind through `finally`, which stops the worker

    signal.signal(signal.SIGTERM, _stop)
    try:
        print("starting the worker (loading the model)…", file=sys.stderr, flush=True)
        _wait_ready(f"http://127.0.0.1:{health_port}/readyz", worker, args.ready_timeout)
        key = _create_key(settings, args.tenant, "dev key (clipmod up)")
        key_file = settings.data_dir / DEV_KEY_FILE
        key_file.write_text(key + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        url = f"http://{args.host}:{args.port}"
        print(
            f"\nclipmod is up at {url}\n"
            f"  dev API key (tenant {args.tenant!r}, also in {key_file}):\n    {key}\n"
            f"  try:\n"
            f"    curl -s -H 'Authorization: Bearer {key}' -F file=@samples/red-knife.png "
            f"{url}/v1/items\n"
            f"    clipmod submit --url {url} --wait samples/*.png\n",
            flush=True,
        )
        args.threads = 8
        return cmd_serve(args)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


# -- client -------------------------------------------------------------------------------------


def _api(url: str, key: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except urllib.error.URLError as exc:
        raise SystemExit(
            f"clipmod: cannot reach {url}: {exc.reason} (is `clipmod up` running?)"
        ) from None


def _client_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("CLIPMOD_API_KEY")
    if not key:
        key_file = _settings().data_dir / DEV_KEY_FILE
        if key_file.exists():
            key = key_file.read_text(encoding="utf-8").strip()
    if not key:
        sys.exit("clipmod: no API key: pass --key, set CLIPMOD_API_KEY, or run `clipmod up` first")
    return key


def _summary(path: str, item: dict[str, Any]) -> str:
    verdict = item.get("verdict")
    if verdict is None:
        err = item.get("error") or {}
        return f"{path}: {item['status']} {err.get('code', '')} {err.get('message', '')}".rstrip()
    cats = ", ".join(
        f"{c['id']}={c['score']:.3f}{'!' if c['action'] != 'allow' else ''}"
        for c in verdict["categories"]
    )
    policy = verdict["policy"]
    return f"{path}: {verdict['action'].upper()}  [{cats}]  ({policy['name']}@{policy['version']})"


def cmd_submit(args: argparse.Namespace) -> int:
    import base64

    key = _client_key(args)
    base = args.url.rstrip("/")
    pending: dict[str, str] = {}
    failures = 0
    for path in args.paths:
        body: dict[str, Any] = {"external_id": args.prefix + Path(path).name} if args.prefix else {}
        if args.text:
            body["text"] = Path(path).read_text(encoding="utf-8")
        else:
            body["image_base64"] = base64.b64encode(Path(path).read_bytes()).decode()
        status, reply = _api(f"{base}/v1/items", key, "POST", body)
        if status not in (200, 202):
            err = reply.get("error", {})
            print(f"{path}: HTTP {status} {err.get('code')}: {err.get('message')}")
            failures += 1
            continue
        pending[reply["id"]] = path
        if not args.wait:
            print(f"{path}: {reply['status']} {reply['id']}")
    deadline = time.monotonic() + args.timeout
    while args.wait and pending and time.monotonic() < deadline:
        for item_id, path in list(pending.items()):
            _, item = _api(f"{base}/v1/items/{item_id}", key)
            if item.get("status") in ("scored", "failed"):
                print(_summary(path, item), flush=True)
                failures += item["status"] == "failed"
                del pending[item_id]
        time.sleep(0.2)
    for path in pending.values() if args.wait else ():
        print(f"{path}: still not scored after {args.timeout:.0f} s")
        failures += 1
    return 1 if failures else 0


# -- evaluation ---------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from clipmod.demo import evaluate

    argv = ["--json"] if args.json else []
    return int(evaluate.main(argv) or 0)


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipmod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    up_db = db.add_parser("upgrade", help="apply migrations (the only way the schema is made)")
    up_db.add_argument("revision", nargs="?", default="head")
    up_db.set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    create = keys.add_parser("create", help="create a tenant's API key; prints it last")
    create.add_argument("--tenant", required=True)
    create.add_argument("--label", default="")
    create.set_defaults(func=cmd_keys_create)

    def add_http(p: argparse.ArgumentParser, port: int) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=port)

    serve = sub.add_parser("serve", help="run the intake API")
    add_http(serve, 8000)
    serve.add_argument("--threads", type=int, default=8)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a scoring worker")
    worker.add_argument(
        "--health-port", type=int, default=None, help="serve /healthz and /readyz on this port"
    )
    worker.set_defaults(func=cmd_worker)

    up = sub.add_parser("up", help="migrations + worker + API on the embedded default")
    add_http(up, 8000)
    up.add_argument("--tenant", default="dev")
    up.add_argument("--ready-timeout", type=float, default=300)
    up.set_defaults(func=cmd_up)

    submit = sub.add_parser("submit", help="upload files and print their verdicts")
    submit.add_argument("paths", nargs="+")
    submit.add_argument("--url", default=os.environ.get("CLIPMOD_API_URL", DEFAULT_URL))
    submit.add_argument("--key", default=None)
    submit.add_argument("--wait", action="store_true", help="wait for and print verdicts")
    submit.add_argument("--timeout", type=float, default=60)
    submit.add_argument("--text", action="store_true", help="send the files' contents as text")
    submit.add_argument("--prefix", default="", help="use PREFIX+filename as external_id")
    submit.set_defaults(func=cmd_submit)

    ev = sub.add_parser("eval", help="evaluate the bundled demo model and policy")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)
    from clipmod.policy import commands as policy_commands

    policy_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if _bundled_only():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def _bundled_only() -> bool:
    """Skip hub look-ups when the model is a local folder: they only time out here."""
    model = os.environ.get("CLIPMOD_MODEL")
    return model is None or Path(model).exists()


if __name__ == "__main__":
    sys.exit(main())
