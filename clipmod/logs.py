"""Process-wide logging for the long-running roles (`serve`, `worker`): text or JSON lines.

JSON (`CLIPMOD_LOG_FORMAT=json`) is for log pipelines: one object per line, with the fields a
caller passed in `extra=` (the access log's method, path, status, ms, tenant, request id) as
top-level keys, so they can be queried without parsing the message. Progress bars (model
loading) are turned off: in a production log they are noise, one line per refresh.

The API writes its INFO lines in batches (`CLIPMOD_LOG_FLUSH_S`, `BatchingHandler`), as nginx's
`access_log ... flush=` does; warnings and errors go out at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import Any, TextIO

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


class BatchingHandler(logging.StreamHandler[TextIO]):
    """Writes lines below WARNING at most every `interval` seconds; a WARNING or worse at once,
    after the lines logged before it, so the order is kept.

    Why: the API writes one access line per request, and each write is a system call that
    releases the GIL: on a busy process, a hand-off to another request thread and back
    (without the access line at all, `bench.intake`'s server spent 0.09 ms less CPU and made 3.8
    fewer context switches an upload; formatting the line, which stays, costs ~7 µs; see
    docs/benchmarks.md). What it costs: a line shows up to `interval` late, and a process
    killed with SIGKILL loses at most that last interval's INFO lines (a normal exit writes
    them: `logging.shutdown` flushes every handler). A background thread writes what waits
    while the process is quiet. A forked child drops the lines its parent had not written yet
    (the parent writes them) and starts its own thread.
    """

    MAX_CHARS = 64 * 1024  # written early past this, so a burst never piles up unbounded

    def __init__(self, stream: TextIO | None = None, interval: float = 1.0):
        super().__init__(stream)
        self.interval = interval
        self._lines: list[str] = []
        self._chars = 0
        self._flushing = False  # a thread writes what waits (none yet in a new or forked process)
        self._closed = False
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget(me()))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # `Handler.handle` holds this handler's lock around `emit`.
        self._lines.append(line)
        self._chars += len(line)
        if record.levelno >= logging.WARNING or self._chars >= self.MAX_CHARS or self._closed:
            self._write(record)
        elif not self._flushing:
            self._flushing = True
            threading.Thread(target=self._flush_every, name="log-flusher", daemon=True).start()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # made by `Handler.__init__`
            if not self._closed:
                self._write(None)

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._closed:  # `logging.shutdown` closes every handler once more at exit
                self._write(None)  # what waits goes out first
            self._closed, self._flushing = True, False  # the thread stops at its next turn
        super().close()

    def _write(self, record: logging.LogRecord | None) -> None:
        text, self._lines, self._chars = "".join(self._lines), [], 0
        try:
            if text:
                self.stream.write(text)
            self.stream.flush()
        except Exception:  # as `StreamHandler.emit` treats a failed write: reported, not raised
            self.handleError(record or logging.makeLogRecord({"msg": "(batched lines)"}))

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.interval)
            if not self._flushing:  # closed meanwhile: its stream may be gone too
                return
            self.flush()


def _forget(handler: BatchingHandler | None) -> None:
    if handler is not None:
        handler._lines, handler._chars, handler._flushing = [], 0, False


def setup(level: str, fmt: str = "text", flush_s: float = 0.0) -> None:
    """`flush_s` > 0: lines below WARNING are written in batches, at most that far apart."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # No record asks where it was logged from, or in which process: neither format prints it,
    # and finding the caller walks the stack on every record (the logging HOWTO's
    # "Optimization" section). The API writes one access line per request.
    logging._srcfile = None
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(interval=flush_s) if flush_s > 0 else logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # library warnings become log records (JSON too), not raw text
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
