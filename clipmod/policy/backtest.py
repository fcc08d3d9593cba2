"""Backtest a draft policy on stored traffic: what would it have done, item by item?

Editors need the answer in seconds, so nothing here runs the image model: the worker stored every
item's L2-normalised embeddings (`ItemEmbedding`, float16), and a policy change only changes the
prompt bank and thresholds. Only the draft's prompts go through the text encoder, once.

The whole history for one model revision is read in one query and decoded once into two big
float16 matrices (image rows, text-window rows), which are widened to float32 a block at a time
and scored with `clipmod.scoring` under the draft and every baseline version in the same pass,
so a backtest and the worker share one definition of a score. An item's score is the
per-category maximum over its image row and all its text windows (`scoring.max_over`); here
that is a segment maximum (`np.maximum.reduceat`) over the window scores, never a Python loop
per item. Cost is linear in items: 100k items at d=512 take ~1.5 s on the 2-core development
machine, about half of it the database read (`python -m bench.backtest`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clipmod import scoring
from clipmod.errors import ClipmodError
from clipmod.models import Decision, Item, ItemEmbedding, PolicyVersion, Tenant
from clipmod.policy import versions
from clipmod.policy.schema import Policy

F16 = npt.NDArray[np.float16]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Progress = Callable[[int], None]

_CHUNK = 20_000  # rows per fetch: progress granularity, not a memory bound
_BLOCK = 8_192  # rows widened to float32 at a time (16 MiB at d=512)


class TextEncoder(Protocol):
    """What a backtest needs of the model: prompt embeddings and which weights they came from.

    `clipmod.runtime.ClipRuntime` is one; tests and benchmarks may pass a stand-in.
    """

    revision: str
    logit_scale: float

    def encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.floating[Any]]: ...


@dataclass(frozen=True)
class StoredEmbeddings:
    """Every stored embedding of one model revision, decoded once; item i is row i of `ids`."""

    ids: list[str]
    tenant_ids: I64  # (n,)
    tenant_names: dict[int, str]
    image: F16  # (n_img, d) image rows, as stored
    image_items: I64  # (n_img,) the item of each image row
    text: F16  # (W, d) text-window rows, each item's windows contiguous
    text_items: I64  # (n_txt,) items that have text
    text_starts: I64  # (n_txt,) where each of them starts in `text`
    model_revision: str

    def __len__(self) -> int:
        return len(self.ids)


def load_embeddings(
    session: Session,
    revision: str,
    *,
    since: datetime | None = None,
    labelled_only: bool = False,
    progress: Progress | None = None,
) -> StoredEmbeddings:
    """Read and decode stored embeddings in one pass (`labelled_only`: items with a Decision)."""
    stmt = (
        select(
            ItemEmbedding.item_id,
            Item.tenant_id,
            ItemEmbedding.dim,
            ItemEmbedding.image,
            ItemEmbedding.text,
            func.coalesce(func.length(ItemEmbedding.text), 0),
        )
        .join(Item, Item.id == ItemEmbedding.item_id)
        .where(ItemEmbedding.model_revision == revision)
    )
    if since is not None:
        stmt = stmt.where(Item.created_at >= _as_utc(since))
    if labelled_only:
        stmt = stmt.where(ItemEmbedding.item_id.in_(select(Decision.item_id)))
    rows: list[Any] = []
    for part in session.connection().execute(stmt).partitions(_CHUNK):
        rows.extend(part)
        if progress is not None:
            progress(len(part))
    names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    if not rows:
        empty = np.zeros((0, 1), dtype=np.float16)
        none = np.zeros(0, dtype=np.int64)
        return StoredEmbeddings([], none, names, empty, none, empty, none, none, revision)
    ids, tenants, dims, images, texts, text_len = zip(*rows, strict=True)
    if len(set(dims)) != 1:
        raise ClipmodError(
            f"stored embeddings for revision {revision} have mixed sizes {sorted(set(dims))}",
            code="mixed_embedding_dims",
        )
    dim = int(dims[0])
    has_image = np.fromiter((b is not None for b in images), dtype=bool, count=len(images))
    windows = np.asarray(text_len, dtype=np.int64) // (2 * dim)
    has_text = windows > 0
    image = _decode(b"".join(b for b in images if b is not None), dim)
    text = _decode(b"".join(b for b in texts if b is not None), dim)
    counts = windows[has_text]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return StoredEmbeddings(
        ids=list(ids),
        tenant_ids=np.asarray(tenants, dtype=np.int64),
        tenant_names=names,
        image=image,
        image_items=np.flatnonzero(has_image).astype(np.int64),
        text=text,
        text_items=np.flatnonzero(has_text).astype(np.int64),
        text_starts=starts,
        model_revision=revision,
    )


def _decode(blob: bytes, dim: int) -> F16:
    return np.frombuffer(blob, dtype="<f2").reshape(-1, dim)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row_scores(rows: F16, banks: Sequence[scoring.PromptBank]) -> list[F32]:
    """Score float16 rows under several banks, widening to float32 a block at a time.

    One reusable block instead of a float32 copy of everything: each row is widened once for
    all banks, and memory stays flat (first touches of fresh pages are costly in VMs).
    """
    outs = [np.empty((len(rows), len(b.spans)), dtype=np.float32) for b in banks]
    block = np.empty((min(len(rows), _BLOCK), rows.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _BLOCK):
        part = block[: min(_BLOCK, len(rows) - start)]
        np.copyto(part, rows[start : start + len(part)])
        for out, bank in zip(outs, banks, strict=True):
            out[start : start + len(part)] = scoring.score(bank, part)[0]
    return outs


def score_items(emb: StoredEmbeddings, *banks: scoring.PromptBank) -> list[F32]:
    """Per bank, (n, C) scores: per category the max over each item's image row and text
    windows (as `scoring.max_over`), the text part a segment max over the window rows."""
    outs = [np.full((len(emb), len(b.spans)), -np.inf, dtype=np.float32) for b in banks]
    for out, image in zip(outs, _row_scores(emb.image, banks), strict=True):
        out[emb.image_items] = image
    if len(emb.text_items):
        for out, windows in zip(outs, _row_scores(emb.text, banks), strict=True):
            per_item = np.maximum.reduceat(windows, emb.text_starts, axis=0)
            out[emb.text_items] = np.maximum(out[emb.text_items], per_item)
    return outs


def item_scores(bank: scoring.PromptBank, emb: StoredEmbeddings) -> F32:
    """(n, C) scores of every stored item under one bank."""
    return score_items(emb, bank)[0]


def severities(policy: Policy, scores: F32, emb: StoredEmbeddings) -> tuple[I8, I8]:
    """Per-category severity (n, C) and each item's action index (n,), exactly as `decide`.

    Thresholds depend on the tenant only through `tenant_overrides`, so items are grouped into
    one group per overridden tenant plus everyone else: a handful of vectorised calls.
    """
    n, n_cat = scores.shape
    severity = np.zeros((n, n_cat), dtype=np.int8)
    rest = np.ones(n, dtype=bool)
    by_name = {name: tid for tid, name in emb.tenant_names.items()}
    groups: list[tuple[str | None, npt.NDArray[np.bool_]]] = []
    for tenant in policy.tenant_overrides:
        if tenant in by_name:
            mask = emb.tenant_ids == by_name[tenant]
            groups.append((tenant, mask))
            rest &= ~mask
    groups.append((None, rest))
    for group, mask in groups:
        if mask.any():
            review, block = scoring.thresholds(policy, group)
            severity[mask], _, _ = scoring.apply_thresholds(policy, scores[mask], review, block)
    action = severity.max(axis=1) if n_cat else np.zeros(n, dtype=np.int8)
    if policy.audit_sample_rate > 0:
        # Sampling hashes the item id (deterministic, like the worker); only allowed items count.
        allowed = np.flatnonzero(action == 0)
        rate = policy.audit_sample_rate
        hit = np.fromiter(
            (scoring.audit_sampled(emb.ids[i], rate) for i in allowed), bool, len(allowed)
        )
        action[allowed[hit]] = 1
    return severity, action.astype(np.int8)


class BankCache:
    """Prompt banks keyed by (model revision, policy text): a long-lived API process embeds the
    active version's prompts once, not on every backtest."""

    def __init__(self, limit: int = 16):
        self.limit = limit
        self._banks: dict[tuple[str, str], scoring.PromptBank] = {}
        self._lock = threading.Lock()  # API threads share one cache (and one model)

    def get(self, policy: Policy, encoder: TextEncoder) -> scoring.PromptBank:
        key = (encoder.revision, policy.model_dump_json())
        with self._lock:
            if key not in self._banks:
                if len(self._banks) >= self.limit:
                    self._banks.pop(next(iter(self._banks)))
                self._banks[key] = scoring.build_bank(
                    policy, lambda texts: encoder.encode_texts(texts), encoder.logit_scale
                )
            return self._banks[key]


