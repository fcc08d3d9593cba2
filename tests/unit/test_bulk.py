"""`clipmod.bulk.insert_rows` stores what SQLAlchemy's own executemany stores, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
)
from sqlalchemy.orm import Session

from clipmod import bulk
from clipmod.actions import Action
from clipmod.models.base import enum_by_value
from tests.e2e.conftest import postgres_url  # noqa: F401

META = MetaData()
ROWS = Table(
    "bulk_rows",
    META,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), unique=True, nullable=False),
    Column("doc", JSON),
    Column("blob", LargeBinary),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("kind", enum_by_value(Action), nullable=False),
    Column("n", Integer, default=0),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bulk.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    eng = create_engine(url)
    META.create_all(eng)
    yield eng
    eng.dispose()


def row(key: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": key,
        "doc": [{"id": "weapons", "score": 0.391515, "top_prompt": "ein Messer 🔪 «knife»"}],
        "blob": bytes(range(256)),  # a NUL and every other byte
        "at": datetime(2026, 11, 28, 15, 9, 40, 528326, tzinfo=UTC),
        "flag": True,
        "kind": Action.REVIEW,
        "n": 7,
    }
    return {**base, **over}


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        out = {}
        for r in conn.execute(select(ROWS)).mappings():
            values = dict(r)
            values.pop("id")
            values["at"] = values["at"].replace(tzinfo=values["at"].tzinfo or UTC)  # SQLite: naive
            out[values.pop("key")] = values
        return out


def test_rows_read_back_as_executemany_stores_them(engine: Engine) -> None:
    variants = [
        {},
        {"doc": {"nested": {"list": [1, 2.5, None, "x"]}}, "kind": Action.BLOCK},
        {"doc": None, "blob": None, "flag": False, "kind": Action.ALLOW, "n": 0},
        {"at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=1)},
    ]
    with Session(engine) as session, session.begin():
        bulk.insert_rows(session, ROWS, [row(f"bulk-{k}", **v) for k, v in enumerate(variants)])
        session.execute(insert(ROWS), [row(f"orm-{k}", **v) for k, v in enumerate(variants)])
    got = stored(engine)
    assert len(got) == 2 * len(variants)
    for k in range(len(variants)):
        assert got[f"bulk-{k}"] == got[f"orm-{k}"]
    assert got["bulk-0"]["blob"] == bytes(range(256))
    assert got["bulk-0"]["doc"][0]["top_prompt"] == "ein Messer 🔪 «knife»"
    assert got["bulk-1"]["kind"] == Action.BLOCK


def test_a_taken_key_is_skipped_and_the_rest_land(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        bulk.insert_rows(session, ROWS, [row("a", n=1)])
    with Session(engine) as session, session.begin():
        bulk.insert_rows(session, ROWS, [row("a", n=2), row("b", n=3)])
        bulk.insert_rows(session, ROWS, [])
    assert {key: r["n"] for key, r in stored(engine).items()} == {"a": 1, "b": 3}


def test_rows_that_leave_out_a_defaulted_column_are_refused(engine: Engine) -> None:
    """Only on PostgreSQL would the default be skipped; refused on both, so a developer's
    SQLite tests catch it first."""
    short = row("c")
    del short["n"]
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(ValueError, match=r"leave out \['n'\]"),
    ):
        bulk.insert_rows(session, ROWS, [short])
