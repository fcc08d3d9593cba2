"""Creating banks, changing their entries, and reading any version back as a matrix.

Every change is one new immutable version, made in one transaction: entries added get
`added_in = v`, entries removed get `removed_in = v`, so version v's entries are those with
`added_in <= v` and no `removed_in <= v`, and any verdict's `bank@version` can be re-read later.
All checks happen before anything is written, so a refused change leaves the bank as it was.
The CLI (`clipmod banks …`) and the API (`/v1/banks`) are thin front ends over this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from clipmod import embeddings
from clipmod.actions import Action
from clipmod.errors import ClipmodError, InvalidInput, NotFound
from clipmod.models import Bank, BankEntry, BankVersion, Item, ItemEmbedding, ItemStatus
from clipmod.policy.banks import BankSnapshot
from clipmod.policy.schema import BANK_NAME_PATTERN


class BankModelMismatch(ClipmodError):
    """An embedding from another model revision: its cosines against this bank mean nothing."""

    code, status = "bank_model_mismatch", 422


def mismatch(bank: Bank, revision: str, what: str) -> BankModelMismatch:
    return BankModelMismatch(
        f"{what} is from model revision {revision}, but bank {bank.name!r} holds embeddings "
        f"of revision {bank.model_revision}: cosines across models mean nothing"
    )


@dataclass(frozen=True)
class NewEntry:
    """An embedding on its way into a bank, with where it came from."""

    embedding: npt.NDArray[np.floating]  # (d,) L2-normalised
    model_revision: str
    source: str  # "item" | "upload"
    item_id: str | None = None
    image_sha256: str | None = None
    label: str = ""


@dataclass(frozen=True)
class Change:
    version: BankVersion
    added: list[int] = field(default_factory=list)  # new entry ids
    removed: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # items/images already in the bank


def create_bank(
    session: Session,
    name: str,
    kind: str,
    *,
    model_revision: str,
    dim: int,
    author: str,
    description: str = "",
) -> Bank:
    if not re.fullmatch(BANK_NAME_PATTERN, name):
        raise InvalidInput(
            f"bank name {name!r}: lowercase letters, digits, '_' and '-', at most 64",
            code="invalid_bank_name",
        )
    if kind not in {a.value for a in Action}:
        raise InvalidInput(
            f"bank kind {kind!r}: must be one of block, review, allow", code="invalid_bank_kind"
        )
    if session.scalar(select(Bank.id).where(Bank.name == name)) is not None:
        raise ClipmodError(f"a bank named {name!r} already exists", code="bank_exists", status=409)
    bank = Bank(
        name=name,
        kind=Action(kind),
        model_revision=model_revision,
        dim=dim,
        description=description,
        created_by=author,
    )
    session.add(bank)
    session.flush()
    return bank


def get_bank(session: Session, name: str, *, lock: bool = False) -> Bank:
    """`lock`: serialise concurrent changes to one bank (PostgreSQL row lock; SQLite has one
    writer at a time anyway)."""
    stmt = select(Bank).where(Bank.name == name)
    bank = session.scalar(stmt.with_for_update() if lock else stmt)
    if bank is None:
        raise NotFound(f"no bank named {name!r}", code="bank_not_found")
    return bank


def all_banks(session: Session) -> list[Bank]:
    return list(session.scalars(select(Bank).order_by(Bank.name)))


def latest(session: Session, bank: Bank) -> BankVersion | None:
    return session.scalar(
        select(BankVersion)
        .where(BankVersion.bank_id == bank.id)
        .order_by(BankVersion.version.desc())
        .limit(1)
    )


def versions_of(session: Session, bank: Bank) -> list[BankVersion]:
    return list(
        session.scalars(
            select(BankVersion)
            .where(BankVersion.bank_id == bank.id)
            .order_by(BankVersion.version.desc())
        )
    )


def resolve_version(session: Session, bank: Bank, version: int | None) -> int:
    """The version number to read: `version` if it exists, else the newest. Version 0 is the
    bank as created, before its first change: no entries."""
    newest = latest(session, bank)
    top = newest.version if newest else 0
    if version is None:
        return top
    if not 0 <= version <= top:
        raise NotFound(
            f"bank {bank.name!r} has no version {version} (newest: {top})",
            code="bank_version_not_found",
        )
    return version


def _in_force(bank: Bank, version: int) -> tuple[ColumnElement[bool], ...]:
    return (
        BankEntry.bank_id == bank.id,
        BankEntry.added_in <= version,
        or_(BankEntry.removed_in.is_(None), BankEntry.removed_in > version),
    )


def entries(
    session: Session,
    bank: Bank,
    version: int | None = None,
    *,
    after: int = 0,
    limit: int | None = None,
) -> list[BankEntry]:
    """A version's entries in id order; `after`/`limit` page through a large bank."""
    v = resolve_version(session, bank, version)
    stmt = select(BankEntry).where(*_in_force(bank, v), BankEntry.id > after).order_by(BankEntry.id)
    return list(session.scalars(stmt.limit(limit) if limit is not None else stmt))