@dataclass(frozen=True)
class Transition:
    before: str
    after: str
    count: int
    examples: list[str]


@dataclass(frozen=True)
class CategoryReport:
    """Per side (draft, baseline): `flagged` (review or above), `rate`, and tp/fp/fn,
    precision and recall over the judged items; None where that side has no such category."""

    id: str
    labelled: int
    draft: dict[str, Any] | None
    baseline: dict[str, Any] | None


@dataclass(frozen=True)
class BacktestReport:
    draft: str
    baselines: dict[str, int]  # version label -> items it applies to
    model_revision: str
    since: str | None
    items: int
    actions: dict[str, dict[str, int]]  # {"draft": {...}, "baseline": {...}}
    categories: list[CategoryReport]
    transitions: list[Transition]
    elapsed_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """The human summary `clipmod policy backtest` prints."""
        base = ", ".join(f"{k} ({v} items)" for k, v in self.baselines.items()) or "none"
        lines = [
            f"backtest of {self.draft} against {base}",
            f"{self.items} stored items (model revision {self.model_revision}"
            + (f", since {self.since}" if self.since else "")
            + f") in {self.elapsed_s:.2f} s",
            "",
            f"{'category':<20} {'active':>9} {'draft':>9} {'labelled':>8}  draft P/R",
        ]
        for c in self.categories:
            d, b = c.draft or {}, c.baseline or {}
            pr = "-" if d.get("precision") is None else f"{d['precision']:.2f}/{d['recall']:.2f}"
            lines.append(
                f"{c.id:<20} {_pct(b.get('rate')):>9} {_pct(d.get('rate')):>9} "
                f"{c.labelled:>8}  {pr}"
            )
        lines += ["", "actions (active -> draft):"]
        for a in scoring.ACTIONS:
            lines.append(
                f"  {a:<6} {self.actions['baseline'].get(a, 0):>8} -> {self.actions['draft'][a]}"
            )
        for t in self.transitions:
            lines.append(f"  {t.before}->{t.after}: {t.count}  e.g. {', '.join(t.examples)}")
        return "\n".join(lines)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}%"


