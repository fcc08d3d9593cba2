"""The OpenAPI 3.1 contract: generated from the code, served at `/v1/openapi.json`, and held
against the live server (waitress, Flask, SQLite) by Schemathesis: no 5xx, no response that
breaks the document, no error that is not the JSON error shape."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api import openapi
from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker, transaction
from tests.conftest import make_settings
from tests.hostile.conftest import LiveServer, start_server

# Bounded: Schemathesis makes at most this many requests per operation (~25 operations), and
# the whole test stops after `BUDGET_S`, whatever Hypothesis would like to do.
MAX_EXAMPLES = 50
BUDGET_S = 120


def test_every_v1_route_is_in_the_document(app: Flask) -> None:
    doc = openapi.build(app)
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routed = {
        (method, openapi._path(rule.rule)[0])
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert documented == routed
    for ops in doc["paths"].values():
        for op in ops.values():
            assert "default" in op["responses"]  # any other status still has the error shape
    item = doc["components"]["schemas"]["UploadFields"]["properties"]
    assert all(field.get("description") for field in item.values())


def test_a_new_route_without_documentation_fails_the_build(app: Flask) -> None:
    app.add_url_rule("/v1/secret-feature", "secret.feature", lambda: "x")
    with pytest.raises(LookupError, match=r"secret\.feature"):
        openapi.build(app)


def test_the_document_is_served_without_a_key(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.get("/v1/openapi.json")
    assert resp.status_code == 200 and resp.get_json()["info"]["title"] == "clipmod"
    assert "bearer" in resp.get_json()["components"]["securitySchemes"]


@pytest.fixture(scope="module")
def contract_server(
    migrated_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    data_dir = tmp_path_factory.mktemp("contract")
    shutil.copy(migrated_template, data_dir / "clipmod.db")
    live_settings = make_settings(data_dir, rate_limit="100000/minute")
    engine = make_engine(live_settings.database_url)
    with transaction(make_sessionmaker(engine)) as session:
        admin = keys.create_key(session, "contract", admin=True)
    engine.dispose()
    server = start_server(live_settings, data_dir / "server.log")
    try:
        yield server, admin
    finally:
        server.stop()


def test_the_live_api_keeps_its_contract(contract_server: tuple[LiveServer, str]) -> None:
    """Every operation, valid and invalid requests generated from the document.

    Schemathesis' pytest plugin does not run under this pytest, so Hypothesis is driven here
    directly, one operation at a time; failures are collected and reported together.
    """
    server, admin = contract_server
    contract = schemathesis.openapi.from_url(f"{server.url}/v1/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    started, failures, calls = time.monotonic(), [], [0]
    operations = [result.ok() for result in contract.get_all_operations()]
    assert len(operations) >= 24
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:  # type: ignore[no-untyped-def]
                calls[0] += 1
                case.call_and_validate(
                    base_url=server.url,
                    headers={"Authorization": f"Bearer {admin}"},
                    checks=checks,
                    timeout=10,
                )

            try:
                run()
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
        assert time.monotonic() - started < BUDGET_S, "the contract test outgrew its budget"
    assert not failures, "\n\n".join(failures) + "\n" + server.log_tail()
    assert calls[0] > 10 * len(operations)  # it really exercised the API
