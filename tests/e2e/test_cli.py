"""The commands a newcomer types (`clipmod keys create`, `clipmod up`, `clipmod submit`), and an
operator's (`clipmod items`, `clipmod blobs sweep`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cli.supervise import free_port
from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker
from clipmod.models import ItemStatus
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.e2e.conftest import env_for

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def clipmod(
    *args: str, settings: Settings, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_keys_create_prints_the_key_last(settings: Settings) -> None:
    done = clipmod("keys", "create", "--tenant", "acme", settings=settings)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        row = keys.authenticate(session, key)
        assert row is not None and row.tenant.name == "acme"
        assert row.key_hash != key and key not in row.key_hash  # only the hash is stored
    engine.dispose()


def test_up_then_submit_gives_the_expected_verdicts(settings: Settings, tmp_path: Path) -> None:
    expected = json.loads((SAMPLES / "expected.json").read_text())
    port = free_port()
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--port", str(port)],
        env=env_for(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
                time.sleep(0.3)
        banner = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}" in banner and "curl" in banner
        files = [str(SAMPLES / name) for name in expected]
        done = clipmod(
            "submit", "--url", f"http://127.0.0.1:{port}", "--wait", *files, settings=settings
        )
        assert done.returncode == 0, done.stdout + done.stderr
        lines = {Path(line.split(":")[0]).name: line for line in done.stdout.splitlines()}
        for name, action in expected.items():
            assert f": {action.upper()} " in lines[name], lines[name]
    finally:
        up.terminate()
        up.wait(timeout=30)
        log.close()


def test_up_stops_its_workers_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    """`up` runs two children, the scoring worker and the delivery worker; SIGTERM stops both."""
    port = free_port()
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--port", str(port)],
        env=env_for(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                assert up.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        workers = subprocess.run(
            ["pgrep", "-P", str(up.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(workers) == 2
        roles = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2] for pid in workers}
        assert roles == {b"score", b"deliver"}
        up.terminate()
        up.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if Path(f"/proc/{w}").exists()]
        assert not left, "clipmod up left a worker running"
    finally:
        if up.poll() is None:
            up.kill()
        log.close()


def test_submit_reports_unreadable_paths_without_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    args = ["submit", "--url", f"http://127.0.0.1:{free_port()}", "--key", "cm_x_y"]
    done = clipmod(*args, str(tmp_path / "nosuch.png"), str(tmp_path), settings=settings)
    assert done.returncode == 1
    assert "nosuch.png: not sent: no such file" in done.stdout
    assert f"{tmp_path}: not sent: not a file" in done.stdout
    binary = clipmod(*args, "--text", str(SAMPLES / "red-knife.png"), settings=settings)
    assert binary.returncode == 1 and "binary" in binary.stdout
    assert "Traceback" not in done.stderr + binary.stderr


def test_keys_create_admin_reaches_the_policy_endpoints(settings: Settings) -> None:
    from api import create_app

    made = {
        admin: clipmod(
            "keys", "create", "--tenant", "acme", *(["--admin"] if admin else []), settings=settings
        )
        for admin in (True, False)
    }
    assert all(done.returncode == 0 for done in made.values())
    app = create_app(settings)
    try:
        client = app.test_client()
        for admin, done in made.items():
            key = done.stdout.strip().splitlines()[-1]
            resp = client.get("/v1/policies", headers={"Authorization": f"Bearer {key}"})
            assert resp.status_code == (200 if admin else 403), resp.get_json()
    finally:
        app.extensions["clipmod"].engine.dispose()


def test_items_failed_and_retry(settings: Settings, sessions: sessionmaker[Session]) -> None:
    from tests.dashboard.test_failures import failed, statuses

    down = [failed(sessions, "url_unreachable") for _ in range(2)]
    corrupt = failed(sessions, "corrupt_image", tenant="globex")
    done = clipmod("items", "failed", "--list", "5", settings=settings)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["by_code"] == {"url_unreachable": 2, "corrupt_image": 1}
    assert {row["id"] for row in report["newest"]} == {*down, corrupt}
    shown = clipmod("items", "retry", settings=settings)  # without --yes: only shows
    assert json.loads(shown.stdout) == {"would_retry": 2, "by_code": {"url_unreachable": 2}}
    assert "add --yes" in shown.stderr
    assert statuses(sessions, down) == [ItemStatus.FAILED] * 2
    done = clipmod("items", "retry", "--yes", settings=settings)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retried"] == 2 and "queued 2 failed items" in done.stderr
    assert statuses(sessions, [*down, corrupt]) == [ItemStatus.QUEUED] * 2 + [ItemStatus.FAILED]
    named = clipmod("items", "retry", corrupt, "--yes", settings=settings)  # any code by id
    assert json.loads(named.stdout)["ids"] == [corrupt]
    unknown = clipmod("items", "failed", "--tenant", "nobody", settings=settings)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_blobs_sweep_shows_then_removes_what_no_row_names(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    from tests.unit.test_blobsweep import item_naming, put_old

    blobs = BlobStore(settings.blob_dir)
    kept, orphan = put_old(blobs, b"an item's"), put_old(blobs, b"nobody's")
    item_naming(sessions, kept)
    shown = clipmod("blobs", "sweep", "--dry-run", "--json", settings=settings)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) | {"dry_run": None} == {
        "files": 2, "young": 0, "in_use": 1, "removed": 1, "temp_removed": 0,
        "aside_restored": 0, "aside_removed": 0, "dry_run": None,
    }  # fmt: skip
    assert blobs.path(orphan).exists()
    done = clipmod("blobs", "sweep", settings=settings)
    assert done.returncode == 0, done.stderr
    assert "removed 1 unreferenced blobs" in done.stdout
    assert blobs.path(kept).exists() and not blobs.path(orphan).exists()
    young = clipmod("blobs", "sweep", "--grace-s", "-1", settings=settings)
    assert young.returncode == 2 and "Traceback" not in young.stderr