def baseline_groups(
    session: Session, emb: StoredEmbeddings, against: PolicyVersion | None
) -> list[tuple[PolicyVersion, npt.NDArray[np.bool_]]]:
    """Which version each item's tenant runs now (or `against` for all), as item masks."""
    if against is not None:
        return [(against, np.ones(len(emb), dtype=bool))]
    chosen: dict[int, tuple[PolicyVersion, npt.NDArray[np.bool_]]] = {}
    for tenant_id in np.unique(emb.tenant_ids).tolist():  # per tenant, not per item
        version = versions.resolve(session, tenant_id)
        if version is None:
            raise ClipmodError(
                "no active policy version to compare with; publish one or pass `against`",
                code="no_active_policy",
                status=409,
            )
        mask = emb.tenant_ids == tenant_id
        prev = chosen.get(version.id)
        chosen[version.id] = (version, mask if prev is None else prev[1] | mask)
    return list(chosen.values())


def backtest(
    session: Session,
    draft: Policy,
    encoder: TextEncoder,
    *,
    draft_label: str = "draft",
    since: datetime | None = None,
    against: PolicyVersion | None = None,
    examples: int = 5,
    banks: BankCache | None = None,
    progress: Progress | None = None,
) -> BacktestReport:
    """Re-score stored traffic under `draft` and under what is active now; compare the two."""
    started = time.perf_counter()
    banks = banks or BankCache()
    emb = load_embeddings(session, encoder.revision, since=since, progress=progress)
    loaded = time.perf_counter()
    n = len(emb)
    groups = baseline_groups(session, emb, against) if n else []
    policies = [versions.load(version) for version, _ in groups]
    draft_scores, *base_scores = score_items(
        emb, *(banks.get(p, encoder) for p in (draft, *policies))
    )
    draft_sev, draft_act = severities(draft, draft_scores, emb)
    cat_ids = [c.id for c in draft.categories]
    base_act = np.zeros(n, dtype=np.int8)
    base_flag: dict[str, npt.NDArray[np.bool_]] = {}  # category -> flagged, where it exists
    base_has: dict[str, npt.NDArray[np.bool_]] = {}
    base_counts: dict[str, int] = {}
    for (version, mask), policy, scores in zip(groups, policies, base_scores, strict=True):
        sev, act = severities(policy, scores, emb)
        base_act[mask] = act[mask]
        base_counts[version.label] = int(mask.sum())
        for c, cat in enumerate(policy.categories):
            if cat.id not in base_flag:
                base_flag[cat.id] = np.zeros(n, dtype=bool)
                base_has[cat.id] = np.zeros(n, dtype=bool)
                if cat.id not in cat_ids:
                    cat_ids.append(cat.id)
            base_flag[cat.id][mask] = sev[mask, c] > 0
            base_has[cat.id][mask] = True
    scored = time.perf_counter()
    from clipmod.policy.suggest import judged, load_labels  # suggest builds on this module

    labels = load_labels(session, emb.ids, cat_ids)
    draft_index = {c.id: i for i, c in enumerate(draft.categories)}
    categories = []
    for u, cid in enumerate(cat_ids):
        d = draft_index.get(cid)
        categories.append(
            CategoryReport(
                id=cid,
                labelled=int((labels[:, u] >= 0).sum()),
                draft=judged(draft_sev[:, d] > 0, labels[:, u]) if d is not None else None,
                baseline=(
                    judged(base_flag[cid], labels[:, u], base_has[cid])
                    if cid in base_flag
                    else None
                ),
            )
        )
    ended = time.perf_counter()
    return BacktestReport(
        draft=draft_label,
        baselines=base_counts,
        model_revision=encoder.revision,
        since=_as_utc(since).isoformat() if since else None,
        items=n,
        actions={"draft": _counts(draft_act), "baseline": _counts(base_act) if n else {}},
        categories=categories,
        transitions=transitions(base_act, draft_act, emb.ids, examples),
        elapsed_s=ended - started,
        timings={
            "load_s": loaded - started,
            "score_s": scored - loaded,
            "report_s": ended - scored,
        },
    )


def _counts(action: I8) -> dict[str, int]:
    counts = np.bincount(action, minlength=3)
    return {a: int(counts[i]) for i, a in enumerate(scoring.ACTIONS)}


def transitions(before: I8, after: I8, ids: list[str], examples: int) -> list[Transition]:
    """Counts of items whose action changed (allow→review, review→block, …) with example ids."""
    code = before.astype(np.int64) * 3 + after
    counts = np.bincount(code, minlength=9)
    out = []
    for k in np.flatnonzero(counts):
        b, a = divmod(int(k), 3)
        if a == b:
            continue
        sample = np.flatnonzero(code == k)[:examples]
        out.append(
            Transition(
                scoring.ACTIONS[b], scoring.ACTIONS[a], int(counts[k]), [ids[i] for i in sample]
            )
        )
    return sorted(out, key=lambda t: -t.count)
