"""Processes a fault test may break: a private PostgreSQL, the API as `clipmod serve`, and load.

Never the shared CI servers: a test that stops PostgreSQL stops its own, started here as the
`postgres` user (PostgreSQL refuses to run as root; CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from cli.supervise import free_port, settings_env
from clipmod.settings import Settings


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@dataclass
class PrivatePostgres:
    bin: Path
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="clipmod-pg-")))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.root.chmod(0o755)
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres")
        self.data.chmod(0o700)
        subprocess.run(
            _as_postgres(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data / "log"),
                "-w",
                "-t",
                "30",
                "-o",
                options,
                "start",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def private_postgres() -> PrivatePostgres | None:
    """An initialised, started PostgreSQL on a free port, or None when none is installed."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        return None
    server = PrivatePostgres(pg_bin)
    server.init()
    server.start()
    return server


@dataclass
class Api:
    """`clipmod serve` as its own process: a test can SIGKILL it and start it again."""

    settings: Settings
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(self.port)],
                env=settings_env(self.settings),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clipmod serve exited\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"clipmod serve did not answer\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


RETRYABLE = {503}


@dataclass
class Load:
    """Clients that upload `n` texts and retry 503s and connection errors with the same
    external_id, as a well-behaved platform does. Anything else is recorded as a client error."""

    url: str
    key: str
    n: int
    threads: int = 4
    pause_s: float = 0.01
    give_up_s: float = 90.0
    accepted: dict[str, str] = field(default_factory=dict)  # external_id -> item id
    errors: list[str] = field(default_factory=list)
    retried: Counter[str] = field(default_factory=Counter)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for t in self._workers:
            t.start()
        return self

    def join(self, timeout: float = 180) -> None:
        for t in self._workers:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._workers), "the load did not finish"

    def wait_accepted(self, share: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < share * self.n:
            assert time.monotonic() < deadline, f"only {len(self.accepted)} accepted"
            time.sleep(0.01)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.n:
                return None
            self._next += 1
            return self._next - 1

    def _run(self) -> None:
        http = requests.Session()
        headers = {"Authorization": f"Bearer {self.key}"}
        while (i := self._take()) is not None:
            external_id = f"post-{i}"
            body = {"text": f"a harmless caption number {i}", "external_id": external_id}
            deadline = time.monotonic() + self.give_up_s
            while True:
                try:
                    resp = http.post(f"{self.url}/v1/items", json=body, headers=headers, timeout=10)
                except requests.RequestException as exc:
                    kind = type(exc).__name__
                    http = requests.Session()
                else:
                    if resp.status_code in (200, 202):
                        with self._lock:
                            self.accepted[external_id] = resp.json()["id"]
                        break
                    if resp.status_code not in RETRYABLE:
                        self.errors.append(f"{resp.status_code} {resp.text[:200]}")
                        break
                    kind = f"503 {resp.json()['error']['code']}"
                self.retried[kind] += 1
                if time.monotonic() > deadline:
                    self.errors.append(f"gave up on {external_id} after {kind}")
                    break
                time.sleep(0.1)
            time.sleep(self.pause_s)
