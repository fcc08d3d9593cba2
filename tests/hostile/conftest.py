"""A real `clipmod serve` process on loopback, for tests that must go through waitress.

The Flask test client never meets the HTTP server, so it cannot see what waitress answers by
itself (bad framing, oversized headers or bodies). `live_server` is the API exactly as deployed,
on its own migrated SQLite copy; no worker runs, so accepted items stay queued.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.supervise import free_port, settings_env
from clipmod.settings import Settings
from tests.conftest import make_settings


class ServerFailed(RuntimeError):
    """The server exited or did not answer `/healthz` in time; the message carries its log."""


@dataclass
class LiveServer:
    settings: Settings
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(settings: Settings, log: Path, timeout: float = 60) -> LiveServer:
    """`clipmod serve` on 127.0.0.1 and a free port, returned once `/healthz` answers."""
    host, port = "127.0.0.1", free_port()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", host, "--port", str(port)],
            env=settings_env(settings),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(settings, host, port, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"clipmod serve exited with {proc.returncode}\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    server.stop()
    raise ServerFailed(f"clipmod serve did not answer in {timeout:.0f} s\n{server.log_tail()}")


@pytest.fixture(scope="module")
def live_server(
    migrated_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per test module (starting one costs ~2 s); tests share its database."""
    data_dir = tmp_path_factory.mktemp("live")
    shutil.copy(migrated_template, data_dir / "clipmod.db")
    server = start_server(make_settings(data_dir), data_dir / "server.log")
    try:
        yield server
    finally:
        server.stop()