def snapshot(session: Session, bank: Bank, version: int | None = None) -> BankSnapshot:
    """Version `version` (default: newest) as a float32 matrix: what matching reads."""
    v = resolve_version(session, bank, version)
    rows = session.execute(
        select(BankEntry.id, BankEntry.embedding).where(*_in_force(bank, v)).order_by(BankEntry.id)
    ).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = (
        embeddings.from_bytes(b"".join(r[1] for r in rows), bank.dim)
        if rows
        else np.zeros((0, bank.dim), dtype=np.float32)
    )
    return BankSnapshot(bank.name, v, bank.kind, bank.model_revision, ids, matrix)


def advance(session: Session, bank: Bank, base: BankSnapshot, version: int) -> BankSnapshot:
    """`snapshot(version)` computed from an older snapshot and only the entries that changed
    since: a worker holding a 100,000-entry bank reads one row when one entry is added."""
    if version == base.version:
        return base
    if version < base.version:
        return snapshot(session, bank, version)
    removed = set(
        session.scalars(
            select(BankEntry.id).where(
                BankEntry.bank_id == bank.id,
                BankEntry.removed_in > base.version,
                BankEntry.removed_in <= version,
            )
        )
    )
    added = session.execute(
        select(BankEntry.id, BankEntry.embedding)
        .where(*_in_force(bank, version), BankEntry.added_in > base.version)
        .order_by(BankEntry.id)
    ).all()
    keep = ~np.isin(base.entry_ids, np.fromiter(removed, dtype=np.int64, count=len(removed)))
    ids = np.concatenate([base.entry_ids[keep], [r[0] for r in added]]).astype(np.int64)
    fresh = (
        embeddings.from_bytes(b"".join(r[1] for r in added), bank.dim)
        if added
        else np.zeros((0, bank.dim), dtype=np.float32)
    )
    matrix = np.concatenate([base.embeddings[keep], fresh], axis=0)
    return BankSnapshot(bank.name, version, bank.kind, bank.model_revision, ids, matrix)


def from_items(session: Session, bank: Bank, item_ids: Sequence[str]) -> list[NewEntry]:
    """Entries from stored items' image embeddings, every id checked before any is used."""
    out = []
    for item_id in item_ids:
        item = session.get(Item, item_id)
        if item is None:
            raise NotFound(f"item {item_id!r} not found", code="item_not_found")
        if item.status == ItemStatus.DELETED:
            # Its embedding went with it; "not scored yet" would send the admin to wait for it.
            raise ClipmodError(
                f"item {item_id!r} was deleted: its embedding is gone, so it cannot join a bank",
                code="item_deleted",
                status=409,
            )
        stored = {
            e.model_revision: e
            for e in session.scalars(select(ItemEmbedding).where(ItemEmbedding.item_id == item_id))
        }
        row = stored.get(bank.model_revision)
        if row is None and stored:
            raise mismatch(bank, ", ".join(sorted(stored)), f"item {item_id!r}'s embedding")
        if row is None:
            raise ClipmodError(
                f"item {item_id!r} has not been scored yet: it has no embedding to add",
                code="item_not_scored",
                status=409,
            )
        if row.image is None:
            raise InvalidInput(
                f"item {item_id!r} has no image: banks hold image embeddings",
                code="item_has_no_image",
            )
        out.append(
            NewEntry(
                embeddings.from_bytes(row.image, row.dim)[0],
                row.model_revision,
                "item",
                item_id=item_id,
            )
        )
    return out


