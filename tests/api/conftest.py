from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers.pipeline import Scorer


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def scorer(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> Iterator[Scorer]:  # type: ignore[no-untyped-def]
    """Scores items in-process, so API tests can read real verdicts without a worker."""
    s = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    yield s
    s.close()
