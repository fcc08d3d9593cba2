"""`clipmod policy lint`, `POST /v1/policies/lint` and the editor say the same about a text.

One implementation (`clipmod.policy.validate.check`) is the claim; this test holds all three
front ends to it on texts that fail in every way a policy can: YAML syntax, schema, lint
errors and warnings (the model's and the stored traffic's), too many prompts, too many bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api.policies import RUNTIME_KEY
from cli.main import main
from clipmod import keys
from clipmod.db import transaction
from clipmod.models import User
from clipmod.settings import Settings
from tests.dashboard.conftest import MakeItem, sign_in

SCHEMA = """name: p
model: clipmod-demo-clip
categories:
- id: weapons
  prompts: [a photo of a knife]
  review_at: 0.9
  block_at: 0.5
  colour: red
- id: weapons
  prompts: []
  review_at: 2
  block_at: 0.5
"""
LINT = """name: p
model: some-other-clip
categories:
- id: weapons
  mode: contrast
  prompts: [a photo of a knife, A photo of  a knife, a photo of a gun]
  review_at: 0.5
  block_at: 0.8
- id: drugs
  prompts: [a photo of a pill, a photo of a pill and a knife]
  negatives: [a photo of a pill]
  review_at: 0.99
  block_at: 0.995
escalation: {lower_by: 0.1}
"""
MANY = (
    "name: p\ncategories:\n- id: a\n  prompts:\n"
    + "".join(f"  - a photo of thing {i}\n" for i in range(10_000))
    + "  review_at: 0.2\n  block_at: 0.3\n"
)
TEXTS = {
    "yaml": "name: p\ncategories: [\n  - id: a\n",
    "schema": SCHEMA,
    "lint": LINT,
    "many": MANY,
    "huge": LINT + "# " + "x" * (5 * 2**20) + "\n",
}


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, runtime: Any) -> None:
    monkeypatch.setenv("CLIPMOD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CLIPMOD_MODEL", settings.model)
    monkeypatch.setenv("CLIPMOD_DEVICE", "cpu")
    monkeypatch.delenv("CLIPMOD_DATABASE_URL", raising=False)
    monkeypatch.setattr("cli.policy.load_runtime", lambda _settings: runtime)


def _cli(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    status = main(["policy", "lint", str(path), "--json"])
    out, err = capsys.readouterr()
    if status == 2 and not out:  # not a policy: one problem per stderr line
        return [line.removeprefix(str(path)) for line in err.splitlines()]
    return [_finding(f) for f in json.loads(out)["findings"]]


def _finding(f: dict[str, Any]) -> str:
    return f"{f['line']}:{f['column']} {f['field']}: {f['severity']} [{f['code']}] {f['message']}"


def _api(client: FlaskClient, key: str, text: str) -> list[str]:
    resp = client.post(
        "/v1/policies/lint", json={"yaml": text}, headers={"Authorization": f"Bearer {key}"}
    )
    if resp.status_code == 422:
        return [m.removeprefix("yaml") for m in resp.json["error"]["message"].splitlines()]
    assert resp.status_code == 200, resp.json
    return [_finding(f) for f in resp.json["findings"]]


def _editor(client: FlaskClient, url: str, token: str, text: str) -> list[str]:
    resp = client.post(url, json={"yaml": text}, headers={"X-CSRFToken": token})
    assert resp.status_code == 200, resp.json
    out = []
    for m in resp.json["markers"]:
        if m["code"] == "invalid_policy":
            out.append(m["text"].removeprefix("draft"))
        else:
            out.append(_finding(m))
            assert m["text"].startswith(f"draft:{m['line']}:{m['column']} {m['field']}: ")
    return out


def test_cli_api_and_editor_say_the_same(
    app: Flask,
    client: FlaskClient,
    runtime: Any,
    admin: User,
    sessions: sessionmaker[Session],
    make_item: MakeItem,
    cli_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app.extensions[RUNTIME_KEY] = runtime
    rng = np.random.default_rng(5)
    for _ in range(25):  # enough stored traffic for lint's threshold checks
        row = rng.standard_normal(runtime.dim).astype(np.float32)
        make_item(embedding=row / np.linalg.norm(row), revision=runtime.revision)
    with transaction(sessions) as session:
        key = keys.create_key(session, "ops", admin=True)
    token = sign_in(client, admin.email)
    opened = client.post("/dashboard/policies/drafts", data={"csrf_token": token})
    url = opened.headers["Location"] + "/check"
    said: dict[str, list[str]] = {}
    for name, text in TEXTS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        cli, api, editor = (
            _cli(path, capsys),
            _api(client, key, text),
            _editor(client, url, token, text),
        )
        assert cli == api == editor, name
        said[name] = cli
    assert said["yaml"] == [":3:3 YAML syntax: expected the node content, but found '-'"]
    assert said["schema"] == [
        ":8:3 categories[0].colour: unknown key",
        ":11:14 categories[1].review_at: Input should be less than or equal to 1",
        ":10:12 categories[1].prompts: List should have at least 1 item after validation, not 0",
    ]
    found = [(line.split(" ")[0], re.search(r"\[([a-z_]+)\]", line)[1]) for line in said["lint"]]  # type: ignore[index]
    assert found == [
        ("2:8", "model_mismatch"),
        ("4:3", "contrast_without_negatives"),
        ("6:33", "duplicate_prompt"),
        ("11:15", "prompt_is_negative"),
        ("7:14", "reviews_all_traffic"),
        ("8:13", "blocks_all_traffic"),
        ("12:14", "never_flags"),
        ("14:24", "escalation_unused"),
    ]
    assert said["many"] == [
        ":5:3 categories[0].prompts: List should have at most 256 items after validation, not 10000"
    ]
    assert said["huge"] == [
        ":1:1 the policy is 5.2 MB; the limit is 1 MiB (1,048,576 bytes): "
        "was something else pasted?"
    ]
