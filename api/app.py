"""The Flask app factory, built from small named steps (after Indico's `make_app`)."""

from __future__ import annotations

from flask import Flask

from api import health, items, policies
from api.errors import register_error_handlers
from api.services import KEY, Services
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


def configure_limits(app: Flask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes(settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]


def configure_services(app: Flask, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    app.extensions[KEY] = Services(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        blobs=BlobStore(settings.blob_dir),
        celery=make_celery(settings),
    )


def add_blueprints(app: Flask) -> None:
    app.register_blueprint(health.bp)
    app.register_blueprint(items.bp)
    app.register_blueprint(policies.bp)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or settings_mod.load()
    app = Flask("clipmod")
    configure_limits(app, settings)
    configure_services(app, settings)
    register_error_handlers(app)
    add_blueprints(app)
    return app
