"""Fixtures for the dashboard's domain and view tests: people, scored items, a signed-in client.

Items are written as a worker would leave them (item, verdict, optionally a stored blob and
embeddings) so the review logic is tested against the real migrated database without a worker.
The browser tests (`test_browser.py`) use real processes instead (see `live.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings, keys, migrate
from clipmod.db import transaction
from clipmod.models import Item, ItemEmbedding, ItemStatus, Role, User, Verdict
from clipmod.review import users
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests.conftest import make_settings
from tests.dashboard import live
from tests.images import encode

PASSWORD = live.PASSWORD
LEASE = timedelta(minutes=5)
CATEGORIES = ("weapons", "drugs", "gore")


def categories(
    scores: dict[str, float], review_at: float = 0.5, block_at: float = 0.8
) -> list[dict[str, Any]]:
    out = []
    for cid in CATEGORIES:
        s = scores.get(cid, 0.01)
        action = "block" if s >= block_at else "review" if s >= review_at else "allow"
        out.append(
            {
                "id": cid,
                "score": s,
                "review_at": review_at,
                "block_at": block_at,
                "action": action,
                "top_prompt": f"a photo of {cid}",
                "source": "image",
            }
        )
    return out


MakeItem = Callable[..., str]


@pytest.fixture
def make_item(sessions: sessionmaker[Session], seeded: int, settings: Settings) -> MakeItem:
    """Insert a scored item; returns its id. `scores` picks the verdict (review by default)."""
    blobs = BlobStore(settings.blob_dir)

    def add(
        tenant: str = "acme",
        scores: dict[str, float] | None = None,
        *,
        audit: bool = False,
        text: str | None = None,
        image: Image.Image | bytes | None = None,
        meta: dict[str, Any] | None = None,
        embedding: np.ndarray | None = None,
        text_embedding: Sequence[np.ndarray] | None = None,
        revision: str = "test-rev",
    ) -> str:
        cats = categories(scores if scores is not None else {"weapons": 0.6})
        worst = max(("allow", "review", "block").index(c["action"]) for c in cats)
        action = "review" if audit else ("allow", "review", "block")[worst]
        with transaction(sessions) as session:
            tenant_id = keys.get_or_create_tenant(session, tenant).id
            digest = fmt = None
            if image is not None:
                data = image if isinstance(image, bytes) else encode(image, "PNG")
                digest = blobs.put(data)
                fmt = "jpeg" if data.startswith(b"\xff\xd8\xff") else "png"
            item = Item(
                tenant_id=tenant_id,
                status=ItemStatus.SCORED,
                text=text,
                meta=meta,
                image_sha256=digest,
                image_format=fmt,
                image_width=64 if digest else None,
                image_height=64 if digest else None,
            )
            session.add(item)
            session.flush()
            session.add(
                Verdict(
                    item_id=item.id,
                    policy_version_id=seeded,
                    action=action,
                    categories=cats,
                    audit=audit,
                    model_name="clipmod-demo-clip",
                    model_revision=revision,
                )
            )
            if embedding is not None or text_embedding is not None:
                text_rows = None if text_embedding is None else np.asarray(text_embedding)
                dim = len(embedding if embedding is not None else text_rows[0])  # type: ignore[index]
                session.add(
                    ItemEmbedding(
                        item_id=item.id,
                        model_revision=revision,
                        dim=dim,
                        image=None if embedding is None else embeddings.to_bytes(embedding[None]),
                        text=None if text_rows is None else embeddings.to_bytes(text_rows),
                        text_windows=0 if text_rows is None else len(text_rows),
                    )
                )
            return item.id

    return add


@dataclass
class People:
    sessions: sessionmaker[Session]

    def add(self, email: str, role: str = "moderator", tenants: Sequence[str] = ("acme",)) -> User:
        with transaction(self.sessions) as session:
            for name in tenants:
                keys.get_or_create_tenant(session, name)
            return users.create_user(session, email, PASSWORD, Role(role), tenants)


@pytest.fixture
def people(sessions: sessionmaker[Session]) -> People:
    return People(sessions)


@pytest.fixture
def alice(people: People) -> User:
    return people.add("alice@example.com")


@pytest.fixture
def bob(people: People) -> User:
    return people.add("bob@example.com")


@pytest.fixture
def admin(people: People) -> User:
    return people.add("root@example.com", "admin", ())


def csrf_of(client: FlaskClient) -> str:
    """The CSRF token a page would embed, read from the login form."""
    html = client.get("/dashboard/login").get_data(as_text=True)
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the real form; returns the session's CSRF token for later posts."""
    token = csrf_of(client)
    resp = client.post(
        "/dashboard/login", data={"email": email, "password": password, "csrf_token": token}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    page = client.get("/dashboard/").get_data(as_text=True)
    marker = 'name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


# ----- the browser tests: a real server, a real worker, real Chromium -----------------------


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.Live]:
    """One running service per test module (tests keep apart by using their own tenants),
    with the review-heavy demo policy active so uploads wait for people. Image URLs may point
    at 127.0.0.1 (an image host a test starts and stops: tests/dashboard/test_failures_browser)."""
    data_dir = tmp_path_factory.mktemp("live")
    settings = make_settings(data_dir, fetch_allow="127.0.0.1/32")
    migrate.upgrade(settings)
    stack = live.start(settings, data_dir)
    try:
        stack.publish("ops", live.review_policy_text())
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(live.CHROMIUM).exists():
        pytest.fail(f"{live.CHROMIUM} is missing: `.ci/services install` installs Chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=live.CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """Fresh browser contexts (separate cookie jars: separate people) at 1280x800."""
    contexts: list[BrowserContext] = []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def tenant() -> str:
    """A tenant of this test's own, so tests sharing a running service never see each other."""
    return f"t{uuid.uuid4().hex[:8]}"
