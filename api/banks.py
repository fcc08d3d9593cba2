"""`/v1/banks`: embedding banks of known images (`clipmod.banks`); admin keys only.

Every change answers with the new immutable version; workers pick it up within
`CLIPMOD_POLICY_REFRESH_S`. `POST /v1/banks/<name>/entries` with `{"items": [id, …]}` is the
hook for an "add to bank" button on an item page. Uploaded images and bank backtests need the
model, loaded once per API process as for policy lint (`api.policies.policy_runtime`).
"""

from __future__ import annotations

from typing import Annotated

from flask import Blueprint, Response, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require_admin
from api.params import json_body
from api.policies import policy_runtime
from api.services import services
from clipmod import images
from clipmod.banks import backtest, registry, views
from clipmod.banks.uploads import embed_uploads, ensure_stored
from clipmod.errors import InvalidInput, NotFound
from clipmod.policy.schema import BANK_NAME_PATTERN
from clipmod.traffic.sync import TrafficStore

bp = Blueprint("banks", __name__, url_prefix="/v1/banks")
bp.before_request(require_admin)

MAX_ENTRIES_PAGE = 1000


# Ids and version numbers are database integers: anything beyond 64 bits cannot name a row,
# and handing it to the driver would be an overflow (a 500), not a "not found".
RowId = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Strict):
    name: str = Field(pattern=BANK_NAME_PATTERN)
    kind: str = Field(pattern=r"^(block|review|allow)$")
    description: str = Field(default="", max_length=2000)
    model_revision: str | None = Field(default=None, max_length=64)
    dim: int | None = Field(default=None, ge=1, le=65536)


class AddBody(_Strict):
    items: list[str] = Field(min_length=1, max_length=1000)
    note: str = Field(default="", max_length=2000)


class RemoveBody(_Strict):
    entries: list[RowId] = Field(min_length=1, max_length=10000)
    note: str = Field(default="", max_length=2000)


class BacktestBody(_Strict):
    from_: RowId | None = Field(default=None, alias="from")
    to: RowId | None = None
    add_items: list[str] = Field(default_factory=list, max_length=1000)
    remove_entries: list[RowId] = Field(default_factory=list, max_length=10000)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False)
    examples: int = Field(default=5, ge=0, le=100)


def _author() -> str:
    return f"api:{g.tenant.name}"


@bp.get("")
def list_banks() -> Response:
    with services().sessions() as session:
        return jsonify(
            {"banks": [views.bank_json(session, b) for b in registry.all_banks(session)]}
        )


@bp.post("")
def create() -> tuple[Response, int]:
    body: CreateBody = json_body(CreateBody)
    revision, dim = body.model_revision, body.dim
    if revision is None or dim is None:
        runtime = policy_runtime()
        revision, dim = revision or runtime.revision, dim or runtime.dim
    with services().sessions() as session, session.begin():
        bank = registry.create_bank(
            session,
            body.name,
            body.kind,
            model_revision=str(revision),
            dim=int(dim),
            author=_author(),
            description=body.description,
        )
        return jsonify(views.bank_json(session, bank)), 201


@bp.get("/<name>")
def show(name: str) -> Response:
    """A bank with its versions; `?entries=1` adds one page of a version's entries
    (`version`, `after` = the last entry id seen, `limit` ≤ 1000)."""
    with services().sessions() as session:
        bank = registry.get_bank(session, name)
        body = views.bank_json(session, bank, history=True)
        if request.args.get("entries"):
            version = _int_arg("version")
            after, limit = _int_arg("after") or 0, _int_arg("limit") or 100
            if not 1 <= limit <= MAX_ENTRIES_PAGE:
                raise InvalidInput(f"limit: 1 to {MAX_ENTRIES_PAGE}", code="invalid_input")
            rows = registry.entries(session, bank, version, after=after, limit=limit + 1)
            body["shown_version"] = registry.resolve_version(session, bank, version)
            body["entry_list"] = [views.entry_json(e) for e in rows[:limit]]
            body["next_after"] = rows[limit - 1].id if len(rows) > limit else None
        return jsonify(body)


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > 2**63 - 1:
        raise InvalidInput(f"{name}: must be a non-negative integer", code="invalid_input")
    return int(raw)


@bp.post("/<name>/entries")
def add(name: str) -> tuple[Response, int]:
    """JSON `{"items": [...], "note"}`, or multipart with `file` parts (uploaded images) and
    optional `item` and `note` fields: one new version either way."""
    settings = services().settings
    if request.mimetype == "multipart/form-data":
        files = request.files.getlist("file")
        items, note = request.form.getlist("item"), request.form.get("note", "")
        uploads = [(f.filename or f"file{i}", f.read()) for i, f in enumerate(files)]
    else:
        body: AddBody = json_body(AddBody)
        items, note, uploads = body.items, body.note, []
    uploaded = []
    if uploads:
        uploaded = embed_uploads(
            policy_runtime(),
            uploads,
            limits=images.ImageLimits.from_settings(settings),
            max_bytes=settings.max_upload_bytes,
            blobs=services().blobs,
        )
    with services().sessions() as session, session.begin():
        bank = registry.get_bank(session, name, lock=True)
        new = registry.from_items(session, bank, items) + uploaded
        change = registry.add_entries(session, bank, new, author=_author(), note=note)
        answer = views.change_json(bank, change)
    ensure_stored(services().blobs, uploads, uploaded)
    return jsonify(answer), 201


@bp.post("/<name>/entries/remove")
def remove(name: str) -> tuple[Response, int]:
    body: RemoveBody = json_body(RemoveBody)
    with services().sessions() as session, session.begin():
        bank = registry.get_bank(session, name, lock=True)
        change = registry.remove_entries(
            session, bank, body.entries, author=_author(), note=body.note
        )
        return jsonify(views.change_json(bank, change)), 201


@bp.delete("/<name>/entries/<int:entry_id>")
def remove_one(name: str, entry_id: int) -> tuple[Response, int]:
    if entry_id > 2**63 - 1:
        raise NotFound(f"no entry {entry_id} in bank {name!r}", code="bank_entry_not_found")
    with services().sessions() as session, session.begin():
        bank = registry.get_bank(session, name, lock=True)
        change = registry.remove_entries(session, bank, [entry_id], author=_author())
        return jsonify(views.change_json(bank, change)), 201


@bp.post("/<name>/backtest")
def backtest_change(name: str) -> Response:
    """Versions `from` → `to` (default: the newest and the one before), or the newest plus a
    proposed change (`add_items`, `remove_entries`) that is not made."""
    body: BacktestBody = json_body(BacktestBody)
    runtime = policy_runtime()
    with services().sessions() as session:
        bank = registry.get_bank(session, name)
        report = backtest.backtest_request(
            session,
            bank,
            runtime,
            from_version=body.from_,
            to_version=body.to,
            add_items=body.add_items,
            remove_entries=body.remove_entries,
            threshold=body.threshold,
            store=TrafficStore(services().settings.traffic_dir, runtime.revision),
            examples=body.examples,
        )
    return jsonify(report.to_dict())
