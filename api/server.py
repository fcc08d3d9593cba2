"""The HTTP server in front of the Flask app: waitress, with the API's limits and error shape.

Waitress answers some requests itself, before Flask ever sees them: a malformed request line or
Content-Length (400), headers over its limit (431), a body over `max_request_body_size` (413),
an unsupported Transfer-Encoding (501, answered here as 400). It builds those in
`waitress.task.ErrorTask.execute`
from the parser's `waitress.utilities.Error` as `text/plain`. The JSON error contract has to
hold there too, and the body limit has to be enforced there: by the time Flask's
`MAX_CONTENT_LENGTH` refuses a body, waitress has already buffered all of it.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ErrorTask

from api.app import max_body_bytes
from api.errors import BODY_TOO_LARGE, HTTP_CODES, error_body
from clipmod.settings import Settings


class JsonErrorTask(ErrorTask):
    """`ErrorTask` with the API's JSON body in place of waitress' text/plain one.

    Overriding `execute` (the one method that renders the error) keeps waitress' own status
    line, `Connection: close` handling and write path; the parser's `Error` classes stay as
    they are, so every error waitress has or will add is covered, not just today's list.
    """

    def execute(self) -> None:
        error = self.request.error
        status, reason = error.code, error.reason
        code = HTTP_CODES.get(status, "http_error")
        if status == 501:
            # Waitress' only 501 is an unknown Transfer-Encoding: bad input, and our contract
            # is that input never causes a 5xx (platforms alert and retry on those).
            status, reason, code = 400, "Bad Request", "unsupported_transfer_encoding"
        message = BODY_TOO_LARGE if status == 413 else f"{error.reason}: {error.body}"
        body = json.dumps(error_body(code, message)).encode("utf-8")
        self.status = f"{status} {reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def _listeners(server: BaseWSGIServer | MultiSocketServer) -> list[BaseWSGIServer]:
    if isinstance(server, BaseWSGIServer):
        return [server]
    return [d for d in server.map.values() if isinstance(d, BaseWSGIServer)]


def create(
    app: Flask, settings: Settings, host: str, port: int, threads: int = 8, **adjustments: Any
) -> BaseWSGIServer | MultiSocketServer:
    """A bound, not yet running waitress server for `app`.

    `create_server` has no option for the channel class, and it builds its listeners (one per
    address `host` resolves to) itself, so the channel class is set on each listener it
    returns, before `run()` accepts the first connection. That is the whole override: no
    waitress module is patched, and other waitress servers in the process are unaffected.
    """
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="clipmod",
        # Waitress refuses `Content-Length >= max_request_body_size` from the headers alone,
        # before reading the body; +1 makes it refuse exactly what Flask would (`> limit`).
        max_request_body_size=max_body_bytes(settings) + 1,
        **adjustments,
    )
    for listener in _listeners(server):
        listener.channel_class = JsonErrorChannel
    return server
