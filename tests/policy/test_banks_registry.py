"""Bank versions in the database: every change a new immutable version, every refusal clean."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import keys
from clipmod.actions import Action
from clipmod.banks import registry
from clipmod.banks.registry import NewEntry
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import BankEntry, BankVersion, Item
from tests.policy.conftest import StoreFn, unit_rows


@pytest.fixture
def bank_name(sessions: sessionmaker[Session], runtime: Any) -> str:
    with transaction(sessions) as session:
        registry.create_bank(
            session,
            "known-bad",
            "block",
            model_revision=runtime.revision,
            dim=runtime.dim,
            author="t",
        )
    return "known-bad"


def upload(runtime: Any, seed: int, sha: str) -> NewEntry:
    row = unit_rows(np.random.default_rng(seed), 1, runtime.dim)[0]
    return NewEntry(row, runtime.revision, "upload", image_sha256=sha)


def change(sessions: sessionmaker[Session], fn: Any, *args: Any) -> registry.Change:
    with transaction(sessions) as session:
        bank = registry.get_bank(session, "known-bad", lock=True)
        return fn(session, bank, *args, author="t")  # type: ignore[no-any-return]


def test_every_change_is_a_version_and_every_version_stays_readable(
    sessions: sessionmaker[Session], runtime: Any, bank_name: str, store: StoreFn
) -> None:
    rng = np.random.default_rng(0)
    items = [store("acme", image=unit_rows(rng, 1, runtime.dim)[0]) for _ in range(3)]
    with sessions() as session:
        bank = registry.get_bank(session, bank_name)
        v1 = registry.from_items(session, bank, items[:2])
    one = change(sessions, registry.add_entries, [*v1, upload(runtime, 1, "a" * 64)])
    with sessions() as session:
        more = registry.from_items(session, registry.get_bank(session, bank_name), items[2:])
    two = change(sessions, registry.add_entries, more)
    three = change(sessions, registry.remove_entries, [one.added[0], one.added[2]])
    assert [c.version.version for c in (one, two, three)] == [1, 2, 3]
    assert [c.version.entries for c in (one, two, three)] == [3, 4, 2]
    with sessions() as session:
        bank = registry.get_bank(session, bank_name)
        ids = {v: registry.snapshot(session, bank, v).entry_ids.tolist() for v in (0, 1, 2, 3)}
        assert ids == {
            0: [],
            1: one.added,
            2: one.added + two.added,
            3: [one.added[1], two.added[0]],
        }
        # A worker reading incrementally sees exactly what a fresh read sees.
        base = registry.snapshot(session, bank, 1)
        for v in (2, 3):
            step = registry.advance(session, bank, base, v)
            fresh = registry.snapshot(session, bank, v)
            assert step.entry_ids.tolist() == fresh.entry_ids.tolist()
            np.testing.assert_array_equal(step.embeddings, fresh.embeddings)
            base = step
        snap = registry.snapshot(session, bank)
        assert (snap.version, snap.kind, snap.label) == (3, Action.BLOCK, "known-bad@3")
        np.testing.assert_allclose(np.linalg.norm(snap.embeddings, axis=1), 1.0, atol=2e-3)


def test_adding_what_is_already_there_makes_no_version(
    sessions: sessionmaker[Session], runtime: Any, bank_name: str
) -> None:
    first = change(sessions, registry.add_entries, [upload(runtime, 1, "a" * 64)])
    again = change(
        sessions, registry.add_entries, [upload(runtime, 2, "a" * 64), upload(runtime, 3, "a" * 64)]
    )
    assert again.version.version == first.version.version == 1
    assert again.skipped == ["a" * 64, "a" * 64] and again.added == []


def count(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(BankVersion)) or 0,
            session.scalar(select(func.count()).select_from(BankEntry)) or 0,
        )


def test_refusals_name_the_problem_and_change_nothing(
    sessions: sessionmaker[Session], runtime: Any, bank_name: str, store: StoreFn
) -> None:
    rng = np.random.default_rng(1)
    good = store("acme", image=unit_rows(rng, 1, runtime.dim)[0])
    text_only = store("acme", text=unit_rows(rng, 2, runtime.dim))
    with transaction(sessions) as session:
        queued = Item(tenant_id=keys.get_or_create_tenant(session, "acme").id)
        session.add(queued)
        session.flush()
        queued_id = queued.id
    change(sessions, registry.add_entries, [upload(runtime, 1, "a" * 64)])
    before = count(sessions)
    other = NewEntry(unit_rows(rng, 1, runtime.dim)[0], "0123abcd", "upload", image_sha256="b" * 64)
    cases: list[tuple[Any, str, str]] = [
        ([good, "no-such-item"], "item_not_found", "'no-such-item' not found"),
        ([good, queued_id], "item_not_scored", "not been scored"),
        ([text_only], "item_has_no_image", "no image"),
    ]
    for ids, code, words in cases:
        with transaction(sessions) as session:
            bank = registry.get_bank(session, bank_name)
            with pytest.raises(ClipmodError) as err:
                registry.from_items(session, bank, ids)
        assert err.value.code == code and words in err.value.message
    with pytest.raises(ClipmodError) as err:
        change(sessions, registry.add_entries, [upload(runtime, 5, "c" * 64), other])
    assert err.value.code == "bank_model_mismatch" and err.value.status == 422
    assert "0123abcd" in err.value.message and runtime.revision in err.value.message
    for fn, arg, code in (
        (registry.add_entries, [], "nothing_to_add"),
        (registry.remove_entries, [999], "bank_entry_not_found"),
        (registry.remove_entries, [], "nothing_to_remove"),
    ):
        with pytest.raises(ClipmodError) as err:
            change(sessions, fn, arg)
        assert err.value.code == code
    assert count(sessions) == before


def test_an_item_embedded_by_another_model_is_refused_naming_both_revisions(
    sessions: sessionmaker[Session], runtime: Any, bank_name: str
) -> None:
    from clipmod import embeddings
    from clipmod.models import ItemEmbedding

    with transaction(sessions) as session:
        item = Item(tenant_id=keys.get_or_create_tenant(session, "acme").id)
        session.add(item)
        session.flush()
        session.add(
            ItemEmbedding(
                item_id=item.id,
                model_revision="feedbeef0001",
                dim=runtime.dim,
                image=embeddings.to_bytes(np.ones((1, runtime.dim))),
                text_windows=0,
            )
        )
        item_id = item.id
    with pytest.raises(ClipmodError) as err, sessions() as session:
        registry.from_items(session, registry.get_bank(session, bank_name), [item_id])
    assert err.value.code == "bank_model_mismatch"
    assert "feedbeef0001" in err.value.message and runtime.revision in err.value.message


def test_create_refuses_bad_names_kinds_and_duplicates(
    sessions: sessionmaker[Session], bank_name: str
) -> None:
    for name, kind, code in (
        ("Bad Name", "block", "invalid_bank_name"),
        ("ok", "delete", "invalid_bank_kind"),
        (bank_name, "allow", "bank_exists"),
    ):
        with pytest.raises(ClipmodError) as err, transaction(sessions) as session:
            registry.create_bank(session, name, kind, model_revision="r", dim=4, author="t")
        assert err.value.code == code
    with pytest.raises(ClipmodError) as err, sessions() as session:
        registry.resolve_version(session, registry.get_bank(session, bank_name), 3)
    assert err.value.code == "bank_version_not_found"
    with pytest.raises(ClipmodError) as err, sessions() as session:
        registry.get_bank(session, "nope")
    assert (err.value.code, err.value.status) == ("bank_not_found", 404)
