"""Backtest the draft from the editor: one request starts it, the page polls for progress.

The work is `clipmod.policy.backtest` (as `clipmod policy backtest` and the API run it) on the
window of stored traffic the admin chose (`clipmod.policy.window`). Example items that change
action come back with what the page needs to show them as the dashboard does: whether they
have an image, and whether the dashboard's blur rule (top score ≥ `CLIPMOD_BLUR_AT`) hides it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from flask import current_app, jsonify, url_for
from flask_login import login_required
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.dashboard.editor import SOURCE, TextBody, json_body, tools
from api.dashboard.jobs import Job, Jobs
from api.dashboard.shell import admin_required, bp, me
from api.services import services
from clipmod.models import Item, ItemEmbedding, ItemStatus, Verdict
from clipmod.policy import backtest, window
from clipmod.policy.loader import parse_policy

JOBS_KEY = "clipmod.editor_jobs"
INLINE_WAIT_S = 1.0  # a backtest done within this answers the first request: no polling
POLL_WAIT_S = 0.25  # each poll's long-poll
EXAMPLES = 6


class BacktestBody(TextBody):
    last: int | None = Field(default=None, ge=1, le=window.MAX_LAST)
    since: datetime | None = None
    until: datetime | None = None
    tenant: str = Field(default="", max_length=64)


def jobs() -> Jobs:
    ext = current_app.extensions
    if JOBS_KEY not in ext:
        ext.setdefault(JOBS_KEY, Jobs(services().sessions))
    return ext[JOBS_KEY]  # type: ignore[no-any-return]


_ID = "__item__"


def _links() -> dict[str, str]:
    """URL templates of an item's page, thumbnail and reveal: three `url_for` calls, not three
    per example."""
    return {
        "href": url_for("dashboard.item_page", item_id=_ID),
        "image": url_for("dashboard.item_image", item_id=_ID, size="thumb"),
        "reveal": url_for("dashboard.reveal", item_id=_ID),
    }


def _examples(
    db: Session, ids: list[str], blur_at: float, links: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """For each example item: how to show it (image or text) and whether it is blurred."""
    out: dict[str, dict[str, Any]] = {}
    if not ids:
        return out
    rows = db.execute(
        select(Item.id, Item.image_sha256, Item.text, Verdict.categories)
        .outerjoin(Verdict, Verdict.item_id == Item.id)
        .where(Item.id.in_(ids), Item.status != ItemStatus.DELETED)
    ).all()
    for item_id, digest, text, categories in rows:
        top = max((float(c["score"]) for c in categories or []), default=0.0)
        link = {k: v.replace(_ID, item_id) for k, v in links.items()}
        out[item_id] = {
            "id": item_id,
            "href": link["href"],
            "image": link["image"] if digest else None,
            "reveal": link["reveal"],
            "blurred": digest is not None and top >= blur_at,
            "score": round(top, 3),
            "text": (text or "")[:140],
        }
    return out


def _total(db: Session, revision: str) -> int:
    return int(
        db.scalar(
            select(func.count())
            .select_from(ItemEmbedding)
            .where(ItemEmbedding.model_revision == revision)
        )
        or 0
    )


@bp.post("/policies/backtest")
@login_required
@admin_required
def start_backtest() -> Any:
    body = json_body(BacktestBody)
    draft = parse_policy(body.yaml, source=SOURCE)  # an invalid draft is refused at once
    chosen = window.Window(
        last=body.last, since=body.since, until=body.until, tenant=body.tenant or None
    )
    t = tools()
    svc = services()
    with svc.sessions() as db:
        total = _total(db, t.encoder.revision)

    def work(job: Job) -> dict[str, Any]:
        started = time.perf_counter()
        with svc.sessions() as db:
            job.phase = "reading stored traffic"
            emb = window.load_window(db, t.encoder.revision, chosen, progress=job.advance)
            read = time.perf_counter() - started
            job.phase = "scoring"
            report = backtest.backtest(
                db,
                draft,
                t.encoder,
                draft_label=f"{draft.name} (draft)",
                examples=EXAMPLES,
                banks=t.banks,
                traffic=emb,
            )
            body = report.to_dict()
            body["window"] = chosen.describe()
            # The whole job, as the page waits for it: reading the window, then the backtest.
            body["timings"] = {"window_s": read, **report.timings}
            body["elapsed_s"] = time.perf_counter() - started
            return body

    job = jobs().start(me().id, total, work)
    return jsonify(_state(job.id, INLINE_WAIT_S))


def _state(job_id: str, wait_s: float) -> dict[str, Any]:
    """The job; a finished report gains its example items as they are now.

    The stored report names its examples by id only: their text and thumbnails are read at
    each poll, so the job's row never keeps a copy of an item's content, and an item deleted
    since the backtest ran is left out of the thumbnails (the counts stay as computed).
    """
    state = jobs().state(me().id, job_id, wait_s)
    state["poll"] = url_for("dashboard.backtest_job", job_id=job_id)
    result = state.get("result")
    if result is not None:
        ids = [i for tr in result["transitions"] for i in tr["examples"]]
        svc = services()
        with svc.sessions() as db:
            result["examples"] = _examples(db, ids, svc.settings.blur_at, _links())
    return state


@bp.get("/policies/backtest/<job_id>")
@login_required
@admin_required
def backtest_job(job_id: str) -> Any:
    return jsonify(_state(job_id[:64], POLL_WAIT_S))
