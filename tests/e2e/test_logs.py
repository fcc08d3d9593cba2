"""What an operator reads: a worker's log as JSON lines, one line per batch, no banner or bar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.settings import Settings
from tests.e2e.conftest import start_worker, wait_for
from tests.e2e.scenarios import api_client

pytestmark = pytest.mark.e2e


def test_worker_logs_are_json_lines_with_one_line_per_batch(
    settings: Settings, tmp_path: Path
) -> None:
    settings = Settings(**{**vars(settings), "log_format": "json", "log_level": "debug"})
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        key = keys.create_key(session, "acme")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        with api_client(settings) as client:
            ids = [
                client.post(
                    "/v1/items",
                    json={"text": f"a photo of a cup {i}"},
                    headers={"Authorization": f"Bearer {key}"},
                ).get_json()["id"]
                for i in range(3)
            ]
        wait_for(sessions, ids, timeout=30)
    finally:
        worker.stop()
        engine.dispose()
    # Every line is one JSON object, except the notice Celery writes straight to the terminal
    # as it stops ("worker: Warm shutdown (MainProcess)"), bypassing logging.
    lines = (tmp_path / "worker.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line and not line.startswith("worker: ")]
    batches = [r for r in records if r["logger"] == "workers.batch"]
    assert batches and all("claim_ms=" in r["message"] for r in batches)
    assert sum(r["size"] for r in batches) == 3  # the fields are keys, not only text
    assert all({"decode_ms", "forward_ms", "write_ms", "img_per_s"} <= set(r) for r in batches)
    assert {"ts", "level", "logger", "message"} <= set(records[0])
