"""Servers a fault test may break: a private Redis per test, never the shared CI one."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.supervise import free_port
from tests.e2e.conftest import postgres_url  # noqa: F401 - a fixture, shared with e2e


@dataclass
class PrivateRedis:
    port: int
    dir: Path
    appendonly: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (`.ci/services install` installs it)")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=[False, True], ids=["no-aof", "aof"])
def redis_aof_or_not(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis, once without persistence and once with AOF (`appendfsync everysec`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (`.ci/services install` installs it)")
    server = PrivateRedis(free_port(), tmp_path, appendonly=request.param)
    server.start()
    yield server
    server.stop()
