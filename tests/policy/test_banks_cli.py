"""`clipmod banks …` and `clipmod traffic …` in-process, against this test's database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod.db import transaction
from clipmod.models import ItemEmbedding
from clipmod.policy import versions
from clipmod.settings import Settings
from tests.policy.conftest import StoreFn, policy_text, unit_rows

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture
def cli(cli_env: None, monkeypatch: pytest.MonkeyPatch, runtime: Any) -> Any:
    for module in ("cli.banks", "cli.traffic"):
        monkeypatch.setattr(f"{module}.load_runtime", lambda _settings: runtime)

    def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_banks_commands(
    cli: Any,
    capsys: pytest.CaptureFixture[str],
    store: StoreFn,
    runtime: Any,
    sessions: sessionmaker[Session],
) -> None:
    rng = np.random.default_rng(0)
    items = [store("acme", image=unit_rows(rng, 1, runtime.dim)[0]) for _ in range(3)]
    assert cli(capsys, "banks", "create", "known-bad", "--kind", "block")[0] == 0
    status, out, _ = cli(
        capsys,
        "banks",
        "add",
        "known-bad",
        str(SAMPLES / "blue-cup.png"),
        "--item",
        items[0],
        "--note",
        "first",
        "--json",
    )
    assert status == 0
    added = json.loads(out)
    assert (added["label"], added["entries"], len(added["added"])) == ("known-bad@1", 2, 2)
    status, out, _ = cli(capsys, "banks", "add", "known-bad", "--item", items[0])
    assert status == 0 and "skipped" in out and "known-bad@1" in out
    assert cli(capsys, "banks", "remove", "known-bad", str(added["added"][0]))[0] == 0
    status, out, _ = cli(capsys, "banks", "show", "known-bad@1", "--entries", "--json")
    shown = json.loads(out)
    assert shown["shown_version"] == 1 and len(shown["entry_list"]) == 2
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    status, out, _ = cli(capsys, "banks", "list")
    assert out.startswith("known-bad@2") and "block" in out
    status, _, err = cli(capsys, "banks", "add", "known-bad", "--item", "nope")
    assert status == 2 and err.startswith("clipmod: item_not_found: ")
    status, _, err = cli(capsys, "banks", "backtest", "known-bad")
    assert status == 2 and "bank_not_referenced" in err
    with transaction(sessions) as session:
        text = policy_text() + "banks:\n  - {name: known-bad, threshold: 0.9}\n"
        versions.activate(session, versions.publish(session, text, author="t").version, by="t")
    status, out, _ = cli(capsys, "banks", "backtest", "known-bad", "--add-item", items[1])
    assert status == 0, out
    assert "known-bad@2 -> known-bad@3 (proposed)" in out and "+1 new" in out
    status, _, err = cli(capsys, "banks", "create", "x", "--kind", "block", "--revision", "r")
    assert status != 0 and "--dim" in err


def test_traffic_commands(
    cli: Any,
    capsys: pytest.CaptureFixture[str],
    store: StoreFn,
    runtime: Any,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    rng = np.random.default_rng(1)
    first, *_ = [store("acme", image=unit_rows(rng, 1, runtime.dim)[0]) for _ in range(4)]
    status, out, _ = cli(capsys, "traffic", "status", "--json")
    assert json.loads(out) == {"revision": runtime.revision, "exists": False}
    status, out, _ = cli(capsys, "traffic", "sync")
    assert status == 0 and out.startswith("rebuilt (no store yet): 4 items")
    status, out, _ = cli(capsys, "traffic", "rebuild", "--json")
    assert json.loads(out)["items"] == 4
    assert cli(capsys, "traffic", "verify")[:2] == (0, "ok\n")
    image = settings.traffic_dir / runtime.revision / "g2.image"
    image.write_bytes(image.read_bytes()[:-1])
    status, out, _ = cli(capsys, "traffic", "verify", "--no-repair")
    assert status == 1 and "truncated" in out and out.endswith("not repaired\n")
    status, out, _ = cli(capsys, "traffic", "verify")
    assert status == 1 and out.endswith("rebuilt from SQL\n")
    assert cli(capsys, "traffic", "verify")[0] == 0
    status, out, _ = cli(capsys, "traffic", "status")
    assert "items        4" in out and "generation   3" in out
    with transaction(sessions) as session:  # what `DELETE /v1/items/<id>` does to the rows
        session.execute(delete(ItemEmbedding).where(ItemEmbedding.item_id == first))
    status, out, _ = cli(capsys, "traffic", "sync")
    assert status == 0 and out.startswith("appended 0, deleted 1: 3 items")
    assert cli(capsys, "traffic", "verify")[:2] == (0, "ok\n")
    status, out, _ = cli(capsys, "traffic", "status")
    assert "items        3" in out and "deleted      1" in out
