"""Intake speed against a bare endpoint, and upload → verdict latency at idle, as a client sees it.

1. **intake / bare**: one waitress server (`api.server.create`, as `clipmod serve` runs it) hosts
   the real app and, mounted at `/bare`, a bare Flask endpoint that reads the body and answers
   202 with a small JSON object. The same client (threads with keep-alive connections) sends
   the same multipart upload (a 224x224 JPEG, a fresh external_id each time) to both, in
   interleaved rounds (which kind goes first alternates), so both see the same machine state.
   Each upload's bytes differ (`unique`), as real uploads do, so each is a new blob to store.
   The ratio says what our intake costs above the HTTP server, Flask and the client
   themselves. Target ≥ 0.3. The headline pools all rounds; the median and range of the
   per-round ratios beside it show how far one run can be trusted (on our VMs ±0.03). The
   server's CPU and context switches per request come with it: in an 8-thread Python server
   each GIL hand-off between request threads is a few context switches, and their count is
   the steadiest figure when two code trees are compared. The time the file system takes to
   store one new blob is printed last: on a journal-less ext4 it swings with what was deleted
   in the minutes before (docs/benchmarks.md, "The file system").
2. **latency**: with a real `clipmod worker` running and idle, one upload at a time; the clock
   runs from sending the POST until a GET of the item (polled every 2 ms) shows its verdict.
   Target p50 ≤ 50 ms on Redis with the bundled model.

The database and broker are PostgreSQL and Redis when `CLIPMOD_TEST_PG_URL` and
`CLIPMOD_TEST_REDIS_URL` are set (`make bench` starts them with `.ci/services`), else the
embedded default. Run: `make bench` or
`python -m bench.intake [--rounds N] [--threads N] [--latency-n 0]` (0: the ratio only). The
server runs `BENCH_SERVER_THREADS` request threads (8 by default, as `clipmod serve`). A comma
list (`BENCH_SERVER_THREADS=1,2,4,8`) starts one server per count on the same database and
interleaves the rounds across them (the order reversed every other round), so thread counts are
compared under the same machine state: on a shared machine, separate runs differ by more than
the thread counts do. Compare intake/s and CPU per upload across counts, not the ratio: fewer
threads also slow the bare endpoint.

`--compare TREE` (repeatable) also starts a server from another checkout of this repository
(e.g. `git worktree add ../base main`) on the same database, interleaved with this one's: an
A/B of a change against its base in one run. Compare server CPU per upload first: two servers
of identical code differ by up to ±0.05 ms, their ratios by ±0.02.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from bench.procstat import context_switches, cpu_seconds
from bench.uploads import BOUNDARY, blob_write_us, jpeg, multipart, settled_store
from clipmod import keys, migrate
from clipmod import settings as settings_mod
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item, ItemStatus

# -- the server (a child process, so the client's threads do not share its GIL) -------------


def serve(port: int) -> None:
    from flask import Flask, jsonify, request
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from api import create_app
    from api.server import create
    from cli.common import setup_logging

    settings = settings_mod.load()
    # As `clipmod serve` sets it up: the access log line is part of what a request costs.
    setup_logging("info", settings.log_format, settings.log_flush_s)
    app = create_app(settings)
    bare = Flask("bare")

    @bare.post("/v1/items")
    def bare_items() -> Any:
        request.get_data()
        return jsonify({"id": uuid.uuid4().hex, "status": "queued"}), 202

    both = DispatcherMiddleware(app, {"/bare": bare})
    threads = int(os.environ["BENCH_SERVER_THREADS"])
    server = create(both, settings, "127.0.0.1", port, threads=threads)  # type: ignore[arg-type]
    print("ready", flush=True)
    server.run()


def server_threads() -> list[int]:
    return [int(t) for t in os.environ.get("BENCH_SERVER_THREADS", "8").split(",")]


def start_server(
    env: dict[str, str], port: int, log: Path, threads: int = 8, tree: Path | None = None
) -> subprocess.Popen[bytes]:
    """A server process; from `tree`'s code if given (`python -m` imports from the working
    directory first, ahead of the installed checkout)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.intake", "--serve", str(port)],
        env={**env, "BENCH_SERVER_THREADS": str(threads)},
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise SystemExit(f"bench server failed:\n{log.read_text()[-3000:]}")
    return proc


# -- the client ----------------------------------------------------------------------------


