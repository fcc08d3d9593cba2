from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers.pipeline import Scorer


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
