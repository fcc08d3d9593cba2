"""A real running service for the browser tests: `clipmod serve` + a real worker, over HTTP.

Everything a test puts in goes through the interfaces people and platforms use: tenants and
keys with `clipmod keys create`, people with `clipmod users create`, policies and uploads
through `/v1`, decisions through the dashboard in Chromium. Tests only read the database.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
from PIL import Image

from cli.supervise import WorkerProcess, free_port
from clipmod.demo import world
from clipmod.settings import BUNDLED_POLICY, Settings
from tests.e2e.conftest import env_for
from tests.images import encode

PASSWORD = "correct horse battery"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CHROMIUM = "/usr/bin/chromium"


def review_policy_text() -> str:
    """The demo policy with every block turned into review and every allowed item audited,
    so that (nearly) every upload waits for a person: a queue to clear."""
    text = BUNDLED_POLICY.read_text(encoding="utf-8")
    text = re.sub(r"block_at: [0-9.]+", "block_at: 1.0", text)
    return text.replace("audit_sample_rate: 0.0", "audit_sample_rate: 1.0")


@dataclass
class Live:
    settings: Settings
    url: str
    server: subprocess.Popen[bytes]
    worker: WorkerProcess
    log_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    _server_log: IO[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=env_for(self.settings),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"clipmod {' '.join(args)}: {done.stderr}"
        return done.stdout

    def key(self, tenant: str, *, admin: bool = False) -> str:
        name = f"{tenant}{'+admin' if admin else ''}"
        if name not in self.keys:
            args = ["keys", "create", "--tenant", tenant] + (["--admin"] if admin else [])
            self.keys[name] = self.cli(*args).strip().splitlines()[-1]
        return self.keys[name]

    def user(self, email: str, role: str = "moderator", tenants: Iterable[str] = ()) -> str:
        args = ["users", "create", email, "--role", role]
        for t in tenants:
            self.key(t)  # the tenant exists once it has a key
            args += ["--tenant", t]
        self.cli(*args, stdin=PASSWORD + "\n")
        return email

    def api(self, method: str, path: str, key: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def publish(self, tenant: str, yaml_text: str) -> None:
        resp = self.api(
            "POST", "/v1/policies", self.key(tenant, admin=True), json={"yaml": yaml_text}
        )
        assert resp.status_code in (200, 201), resp.text
        time.sleep(1.2)  # the worker re-reads activations every 0.5 s here

    def upload(self, tenant: str, images: Iterable[tuple[str, bytes]]) -> list[str]:
        ids = []
        for name, data in images:
            resp = self.api(
                "POST",
                "/v1/items",
                self.key(tenant),
                files={"file": (name, io.BytesIO(data))},
                data={"external_id": name, "metadata": '{"uploader": "test"}'},
            )
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        return ids

    def wait_scored(self, tenant: str, ids: list[str], timeout: float = 90) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        pending = list(ids)
        done: dict[str, dict[str, Any]] = {}
        while pending:
            for item_id in list(pending):
                body = self.api("GET", f"/v1/items/{item_id}", self.key(tenant)).json()
                if body["status"] in ("scored", "failed"):
                    done[item_id] = body
                    pending.remove(item_id)
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} items not scored in {timeout} s")
            if pending:
                time.sleep(0.2)
        return [done[i] for i in ids]

    def stop(self) -> None:
        if self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self._server_log:
            self._server_log.close()
        self.worker.stop()


def start(settings: Settings, log_dir: Path, timeout: float = 120) -> Live:
    """Worker first (it publishes the bundled policy into a fresh database), then the API."""
    from tests.e2e.conftest import start_worker

    worker = start_worker(settings, log_dir / "worker.log", timeout=timeout)
    port = free_port()
    log = (log_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port), "--threads", "8"],
        env=env_for(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    live = Live(settings, url, server, worker, log_dir, _server_log=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return live
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            live.stop()
            raise AssertionError((log_dir / "server.log").read_text()[-3000:])
        time.sleep(0.1)


def world_images(seeds: Iterable[int], split: str = "heldout") -> list[tuple[str, bytes]]:
    return [(f"world-{split}-{s}.png", encode(world.render(s, split).image, "PNG")) for s in seeds]


def sample_images(names: Iterable[str] | None = None) -> list[tuple[str, bytes]]:
    paths = sorted(SAMPLES.glob("*.png"))
    wanted = set(names) if names is not None else None
    return [(p.name, p.read_bytes()) for p in paths if wanted is None or p.name in wanted]


def solid_png(colour: str = "red") -> bytes:
    return encode(Image.new("RGB", (64, 64), colour), "PNG")
