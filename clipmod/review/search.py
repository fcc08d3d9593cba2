"""Semantic search for the dashboard: text → CLIP text embedding → the nearest stored items.

The workers stored every item's L2-normalised image embedding and text-window embeddings, so
searching is a dot product against them: no image is decoded and no image forward pass runs;
only the query goes through the text encoder. An item's score is its best match over its image
and its text windows. "Find similar" uses an item's own stored embedding as the query.

The rows come from the traffic store (`clipmod.traffic`), through the same scan as
`GET /v1/search`: one search path, synced before each read, so an item scored a moment ago is
found and a deleted one is gone (its deletion tombstones its row). This module adds what a
person may see: their tenants only, and nothing SQL no longer shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.errors import InvalidInput, NotFound
from clipmod.models import Item, User
from clipmod.policy.traffic import load_embeddings
from clipmod.review.access import tenant_clause, visible_item, visible_tenant_ids
from clipmod.traffic import search as store_search
from clipmod.traffic.sync import TrafficStore

F32 = npt.NDArray[np.float32]
MAX_QUERY_CHARS = 300
DEFAULT_LIMIT = 24


class QueryEncoder(Protocol):
    revision: str

    def encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.floating[Any]]: ...


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    source: str  # "image" or "text": what matched best


def check_query(query: str) -> str:
    text = " ".join(query.split())
    if not text:
        raise InvalidInput("type what to look for, e.g. “a photo of a knife”", code="empty_query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"the search text is {len(query):,} characters; the limit is {MAX_QUERY_CHARS}",
            code="query_too_long",
        )
    return text


def _nearest(
    session: Session,
    user: User,
    store: TrafficStore,
    query: F32,
    limit: int,
    exclude: str | None,
) -> list[Hit]:
    emb = load_embeddings(session, store.revision, store=store)
    found = store_search.search(
        emb, query, limit=limit, tenants=visible_tenant_ids(user), exclude=exclude, text=True
    )
    # The store already left out deleted items and other tenants'; asking SQL about the few
    # hits too means a page can never show what the person may not see.
    visible = set(
        session.scalars(
            select(Item.id).where(Item.id.in_([h.item_id for h in found]), tenant_clause(user))
        )
    )
    return [Hit(h.item_id, round(h.similarity, 4), h.source) for h in found if h.item_id in visible]


def search_text(
    session: Session,
    user: User,
    encoder: QueryEncoder,
    query: str,
    *,
    store: TrafficStore,
    limit: int = DEFAULT_LIMIT,
) -> list[Hit]:
    """The person's tenants' items nearest to a text query, best first."""
    text = check_query(query)
    vector = np.asarray(encoder.encode_texts([text])[0], dtype=np.float32)
    return _nearest(session, user, store, vector, limit, None)


def similar(
    session: Session, user: User, store: TrafficStore, item_id: str, *, limit: int = DEFAULT_LIMIT
) -> list[Hit]:
    """Items nearest to one item's own embedding (image, else its text windows)."""
    item = visible_item(session, user, item_id)
    vector = store_search.stored_vector(session, item.id, store.revision)
    if vector is None:
        raise NotFound(
            "this item has no stored embedding for the loaded model yet", code="no_embedding"
        )
    return _nearest(session, user, store, vector, limit, item.id)
