"""Fixtures for the platform integration tests: loopback servers, signing, fast retry rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from clipmod import secretbox, tenants
from clipmod.db import transaction
from clipmod.keys import get_or_create_tenant
from clipmod.models import SecretPurpose
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.conftest import make_settings

# The production configuration's fixtures (PostgreSQL + Redis), shared with tests/e2e.
from tests.e2e.conftest import postgres_url, production_settings  # noqa: F401
from tests.platform.servers import ImageHost, Receiver
from workers.pipeline import Scorer

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# Short everything, so retries, dead letters and timeouts happen within a test.
FAST = {
    "fetch_allow": "127.0.0.1/32",
    "fetch_connect_timeout_s": "1",
    "fetch_read_timeout_s": "1",
    "fetch_total_timeout_s": "2",
    "delivery_timeout_s": "1",
    "delivery_backoff_s": "0.1",
    "delivery_backoff_max_s": "0.2",
    "delivery_retry_for_s": "2",
    "delivery_poll_s": "0.1",
    "max_upload_bytes": str(1024 * 1024),
}


@pytest.fixture
def png() -> bytes:
    return (SAMPLES / "red-knife.png").read_bytes()


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """The test database and data dir of `settings`, with the short timeouts above."""
    return make_settings(settings.data_dir, **FAST)


@pytest.fixture
def image_host(png: bytes) -> Iterator[ImageHost]:
    server = ImageHost(png)
    yield server
    server.stop()


@pytest.fixture
def box(fast_settings: Settings) -> secretbox.SecretBox:
    return secretbox.load(fast_settings)


def add_secret(
    sessions: sessionmaker[Session], box: secretbox.SecretBox, tenant: str, purpose: str
) -> str:
    with transaction(sessions) as session:
        row = get_or_create_tenant(session, tenant)
        return tenants.create_secret(session, box, row.id, SecretPurpose(purpose)).secret


def set_callback(
    sessions: sessionmaker[Session], box: secretbox.SecretBox, tenant: str, url: str
) -> str:
    """Point `tenant`'s callbacks at `url`; returns the callback secret it was given."""
    with transaction(sessions) as session:
        row = get_or_create_tenant(session, tenant)
        new = tenants.set_callback(
            session, box, row, url, tenants.netguard.AddressPolicy.parse("127.0.0.1/32")
        )
        assert new is not None
        return new.secret


@pytest.fixture
def receiver_factory() -> Iterator[type[Receiver]]:
    started: list[Receiver] = []

    class Tracked(Receiver):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            started.append(self)

    yield Tracked
    for server in started:
        server.stop()


@pytest.fixture
def fast_client(fast_settings: Settings) -> Iterator[FlaskClient]:
    """The API with the short timeouts and loopback allowlisted (same database as `client`)."""
    from api import create_app

    app = create_app(fast_settings)
    yield app.test_client()
    app.extensions["clipmod"].engine.dispose()


@pytest.fixture
def scorer(
    fast_settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> Iterator[Scorer]:  # type: ignore[no-untyped-def]
    """The worker's batch pipeline in-process, with the test's fetch allowlist."""
    s = Scorer(fast_settings, runtime, sessions, BlobStore(fast_settings.blob_dir))
    yield s
    s.close()
