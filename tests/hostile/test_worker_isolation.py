"""One poisoned item fails alone: its batch-mates are scored, and nothing goes back to the queue.

The intake now refuses these files, so they are written straight into the blob store, as a
file that predates the stricter intake (or one written by another tool) would be.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.models import Item
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests import images
from tests.hostile import samples
from tests.unit.test_pipeline import add_item
from workers.pipeline import Scorer


@pytest.fixture
def scorer(
    settings: Settings, sessions: sessionmaker[Session], runtime: ClipRuntime, seeded: int
) -> Iterator[Scorer]:
    s = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    yield s
    s.close()


def outcomes(sessions: sessionmaker[Session], ids: list[str]) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        rows = session.scalars(select(Item).where(Item.id.in_(ids)))
        return {i.id: (i.status.value, i.error_code) for i in rows}


def test_a_poisoned_image_fails_alone(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    innocent = [
        add_item(settings, sessions, text=f"a photo of a cup, number {i}") for i in range(3)
    ]
    innocent += [
        add_item(settings, sessions, image=images.solid(colour=(10, 200, 30))),
        add_item(settings, sessions, image=samples.png16(), text="a gradient"),
    ]
    poisoned = add_item(settings, sessions, image=samples.exif_poison_jpeg(), text="hello")
    requeued = scorer.score_batch([*innocent[:2], poisoned, *innocent[2:]])
    assert requeued == []
    result = outcomes(sessions, [*innocent, poisoned])
    assert {result[i] for i in innocent} == {("scored", None)}
    assert result[poisoned] == ("failed", "corrupt_image")


def test_an_unexpected_error_fails_its_item_with_prepare_error(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Not an image problem: the stored blob is unreadable (a directory in its place)."""
    good = add_item(settings, sessions, image=images.solid())
    data = images.solid(colour=(1, 2, 3))
    broken = add_item(settings, sessions, image=data)
    store = BlobStore(settings.blob_dir)
    with sessions() as session:
        digest = session.get(Item, broken).image_sha256  # type: ignore[union-attr]
    path = store.path(str(digest))
    path.unlink()
    path.mkdir()
    try:
        assert scorer.score_batch([good, broken]) == []
    finally:
        shutil.rmtree(path)
    assert outcomes(sessions, [good, broken]) == {
        good: ("scored", None),
        broken: ("failed", "prepare_error"),
    }


@pytest.mark.parametrize("name", ["png-1x100000", "png-1x5000", "png-bomb-20000x20000"])
def test_oversized_shapes_fail_from_the_header_in_the_worker(
    scorer: Scorer, settings: Settings, sessions: sessionmaker[Session], name: str
) -> None:
    build, _, code = samples.REFUSED[name]
    good = add_item(settings, sessions, text="a photo of a cup")
    bad = add_item(settings, sessions, image=build())
    assert scorer.score_batch([good, bad]) == []
    assert outcomes(sessions, [good, bad]) == {good: ("scored", None), bad: ("failed", code)}
