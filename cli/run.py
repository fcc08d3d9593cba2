"""`clipmod serve | worker | up`: the roles one code base runs (after HMA's role flags).

`serve` is an API replica, `worker` a scoring worker (one per GPU), `up` both plus migrations on
the embedded default, for a laptop: the worker is a child process, supervised by
`cli.supervise`, and the API runs in this process.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from cli.admin import create_key
from cli.common import load_settings, setup_logging
from cli.supervise import WorkerFailed, WorkerProcess, settings_env

if TYPE_CHECKING:
    from clipmod.settings import Settings

DEV_KEY_FILE = "dev-api-key"


def cmd_serve(args: argparse.Namespace) -> int:
    return _serve(args, load_settings(), f"clipmod API on http://{args.host}:{args.port}")


def _serve(args: argparse.Namespace, settings: Settings, banner: str) -> int:
    """The API in this process; `banner` is printed once the port is bound, so whoever reads
    it (a person about to paste the curl it shows, a script) can connect at once."""
    from api import create_app
    from api.server import create

    setup_logging(settings.log_level, settings.log_format, settings.log_flush_s)
    server = create(create_app(settings), settings, args.host, args.port, args.threads)
    print(banner, flush=True)
    server.run()  # until SIGINT/SIGTERM-as-SystemExit: waitress shuts its threads down
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    level = settings.log_level.upper()
    if args.role == "deliver":
        from workers import delivery

        delivery.run(settings, health_port=args.health_port, loglevel=level)
    else:
        from workers import service

        service.run(settings, health_port=args.health_port, loglevel=level)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail before the slow model load, not after it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise SystemExit(
                f"clipmod: {host}:{port} is in use; pick another with --port"
            ) from None


def cmd_up(args: argparse.Namespace) -> int:
    """Migrations, a scoring worker and a delivery worker (subprocesses), then the API in this
    process, on the embedded default."""
    from clipmod import migrate
    from clipmod.queue import make_celery, prepare_broker

    settings = load_settings()
    _check_port_free(args.host, args.port)
    migrate.upgrade(settings)
    prepare_broker(make_celery(settings))
    worker = WorkerProcess.start(settings_env(settings))
    deliverer = WorkerProcess.start(settings_env(settings), role="deliver")

    def _stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwind through `finally`, which stops the worker

    signal.signal(signal.SIGTERM, _stop)
    try:
        print("starting the worker (loading the model)…", file=sys.stderr, flush=True)
        try:
            deliverer.wait_ready(args.ready_timeout)
            worker.wait_ready(args.ready_timeout)
        except WorkerFailed as exc:
            raise SystemExit(f"clipmod: {exc}") from None
        key = create_key(settings, args.tenant, "dev key (clipmod up)")
        key_file = settings.data_dir / DEV_KEY_FILE
        key_file.write_text(key + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        url = f"http://{args.host}:{args.port}"
        banner = (
            f"\nclipmod is up at {url}\n"
            f"  dev API key (tenant {args.tenant!r}, also in {key_file}):\n    {key}\n"
            f"  try:\n"
            f"    KEY=$(cat {key_file})\n"
            f'    curl -s -H "Authorization: Bearer $KEY" -F file=@samples/red-knife.png '
            f"{url}/v1/items\n"
            f"    clipmod submit --url {url} --wait samples/*.png\n"
            f"  review dashboard: {url}/dashboard "
            f"(first: clipmod users create EMAIL --role admin)\n"
        )
        args.threads = 8
        return _serve(args, settings, banner)
    finally:
        worker.stop()
        deliverer.stop()


def register(sub: Any) -> None:
    def add_http(p: argparse.ArgumentParser, port: int) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to listen on")
        p.add_argument("--port", type=int, default=port, help=f"port (default {port})")

    serve = sub.add_parser("serve", help="run the intake API")
    add_http(serve, 8000)
    serve.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a scoring (or callback delivery) worker")
    worker.add_argument(
        "--health-port", type=int, default=None, help="serve /healthz and /readyz on this port"
    )
    worker.add_argument(
        "--role",
        choices=("score", "deliver"),
        default="score",
        help="score: the model and the scoring queue (default); deliver: signed callbacks "
        "and the retention purge, no model",
    )
    worker.set_defaults(func=cmd_worker)

    up = sub.add_parser("up", help="migrations + worker + API on the embedded default")
    add_http(up, 8000)
    up.add_argument("--tenant", default="dev", help="tenant of the printed dev key")
    up.add_argument(
        "--ready-timeout",
        type=float,
        default=300,
        help="seconds to wait for the worker to load the model (default 300)",
    )
    up.set_defaults(func=cmd_up)
