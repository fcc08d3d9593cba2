"""Many rows into one table in one statement: `INSERT … SELECT … FROM json_to_recordset(…)`.

Why: a worker writes a verdict and an embedding row for every item, 256 of each per batch on a
GPU. Through SQLAlchemy's `executemany`, psycopg sends one pipelined INSERT per row and dumps
every row's parameters in Python, and that was the largest share of a worker's GIL time at
that batch size. Here the rows travel as one JSON array and PostgreSQL unpacks them, so Python
does one `json.dumps` per batch. SQLite keeps `executemany`: it runs in-process and has no
such per-row protocol cost. Intake's group commit (`api.newitems`) uses the same statement
with RETURNING, on the driver's own cursor.

The statement is built from the table's own columns, so it cannot drift from the schema; a
column the rows leave out must have no Python-side default (it would be skipped here, where
SQLAlchemy's `executemany` would have filled it in), which `insert_rows` checks. One
difference from SQLAlchemy's JSON type: a None in a JSON column is stored as SQL NULL, not as
JSON `null`; both read back as None.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING of `rows` (dicts with the same keys) in the session's
    transaction."""
    if not rows:
        return
    keys = tuple(rows[0])
    _check(table, keys)  # on SQLite too, so a developer's quick tests catch it
    if session.get_bind().dialect.name != "postgresql":
        session.execute(sqlite_insert(table).on_conflict_do_nothing(), list(rows))
        return
    session.connection().exec_driver_sql(statement(table, keys), {"rows": payload(rows)})


def payload(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as the JSON array `statement` reads from its `%(rows)s` parameter."""
    return json.dumps(rows, default=_json_value, allow_nan=False, separators=(",", ":"))


@lru_cache(maxsize=32)
def _check(table: Table, keys: tuple[str, ...]) -> None:
    missing = [c.name for c in table.columns if c.name not in keys and c.default is not None]
    if missing:
        raise ValueError(f"rows for {table.name} leave out {missing}, which have defaults")


@lru_cache(maxsize=32)
def statement(table: Table, keys: tuple[str, ...], returning: str | None = None) -> str:
    """`INSERT … ON CONFLICT DO NOTHING [RETURNING …]` of rows with these keys, read from one
    `%(rows)s` parameter (`payload`). Its text is the same for any number of rows, so psycopg
    converts it once and prepares it on the server after a few uses."""
    _check(table, keys)
    columns = [table.c[key] for key in keys]
    # Each column's own PostgreSQL type (an enum stored as a string is its VARCHAR).
    record = ", ".join(f'"{c.name}" {c.type.compile(dialect=_PG)}' for c in columns)
    names = ", ".join(f'"{c.name}"' for c in columns)
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} '  # noqa: S608 - schema names
        f"FROM json_to_recordset(%(rows)s::json) AS r({record}) ON CONFLICT DO NOTHING"
        + (f' RETURNING "{table.c[returning].name}"' if returning else "")
    )


def _json_value(value: object) -> object:
    """What `json.dumps` cannot write itself: timestamps, bytes (bytea's hex input form), enums
    that are not already strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot store {type(value).__name__} through json_to_recordset")