def hammer(port: int, path: str, key: str, image: bytes, seconds: float, threads: int) -> int:
    """Accepted uploads in `seconds` from `threads` keep-alive clients."""
    done = [0] * threads
    failed: list[str] = []
    stop = time.monotonic() + seconds
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop and not failed:
            conn.request("POST", path, body=multipart(image, uuid.uuid4().hex), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 202:
                # Not SystemExit: a thread that raises it ends silently, and the run would go
                # on counting only what was accepted before (a 429 once made intake look slow).
                failed.append(f"{path}: {resp.status} {body[:200]!r}")
                break
            done[n] += 1
        conn.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failed:
        raise SystemExit(f"bench client refused: {failed[0]}")
    return sum(done)


def ratio(
    servers: list[tuple[int, int]], key: str, rounds: int, seconds: float, threads: int
) -> list[dict[str, float]]:
    """Per server (port, pid): accepted/s of each kind, and its and this client's CPU ms per
    request.

    The CPU figures say which side bound a run: a bare endpoint whose client spends as much
    CPU per request as the server would make the ratio a statement about the client.
    """
    image = jpeg()
    for port, _ in servers:  # warm-up: pools, caches, JIT-less paths
        hammer(port, "/v1/items", key, image, 1.0, threads)
        hammer(port, "/bare/v1/items", key, image, 1.0, threads)
    counts = [{"intake": 0, "bare": 0} for _ in servers]
    server_cpu = [{"intake": 0.0, "bare": 0.0} for _ in servers]
    switches = [{"intake": 0, "bare": 0} for _ in servers]
    client_cpu = [{"intake": 0.0, "bare": 0.0} for _ in servers]
    round_ratios: list[list[float]] = [[] for _ in servers]
    for r in range(rounds):
        order = list(enumerate(servers))
        for i, (port, pid) in order if r % 2 == 0 else order[::-1]:
            got = {}
            # The order within a round alternates too: on a VM whose speed drifts, the kind
            # measured first in every round could be favoured.
            kinds = (("intake", "/v1/items"), ("bare", "/bare/v1/items"))
            for kind, path in kinds if r % 2 == 0 else kinds[::-1]:
                server0, client0 = cpu_seconds(pid), time.process_time()
                switches0 = context_switches(pid)
                got[kind] = hammer(port, path, key, image, seconds, threads)
                counts[i][kind] += got[kind]
                server_cpu[i][kind] += cpu_seconds(pid) - server0
                switches[i][kind] += context_switches(pid) - switches0
                client_cpu[i][kind] += time.process_time() - client0
            round_ratios[i].append(got["intake"] / max(got["bare"], 1))
    total = rounds * seconds
    results = []
    for i in range(len(servers)):
        out = {k: v / total for k, v in counts[i].items()}
        for kind, n in counts[i].items():
            out[f"{kind}_server_ms"] = 1000 * server_cpu[i][kind] / max(n, 1)
            out[f"{kind}_server_switches"] = switches[i][kind] / max(n, 1)
            out[f"{kind}_client_ms"] = 1000 * client_cpu[i][kind] / max(n, 1)
        out["round_ratio_median"] = statistics.median(round_ratios[i])
        out["round_ratio_min"] = min(round_ratios[i])
        out["round_ratio_max"] = max(round_ratios[i])
        results.append(out)
    return results


def report(
    stack: str, client_threads: int, server_threads: int, rates: dict[str, float], code: str
) -> None:
    print(
        f"\nintake benchmark on {stack}; {platform.machine()}, {os.cpu_count()} cores, "
        f"{client_threads} client threads, waitress {server_threads} threads; code: {code}\n"
        f"  intake (multipart 224x224 JPEG): {rates['intake']:.0f} accepted/s\n"
        f"  bare Flask endpoint, same server: {rates['bare']:.0f} req/s\n"
        f"  CPU ms per request, server/client: intake {rates['intake_server_ms']:.2f}/"
        f"{rates['intake_client_ms']:.2f}, bare {rates['bare_server_ms']:.2f}/"
        f"{rates['bare_client_ms']:.2f}; load average {os.getloadavg()[0]:.1f}\n"
        f"  server context switches per request (GIL hand-offs): intake "
        f"{rates['intake_server_switches']:.1f}, bare {rates['bare_server_switches']:.1f}\n"
        f"  intake/bare: {rates['intake'] / rates['bare']:.3f}   (target >= 0.3); per round: "
        f"median {rates['round_ratio_median']:.3f}, {rates['round_ratio_min']:.3f}-"
        f"{rates['round_ratio_max']:.3f}",
        flush=True,
    )


def latency(port: int, key: str, n: int) -> list[float]:
    image = jpeg()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    auth = {"Authorization": f"Bearer {key}"}
    out = []
    for _ in range(n):
        time.sleep(0.05)  # the worker is idle when each upload arrives
        started = time.perf_counter()
        headers = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        conn.request("POST", "/v1/items", body=multipart(image, uuid.uuid4().hex), headers=headers)
        resp = conn.getresponse()
        item_id = json.loads(resp.read())["id"]
        while True:
            conn.request("GET", f"/v1/items/{item_id}", headers=auth)
            resp = conn.getresponse()
            if json.loads(resp.read())["status"] in ("scored", "failed"):
                break
            time.sleep(0.002)
        out.append(time.perf_counter() - started)
    conn.close()
    return out


def drain(database_url: str, timeout: float = 300.0) -> None:
    """Wait until the worker has scored the ratio part's uploads.

    Its ~10,000 uploads are still queued when the worker starts; measured at once, the first
    latency uploads queued behind them (a p90 of 1.2 s in one run), which says nothing about
    an idle worker.
    """
    engine = make_engine(database_url)
    pending = select(func.count()).where(
        Item.status.in_([ItemStatus.QUEUED, ItemStatus.PROCESSING])
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                left = conn.scalar(pending) or 0
            if not left:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the worker left {left} uploads unscored")
            time.sleep(0.5)
    finally:
        engine.dispose()


# -- the run -------------------------------------------------------------------------------


def make_database(data_dir: Path) -> tuple[dict[str, str], str]:
    env = {
        "CLIPMOD_DATA_DIR": str(data_dir),
        "CLIPMOD_DEVICE": "cpu",
        "CLIPMOD_LOG_LEVEL": "warning",
        # One tenant uploading as fast as it can: not what limits are for. The limiter still
        # counts every upload (its Redis round trip is part of what intake costs).
        "CLIPMOD_RATE_LIMIT": "100000000/minute",
    }
    pg, redis = os.environ.get("CLIPMOD_TEST_PG_URL"), os.environ.get("CLIPMOD_TEST_REDIS_URL")
    if pg and redis:
        name = f"clipmod_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        env["CLIPMOD_DATABASE_URL"] = pg.rsplit("/", 1)[0] + f"/{name}"
        env["CLIPMOD_BROKER_URL"] = redis
        import redis as redis_client

        client = redis_client.Redis.from_url(redis)
        client.flushdb()
        client.close()
        return env, "PostgreSQL + Redis"
    return env, "embedded (SQLite + SQLite broker)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and kind")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-n", type=int, default=60, help="0: skip the latency part")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="TREE",
        help="also run a server from this checkout's code, interleaved (an A/B in one run)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    from cli.supervise import WorkerProcess, free_port, settings_env

    data_dir = Path(tempfile.mkdtemp(prefix="clipmod-bench-intake-"))
    servers: list[subprocess.Popen[bytes]] = []
    worker = None
    try:
        overrides, stack = make_database(data_dir)
        settings = settings_mod.load(overrides)
        migrate.upgrade(settings)
        settled_store(settings.blob_dir)
        engine = make_engine(settings.database_url)
        with transaction(make_sessionmaker(engine)) as session:
            key = keys.create_key(session, "bench")
        engine.dispose()
        env = settings_env(settings)
        counts, ports = server_threads(), []
        # (threads, code tree): this checkout at each count, then each tree to compare with it.
        specs: list[tuple[int, Path | None]] = [(n, None) for n in counts]
        specs += [(counts[0], Path(tree).resolve()) for tree in args.compare]
        for i, (n, tree) in enumerate(specs):
            ports.append(free_port())
            log = data_dir / f"server-{i}-{n}.log"
            servers.append(start_server(env, ports[-1], log, n, tree))
        all_rates = ratio(
            [(port, s.pid) for port, s in zip(ports, servers, strict=True)],
            key,
            args.rounds,
            args.seconds,
            args.threads,
        )
        for (n, tree), rates in zip(specs, all_rates, strict=True):
            report(stack, args.threads, n, rates, str(tree or "this checkout"))
        blob_us = blob_write_us(settings.blob_dir)
        print(f"  the file system, same run: a new 12 kB blob takes {blob_us:.0f} µs to store")
        rates, port = all_rates[0], ports[0]  # the headline and the latency: the first count
        result: dict[str, Any] = {
            "intake_per_s": rates["intake"],
            "bare_per_s": rates["bare"],
            "ratio": rates["intake"] / rates["bare"],
            **{
                k: v
                for k, v in rates.items()
                if k.endswith(("_ms", "_switches")) or k.startswith("round_")
            },
            "load_average": os.getloadavg()[0],
            "blob_write_us": blob_us,
            "stack": stack,
            "server_threads": counts[0],
        }
        if len(counts) > 1:
            result["by_server_threads"] = dict(zip(counts, all_rates[: len(counts)], strict=True))
        if args.compare:
            pairs = zip(specs, all_rates, strict=True)
            result["compared"] = {str(tree): rates for (_, tree), rates in pairs if tree}
        if args.latency_n > 0:  # --latency-n 0: the ratio only, no worker
            worker = WorkerProcess.start(env, log=data_dir / "worker.log")
            worker.wait_ready(300, settle=1.0)
            drain(settings.database_url)
            seconds = sorted(latency(port, key, args.latency_n))
            result["latency_p50_ms"] = p50 = statistics.median(seconds) * 1000
            result["latency_p90_ms"] = p90 = seconds[int(0.9 * (len(seconds) - 1))] * 1000
            print(
                f"  upload -> verdict, idle worker, as the client sees it: p50 {p50:.1f} ms, "
                f"p90 {p90:.1f} ms over {len(seconds)} uploads   (target p50 <= 50 ms)"
            )
        print(json.dumps(result))
    finally:
        if worker is not None:
            worker.stop()
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
