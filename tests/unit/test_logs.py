"""JSON log lines carry the caller's `extra` fields as top-level keys."""

from __future__ import annotations

import json
import logging

from clipmod.logs import JsonFormatter


def test_json_lines_carry_extra_fields_and_exceptions() -> None:
    record = logging.makeLogRecord(
        {"name": "api.access", "levelname": "INFO", "msg": "GET %s", "args": ("/x",)}
    )
    record.status, record.request_id = 200, "abc"
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "GET /x" and data["logger"] == "api.access"
    assert (data["status"], data["request_id"], data["level"]) == (200, "abc", "info")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]
