"""The API's JSON shapes for items and verdicts (documented in README "API")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import url_for

from clipmod.models import Item, Verdict


def iso(value: datetime) -> str:
    """SQLite hands back naive datetimes; every timestamp we write is UTC."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "action": str(verdict.action),
        "audit": verdict.audit,
        "policy": {
            "name": verdict.policy_version.name,
            "version": verdict.policy_version.version,
        },
        "model": {"name": verdict.model_name, "revision": verdict.model_revision},
        "categories": verdict.categories,
        "bank_match": verdict.bank_match,
        "scored_at": iso(verdict.scored_at),
    }


def item_json(item: Item) -> dict[str, Any]:
    error = (
        {"code": item.error_code, "message": item.error_message or ""} if item.error_code else None
    )
    return {
        "id": item.id,
        "external_id": item.external_id,
        "status": str(item.status),
        "created_at": iso(item.created_at),
        "verdict": verdict_json(item.verdict) if item.verdict is not None else None,
        "error": error,
        "links": {"self": url_for("items.get_item", item_id=item.id)},
    }
