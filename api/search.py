"""`GET /v1/search?text=…` / `?like=<item id>`: stored items by meaning; admin keys only.

It reads the traffic store (`clipmod.traffic`), synced first, so an item scored a moment ago is
found. `text` is embedded by the model's text encoder (loaded once per API process, as for
policy lint); `like` starts from the item's stored embedding (its image, else its text). Only
images are searched: they are what a moderator looks at. Results span every tenant, as
backtests do: admin keys are the operator's. A deleted item is gone from the store's reader (its
deletion is logged and tombstones its row), so from here and from the dashboard's search alike.
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import require_admin
from api.policies import policy_runtime
from api.services import services
from clipmod.errors import InvalidInput, NotFound
from clipmod.models import Item, Tenant
from clipmod.policy.traffic import load_embeddings
from clipmod.traffic.search import search as search_store
from clipmod.traffic.search import stored_vector
from clipmod.traffic.sync import TrafficStore

bp = Blueprint("search", __name__, url_prefix="/v1/search")
bp.before_request(require_admin)

MAX_LIMIT = 100
MAX_TEXT = 1000


@bp.get("")
def search() -> Response:
    text, like = request.args.get("text"), request.args.get("like")
    if (text is None) == (like is None) or (text is not None and not text.strip()):
        raise InvalidInput(
            "give exactly one of `text` (non-empty) and `like`", code="invalid_query"
        )
    if text is not None and len(text) > MAX_TEXT:
        raise InvalidInput(f"text: at most {MAX_TEXT} characters", code="invalid_query")
    raw_limit = request.args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidInput(f"limit: an integer from 1 to {MAX_LIMIT}", code="invalid_query")
    runtime = policy_runtime()
    with services().sessions() as session:
        tenant_id = None
        if request.args.get("tenant"):
            tenant_id = session.scalar(
                select(Tenant.id).where(Tenant.name == request.args["tenant"])
            )
            if tenant_id is None:
                raise NotFound(f"no tenant named {request.args['tenant']!r}", code="unknown_tenant")
        if text is not None:
            query = runtime.encode_texts([text])[0]
        else:
            query = _item_vector(session, str(like), runtime.revision)
        store = TrafficStore(services().settings.traffic_dir, runtime.revision)
        emb = load_embeddings(session, runtime.revision, store=store)
        hits = search_store(
            emb,
            query,
            limit=int(raw_limit),
            tenants=None if tenant_id is None else [tenant_id],
            exclude=like,
        )
    return jsonify(
        {
            "query": {"text": text} if text is not None else {"like": like},
            "model_revision": runtime.revision,
            "searched": len(emb.image),
            "results": [
                {
                    "id": h.item_id,
                    "tenant": emb.tenant_names.get(h.tenant_id),
                    "similarity": round(h.similarity, 6),
                    "links": {"self": url_for("items.get_item", item_id=h.item_id)},
                }
                for h in hits
            ],
        }
    )


def _item_vector(session: Session, item_id: str, revision: str) -> np.ndarray:
    if session.get(Item, item_id) is None:
        raise NotFound(f"item {item_id!r} not found", code="item_not_found")
    vector = stored_vector(session, item_id, revision)
    if vector is None:
        raise InvalidInput(
            f"item {item_id!r} has no embedding for model revision {revision} (not scored yet, "
            "or deleted)",
            code="item_not_scored",
        )
    return vector
