"""What request handlers need, built once per app and kept in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.keycache import KeyCache
from clipmod.settings import Settings
from clipmod.storage import BlobStore

KEY = "clipmod"


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    celery: Celery
    key_cache: KeyCache


def services() -> Services:
    return current_app.extensions[KEY]  # type: ignore[no-any-return]
