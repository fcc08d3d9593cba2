"""Fixtures for the policy tests, on top of the root conftest's migrated database and model.

Tests that depend on what a prompt means compute their expectations from the model at hand
rather than assuming a particular one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from api.policies import RUNTIME_KEY
from clipmod import embeddings, keys
from clipmod.db import transaction
from clipmod.models import Item, ItemEmbedding
from clipmod.settings import Settings


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, runtime: Any) -> None:
    """`clipmod policy …` against this test's database, reusing the session's loaded model."""
    monkeypatch.setenv("CLIPMOD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CLIPMOD_MODEL", settings.model)
    monkeypatch.setenv("CLIPMOD_DEVICE", "cpu")
    monkeypatch.delenv("CLIPMOD_DATABASE_URL", raising=False)
    monkeypatch.setattr("cli.policy.load_runtime", lambda _settings: runtime)


def policy_text(
    *,
    name: str = "test",
    model: str = "",
    weapons: tuple[float, float] = (0.5, 0.8),
    drugs: tuple[float, float] = (0.3, 0.9),
    extra: str = "",
) -> str:
    """A two-category policy (contrast + similarity) in words every test model knows."""
    return (
        f"name: {name}\n" + (f"model: {model}\n" if model else "") + "categories:\n"
        "  - id: weapons\n"
        "    mode: contrast\n"
        "    prompts: [a photo of a knife, a photo of a gun]\n"
        "    negatives: [a photo of a cup, a photo of a flower, a photo of a tree]\n"
        f"    review_at: {weapons[0]}\n"
        f"    block_at: {weapons[1]}\n"
        "  - id: drugs\n"
        "    mode: similarity\n"
        "    prompts: [a photo of a pill, a photo of a syringe]\n"
        f"    review_at: {drugs[0]}\n"
        f"    block_at: {drugs[1]}\n" + extra
    )


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


StoreFn = Callable[..., str]


@pytest.fixture
def store(sessions: sessionmaker[Session], runtime: Any) -> StoreFn:
    """Insert an item and its stored embeddings as the worker would; returns the item id."""

    def add(
        tenant: str,
        image: np.ndarray | None = None,
        text: Sequence[np.ndarray] | np.ndarray | None = None,
        **item: Any,
    ) -> str:
        with transaction(sessions) as session:
            row = Item(tenant_id=keys.get_or_create_tenant(session, tenant).id, **item)
            session.add(row)
            session.flush()
            text_rows = None if text is None else np.asarray(text, dtype=np.float32)
            session.add(
                ItemEmbedding(
                    item_id=row.id,
                    model_revision=runtime.revision,
                    dim=runtime.dim,
                    image=None if image is None else embeddings.to_bytes(image[None, :]),
                    text=None if text_rows is None else embeddings.to_bytes(text_rows),
                    text_windows=0 if text_rows is None else len(text_rows),
                )
            )
            return row.id

    return add


@pytest.fixture
def admin(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as session:
        key = keys.create_key(session, "ops", admin=True)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def platform(sessions: sessionmaker[Session]) -> dict[str, str]:
    """A platform (non-admin) key of tenant acme."""
    with transaction(sessions) as session:
        key = keys.create_key(session, "acme")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def loaded(app: Flask, runtime: Any) -> Flask:
    """The session's model handed to the app, as its first lint/backtest would load it."""
    app.extensions[RUNTIME_KEY] = runtime
    return app
