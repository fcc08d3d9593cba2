"""Declarative base and column helpers shared by every table."""

from __future__ import annotations

import enum
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Enum, MetaData
from sqlalchemy.orm import DeclarativeBase

# Explicit constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every timestamp we write is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Kernel randomness for ids, drawn a page at a time: 256 ids of 16 bytes.
_ID_BYTES, _IDS_PER_DRAW = 16, 256
_random_ids: list[bytes] = []


def _refill_ids() -> None:
    page = os.urandom(_ID_BYTES * _IDS_PER_DRAW)
    _random_ids.extend(page[i : i + _ID_BYTES] for i in range(0, len(page), _ID_BYTES))


# A forked child must never hand out the ids left in its parent's page.
os.register_at_fork(after_in_child=_random_ids.clear)


def new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as `uuid.uuid4().hex` makes them.

    Why not `uuid4()` itself: it asks the kernel for 16 bytes every time, in a system call
    that releases the GIL, and intake makes an id per upload on a request thread: on a busy
    API process, a hand-off to another thread and back. One `os.urandom` call per 256 ids is
    the same randomness. `list.pop` is atomic under the GIL, so threads never share an id; two
    threads that find the list empty at once both refill it, which only draws a page more.
    """
    while True:
        try:
            raw = _random_ids.pop()
        except IndexError:
            _refill_ids()
            continue
        return uuid.UUID(bytes=raw, version=4).hex


def Timestamp() -> DateTime:  # noqa: N802 - reads like a column type at the call site
    return DateTime(timezone=True)


def enum_by_value(enum_cls: type[enum.Enum], length: int = 16) -> Any:
    """Store an enum's value (not its name) as a plain string column, portable across databases."""
    return Enum(
        enum_cls,
        values_callable=lambda cls: [member.value for member in cls],
        native_enum=False,
        length=length,
        validate_strings=True,
    )
