"""`BatchingHandler`: the API's INFO lines in batches, warnings at once, nothing lost or doubled."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import pytest

from clipmod.logs import BatchingHandler


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(f"test.batched.{name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def test_info_lines_wait_for_a_flush_and_a_warning_takes_them_along_in_order() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=60)
    log = _logger(handler, "order")
    log.info("first")
    log.info("second")
    assert stream.getvalue() == ""
    log.warning("trouble")
    assert stream.getvalue().splitlines() == ["first", "second", "trouble"]
    log.info("third")
    handler.flush()  # as `logging.shutdown` does at exit
    assert stream.getvalue().splitlines()[-1] == "third"
    handler.close()


def test_a_quiet_process_still_writes_within_the_interval() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=0.05)
    _logger(handler, "quiet").info("alone")
    deadline = time.monotonic() + 5
    while "alone" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "alone\n"
    handler.close()


def test_a_burst_is_written_before_it_grows_past_the_cap() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=60)
    log = _logger(handler, "burst")
    line = "x" * 1000
    for _ in range(BatchingHandler.MAX_CHARS // 1000 + 1):
        log.info(line)
    assert len(stream.getvalue()) >= BatchingHandler.MAX_CHARS
    handler.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_its_parents_waiting_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("a", encoding="utf-8") as stream:
        handler = BatchingHandler(stream, interval=60)
        log = _logger(handler, "fork")
        log.info("parent's")
        pid = os.fork()
        if pid == 0:  # the child: its own line only, then straight out
            try:
                log.info("child's")
                handler.flush()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        handler.flush()
        handler.close()
    assert sorted(path.read_text().splitlines()) == ["child's", "parent's"]


def test_a_closed_handler_stops_writing_and_a_failed_write_is_reported_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=0.02)
    log = _logger(handler, "closed")
    log.info("before")
    handler.close()
    assert stream.getvalue() == "before\n"  # closing writes what waited
    stream.close()  # what a test or a shut-down process does after closing the handler
    time.sleep(0.1)  # the thread's next turn must not touch the closed stream
    broken = BatchingHandler(io.StringIO(), interval=60)
    broken.stream.close()
    _logger(broken, "broken").warning("lost")  # must not raise into the caller
    assert "Logging error" in capsys.readouterr().err
    broken.close()  # (reported once more: its stream is still closed)
    capsys.readouterr()
