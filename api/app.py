"""The Flask app factory, built from small named steps (after Indico's `make_app`)."""

from __future__ import annotations

from flask import Flask

from api import dashboard, health, items, policies
from api.errors import register_error_handlers
from api.services import KEY, Services
from clipmod import settings as settings_mod
from clipmod.db import make_engine, make_sessionmaker
from clipmod.queue import make_celery
from clipmod.settings import Settings
from clipmod.storage import BlobStore

# Multipart and base64 framing around the largest image we accept, plus the longest text.
_BODY_OVERHEAD = 256 * 1024


def configure_limits(app: Flask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = (
        settings.max_upload_bytes * 4 // 3 + settings.max_text_chars * 4 + _BODY_OVERHEAD
    )
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


def add_dashboard(app: Flask, settings: Settings) -> None:
    """The moderators' browser app under /dashboard (sessions, CSRF, its own error pages)."""
    dashboard.init_app(app, settings)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or settings_mod.load()
    app = Flask("clipmod")
    configure_limits(app, settings)
    configure_services(app, settings)
    register_error_handlers(app)
    add_blueprints(app)
    add_dashboard(app, settings)
    return app
