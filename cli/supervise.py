"""Spawning a scoring worker and waiting on it: one implementation for every caller.

`clipmod up`, the end-to-end test fixtures and `bench/` all need the same three things: start
`clipmod worker` as a child process with a health port, wait until its `/readyz` says the model
and policy are loaded (failing fast if it dies first), and stop it with SIGTERM then SIGKILL.
Keeping that here means the tests and the benchmark exercise the code users run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clipmod.settings import Settings


class WorkerFailed(RuntimeError):
    """The worker exited or did not become ready in time; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child environment that reproduces `settings` exactly (no inherited `CLIPMOD_*`)."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("CLIPMOD_")}
    env.update(settings.to_env())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    health_url: str
    log: Path | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        env: Mapping[str, str],
        *,
        log: Path | None = None,
        health_port: int | None = None,
        role: str = "score",
    ) -> WorkerProcess:
        """Start `clipmod worker --role ROLE`; output goes to `log` (or is inherited when None)."""
        port = health_port or free_port()
        fh = log.open("wb") if log is not None else None
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--health-port", str(port), "--role", role],
            env=dict(env),
            stdout=fh,
            stderr=subprocess.STDOUT if fh else None,
        )
        return cls(proc, f"http://127.0.0.1:{port}", log, fh)

    def readiness(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.health_url}/readyz", timeout=2) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float, settle: float = 0.0) -> None:
        """Block until `/readyz` answers ready; raise `WorkerFailed` if it dies or times out.

        `settle` gives the Celery consumer a moment to attach to the queue after the model is
        loaded, for callers that enqueue the instant the worker is ready.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerFailed(
                    f"the worker exited with status {self.proc.returncode}\n{self.log_tail()}"
                )
            try:
                if self.readiness().get("status") == "ready":
                    time.sleep(settle)
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise WorkerFailed(f"the worker was not ready after {timeout:.0f} s\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (Celery's warm shutdown: the running batch finishes), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