def _new_version(session: Session, bank: Bank, *, author: str, note: str) -> BankVersion:
    newest = latest(session, bank)
    version = BankVersion(
        bank_id=bank.id,
        version=(newest.version + 1) if newest else 1,
        entries=newest.entries if newest else 0,
        added=0,
        removed=0,
        note=note,
        author=author,
    )
    session.add(version)
    return version


def add_entries(
    session: Session, bank: Bank, new: Sequence[NewEntry], *, author: str, note: str = ""
) -> Change:
    """One new version holding `new` on top of the newest; items or images already in force
    are skipped (reported), never duplicated, and when all are, no version is made."""
    if not new:
        raise InvalidInput("nothing to add: name items or upload images", code="nothing_to_add")
    for entry in new:
        if entry.model_revision != bank.model_revision:
            raise mismatch(bank, entry.model_revision, f"the {entry.source} embedding")
        if np.asarray(entry.embedding).size != bank.dim:
            raise BankModelMismatch(
                f"an embedding of size {np.asarray(entry.embedding).size} cannot join bank "
                f"{bank.name!r} (size {bank.dim})"
            )
    keys = {e.item_id or e.image_sha256 for e in new} - {None}
    top = resolve_version(session, bank, None)
    have: set[str | None] = set()
    for item_id, sha in session.execute(
        select(BankEntry.item_id, BankEntry.image_sha256).where(
            *_in_force(bank, top),
            or_(BankEntry.item_id.in_(keys), BankEntry.image_sha256.in_(keys)),
        )
    ):
        have |= {item_id, sha}
    fresh, skipped = [], []
    for entry in new:
        key = entry.item_id or entry.image_sha256
        if key is not None and key in have:
            skipped.append(key)
            continue
        if key is not None:
            have.add(key)
        fresh.append(entry)
    newest = latest(session, bank)
    if not fresh and newest is not None:  # nothing changes: no new version
        return Change(newest, skipped=skipped)
    version = _new_version(session, bank, author=author, note=note)
    rows = [
        BankEntry(
            bank_id=bank.id,
            embedding=embeddings.to_bytes(np.asarray(e.embedding).reshape(1, -1)),
            source=e.source,
            item_id=e.item_id,
            image_sha256=e.image_sha256,
            label=e.label,
            added_in=version.version,
        )
        for e in fresh
    ]
    session.add_all(rows)
    version.added = len(rows)
    version.entries += len(rows)
    session.flush()
    return Change(version, added=[r.id for r in rows], skipped=skipped)


def remove_entries(
    session: Session, bank: Bank, entry_ids: Sequence[int], *, author: str, note: str = ""
) -> Change:
    """One new version without `entry_ids`; an id not in force now is refused."""
    if not entry_ids:
        raise InvalidInput("nothing to remove: name entry ids", code="nothing_to_remove")
    top = resolve_version(session, bank, None)
    in_force = {
        e.id: e
        for e in session.scalars(
            select(BankEntry).where(*_in_force(bank, top), BankEntry.id.in_(set(entry_ids)))
        )
    }
    unknown = sorted(set(entry_ids) - set(in_force))
    if unknown:
        raise NotFound(
            f"bank {bank.name!r} has no entry {', '.join(map(str, unknown))} in its newest version",
            code="bank_entry_not_found",
        )
    version = _new_version(session, bank, author=author, note=note)
    for entry_id in dict.fromkeys(entry_ids):
        in_force[entry_id].removed_in = version.version
    version.removed = len(set(entry_ids))
    version.entries -= version.removed
    session.flush()
    return Change(version, removed=sorted(set(entry_ids)))


def stamp(session: Session) -> tuple[int, int]:
    """Changes whenever any bank gets a version: workers poll it to pick up bank changes."""
    count, newest = session.execute(
        select(func.count(BankVersion.id), func.max(BankVersion.id))
    ).one()
    return int(count or 0), int(newest or 0)
