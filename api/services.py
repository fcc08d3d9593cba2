"""What request handlers need, built once per app and kept in `app.extensions`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from celery import Celery
from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.groupcommit import GroupCommit
from api.keycache import KeyCache
from clipmod import secretbox
from clipmod.settings import Settings
from clipmod.storage import BlobStore

if TYPE_CHECKING:
    from api.newitems import NewUpload

KEY = "clipmod"


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    celery: Celery
    key_cache: KeyCache
    box: secretbox.SecretBox | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # New uploads share INSERTs (`api.groupcommit`); `api.app` binds it to these services.
    intake: GroupCommit[NewUpload, bool] = field(init=False)


def services() -> Services:
    return current_app.extensions[KEY]  # type: ignore[no-any-return]


def secret_box() -> secretbox.SecretBox:
    """Loaded on first use: on the embedded default that may create the key file, which an
    API that never handles a signing secret has no reason to do."""
    svc = services()
    with svc.lock:
        if svc.box is None:
            svc.box = secretbox.load(svc.settings)
        return svc.box
