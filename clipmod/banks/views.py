"""The JSON shapes of banks, versions, entries and changes: one place for the CLI's `--json`
and the API, so the two can never describe a bank differently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from clipmod.banks.registry import Change, latest, versions_of
from clipmod.models import Bank, BankEntry, BankVersion


def version_json(version: BankVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "entries": version.entries,
        "added": version.added,
        "removed": version.removed,
        "note": version.note,
        "author": version.author,
        "created_at": _iso(version.created_at),
    }


def entry_json(entry: BankEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "source": entry.source,
        "item_id": entry.item_id,
        "image_sha256": entry.image_sha256,
        "label": entry.label,
        "added_in": entry.added_in,
        "removed_in": entry.removed_in,
        "created_at": _iso(entry.created_at),
    }


def change_json(bank: Bank, change: Change) -> dict[str, Any]:
    """What a change made, for `clipmod banks add|remove --json` and the API."""
    return {
        "bank": bank.name,
        "version": change.version.version,
        "label": f"{bank.name}@{change.version.version}",
        "entries": change.version.entries,
        "added": change.added,
        "removed": change.removed,
        "skipped": change.skipped,
    }


def bank_json(session: Session, bank: Bank, *, history: bool = False) -> dict[str, Any]:
    """The one JSON shape of a bank, shared by `clipmod banks … --json` and the API."""
    newest = latest(session, bank)
    body: dict[str, Any] = {
        "name": bank.name,
        "kind": bank.kind.value,
        "model_revision": bank.model_revision,
        "dim": bank.dim,
        "description": bank.description,
        "version": newest.version if newest else 0,
        "label": f"{bank.name}@{newest.version if newest else 0}",
        "entries": newest.entries if newest else 0,
        "created_by": bank.created_by,
        "created_at": _iso(bank.created_at),
    }
    if history:
        body["versions"] = [version_json(v) for v in versions_of(session, bank)]
    return body


def _iso(moment: datetime) -> str:
    """SQLite hands back naive datetimes; every timestamp we write is UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()
