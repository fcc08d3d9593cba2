"""One log line and one set of metrics per request, a request id on every answer, `/metrics`.

An operator reading the log should see each request once, with what matters to find it again:
method, path, status, milliseconds, tenant and a request id. The id is echoed in `X-Request-Id`
so a platform can quote it in a support ticket; a well-formed id the client (or a proxy in
front of us) sent is kept, so one id follows the request across systems. Anything else is
replaced: a header value goes into our logs, so it must not be able to forge log lines.

Metrics: waitress runs the app in threads of one process, so the default registry is enough
(no multiprocess mode). Routes are labelled by their rule (`/v1/items/<item_id>`), never the
raw path, so an id cannot blow up the label set. `/metrics` needs an admin key: the house rule
is that only health checks are unauthenticated (Prometheus sends the key with
`authorization: {credentials: ...}` in its scrape config).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from api.auth import require_admin

log = logging.getLogger("api.access")

REQUEST_ID = "X-Request-Id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")

REQUESTS = Counter(
    "clipmod_http_requests",
    "API requests answered, by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "clipmod_http_request_seconds",
    "Seconds from the app receiving a request to its answer, by route and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    require_admin()
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def _new_request_id() -> str:
    """32 hex digits from the process's Mersenne Twister, not the kernel: a request id only has
    to be unique enough to find a line again, and `uuid4` asks the kernel for randomness with
    the GIL released, a context switch under load on every request."""
    return f"{random.getrandbits(128):032x}"


def _start() -> None:
    g.started = time.perf_counter()
    sent = request.headers.get(REQUEST_ID, "")
    g.request_id = sent if _WELL_FORMED.fullmatch(sent) else _new_request_id()


@functools.lru_cache(maxsize=1024)
def _series(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    """The request's counter and histogram children. `labels()` takes the metric's lock and
    builds its key on every call; the label sets are few (routes x methods x statuses), so
    each child is looked up once. The bound only guards against a client inventing methods."""
    return REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, method)


def _finish(response: Response) -> Response:
    # The request and `g` once each: every attribute read through Flask's proxies is a
    # context-variable look-up, and this runs after every request the app answers.
    req, ctx = request._get_current_object(), g._get_current_object()  # type: ignore[attr-defined]
    started = ctx.get("started")
    elapsed = time.perf_counter() - started if started is not None else 0.0
    request_id = ctx.get("request_id") or _new_request_id()
    response.headers[REQUEST_ID] = request_id
    route = req.url_rule.rule if req.url_rule is not None else "unmatched"
    method, path, status = req.method, req.path, response.status_code
    requests, latency = _series(route, method, status)
    requests.inc()
    latency.observe(elapsed)
    tenant = ctx.get("tenant")
    tenant_name = tenant.name if tenant is not None else None
    log.info(
        "%s %s %d %.1fms tenant=%s request_id=%s",
        method,
        path,
        status,
        elapsed * 1000,
        tenant_name or "-",
        request_id,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "ms": round(elapsed * 1000, 2),
            "tenant": tenant_name,
            "request_id": request_id,
        },
    )
    return response


def configure_observability(app: Flask) -> None:
    # First of the app-level hooks, so `OPTIONS` answers and auth failures are counted too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.register_blueprint(bp)
