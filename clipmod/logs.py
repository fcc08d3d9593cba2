"""Process-wide logging for the long-running roles (`serve`, `worker`): text or JSON lines.

JSON (`CLIPMOD_LOG_FORMAT=json`) is for log pipelines: one object per line, with the fields a
caller passed in `extra=` (the access log's method, path, status, ms, tenant, request id) as
top-level keys, so they can be queried without parsing the message. Progress bars (model
loading) are turned off: in a production log they are noise, one line per refresh.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose debug output would drown ours (celery-batches logs every timer tick).
_QUIET = ("celery_batches", "kombu", "amqp", "urllib3", "PIL", "filelock", "httpx")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup(level: str, fmt: str = "text") -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # No record asks where it was logged from, or in which process: neither format prints it,
    # and finding the caller walks the stack on every record (the logging HOWTO's
    # "Optimization" section). The API writes one access line per request.
    logging._srcfile = None
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # library warnings become log records (JSON too), not raw text
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
