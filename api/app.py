"""The Flask app factory, built from small named steps (after Indico's `make_app`)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.formparser import FormDataParser

from api import (
    admin,
    banks,
    dashboard,
    decisions,
    deliveries,
    health,
    items,
    limits,
    newitems,
    openapi,
    policies,
    search,
    tenant,
    webhooks,
)
from api.errors import register_error_handlers
from api.groupcommit import GroupCommit
from api.keycache import KeyCache
from api.observability import configure_observability
from api.services import KEY, Services
from api.validation import loads_strict
from clipmod import settings as settings_mod
from clipmod.db import make_engine, make_sessionmaker
from clipmod.queue import make_celery
from clipmod.settings import Settings
from clipmod.storage import BlobStore

# Multipart framing and metadata around the largest image we accept, plus the longest text.
_BODY_OVERHEAD = 256 * 1024


def max_body_bytes(settings: Settings) -> int:
    """The largest request body: Flask's `MAX_CONTENT_LENGTH` and waitress' limit both use it.

    The image may arrive as base64 wrapped in lines (accepted since `openssl base64` and GNU
    `base64` print that), so its share is sized for the widest common form: 64-column lines
    ending in CRLF, which a JSON string spells `\\r\\n`: 68 bytes for every 64 characters.
    """
    base64_chars = -(-settings.max_upload_bytes // 3) * 4
    wrapped = -(-base64_chars // 64) * 68
    return wrapped + settings.max_text_chars * 4 + _BODY_OVERHEAD


class StrictFormDataParser(FormDataParser):
    """Werkzeug's parser turns a malformed multipart body into an empty form (`silent=True`).

    An empty form would then be refused as `nothing_to_score`, which sends a client hunting for
    a missing field when its body framing is broken. Parsing loudly lets intake say so.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["silent"] = False
        super().__init__(*args, **kwargs)


class ApiRequest(Request):
    form_data_parser_class = StrictFormDataParser


class StrictJSONProvider(DefaultJSONProvider):
    """Every `get_json` in the app refuses NaN/Infinity and survives deep nesting as bad JSON.

    Python's `json` accepts NaN (PostgreSQL's JSON does not) and raises `RecursionError`, not
    `ValueError`, on deep input, which `get_json(silent=True)` would let escape as a 500.
    """

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_strict(s)


def configure_limits(app: Flask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes(settings)


def configure_parsing(app: Flask) -> None:
    app.request_class = ApiRequest
    app.json = StrictJSONProvider(app)
    # App-level, so it runs before the blueprints' auth hooks.
    app.before_request(answer_options)


def answer_options() -> Response | None:
    """`OPTIONS` on a known route: 204 and `Allow`, without a key and without a body.

    A JSON API has nothing to say in an OPTIONS body, and Flask's default answer is an empty
    `text/html` document. It needs no key: the methods of a public route are no secret, and a
    CORS preflight never carries credentials. Unknown routes fall through to the JSON 404.
    """
    if request.method != "OPTIONS" or request.routing_exception is not None:
        return None
    response = current_app.make_default_options_response()
    response.status_code = 204
    del response.headers["Content-Type"]
    return response


def configure_services(app: Flask, settings: Settings) -> None:
    # No ping before each checkout (a round trip per request): after a database restart the
    # first use of a stale connection fails, SQLAlchemy drops the whole pool, and that one
    # request is a retryable 503 `database_unavailable`.
    # A pool at least as large as waitress' request threads: overflow connections are closed
    # on return, so a smaller pool reconnects to the database under load, request after request.
    engine = make_engine(settings.database_url, pool_pre_ping=False, pool_size=16)
    app.extensions[KEY] = svc = Services(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        blobs=BlobStore(settings.blob_dir),
        celery=make_celery(settings),
        key_cache=KeyCache(settings.key_cache_s),
    )
    svc.intake = GroupCommit(newitems.Writer(svc.engine, svc.celery, svc.blobs))


def add_blueprints(app: Flask) -> None:
    app.register_blueprint(health.bp)
    app.register_blueprint(items.bp)
    app.register_blueprint(policies.bp)
    app.register_blueprint(decisions.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(deliveries.bp)
    app.register_blueprint(tenant.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(banks.bp)
    app.register_blueprint(search.bp)


def add_dashboard(app: Flask, settings: Settings) -> None:
    """The moderators' browser app under /dashboard (sessions, CSRF, its own error pages)."""
    dashboard.init_app(app, settings)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or settings_mod.load()
    app = Flask("clipmod")
    configure_limits(app, settings)
    configure_parsing(app)
    configure_observability(app)
    configure_services(app, settings)
    limits.configure(app, settings)
    register_error_handlers(app)
    add_blueprints(app)
    add_dashboard(app, settings)
    return app
