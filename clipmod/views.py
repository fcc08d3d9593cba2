"""The JSON shapes of items and verdicts that leave the service, by the API or by callback.

One definition for both, so a platform's callback handler and its API client parse the same
verdict (README "API" documents it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clipmod.models import Item, PolicyVersion, Verdict, as_utc


def iso(value: datetime) -> str:
    return as_utc(value).isoformat()


def verdict_view(verdict: Verdict, policy_version: PolicyVersion | None = None) -> dict[str, Any]:
    version = policy_version or verdict.policy_version
    return {
        "action": str(verdict.action),
        "audit": verdict.audit,
        "policy": {"name": version.name, "version": version.version},
        "model": {"name": verdict.model_name, "revision": verdict.model_revision},
        "categories": verdict.categories,
        "bank_match": verdict.bank_match,
        "scored_at": iso(verdict.scored_at),
    }


def error_view(item: Item) -> dict[str, str] | None:
    if not item.error_code:
        return None
    return {"code": item.error_code, "message": item.error_message or ""}


def input_view(item: Item) -> dict[str, bool]:
    """What the platform sent, without the content itself."""
    return {
        "text": item.text is not None,
        "image": item.image_url is None and item.image_sha256 is not None,
        "url": item.image_url is not None,
    }
