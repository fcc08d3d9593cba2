"""The verdict rule: per-category scores (`prompts`) and bank matches (`banks`) in, actions out.

Pure numpy and vectorised over items, so the worker (a batch of fresh embeddings) and a backtest
(a million stored embeddings) run the same code: `judge` is the one place thresholds,
escalation, banks and audit sampling turn scores into actions. The prompt maths lives in
`clipmod.policy.prompts` and is re-exported here, where callers have always found it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clipmod.actions import Action
from clipmod.policy import banks as bank_rule
from clipmod.policy.banks import BankMatch, BankScores, BankSet
from clipmod.policy.prompts import (
    F32,
    F64,
    I64,
    PromptBank,
    TextEncoder,
    build_bank,
    l2_normalise,
    max_over,
    prompt_texts,
    score,
)
from clipmod.policy.schema import Policy

__all__ = [
    "F32",
    "PromptBank",
    "TextEncoder",
    "build_bank",
    "decide",
    "decide_batch",
    "judge",
    "l2_normalise",
    "max_over",
    "prompt_texts",
    "score",
]

I8 = npt.NDArray[np.int8]


def thresholds(policy: Policy, tenant: str | None = None) -> tuple[F64, F64]:
    """Base (review_at, block_at) per category, after the tenant's overrides.

    float64, so a verdict reports exactly the number the editor wrote.
    """
    override = policy.tenant_overrides.get(tenant or "")
    review, block = [], []
    for cat in policy.categories:
        t = override.thresholds.get(cat.id) if override else None
        review.append(t.review_at if t else cat.review_at)
        block.append(t.block_at if t else cat.block_at)
    return np.array(review, dtype=np.float64), np.array(block, dtype=np.float64)


def apply_thresholds(
    policy: Policy, scores: F32, review: F64, block: F64
) -> tuple[npt.NDArray[np.int8], F64, F64]:
    """Per-category severity (n, C) with escalation, and the effective thresholds used (n, C).

    Escalation: when any `special` category reaches its review threshold, every other category's
    thresholds drop by `escalation.lower_by` for that item. Special categories themselves always
    come out `allow`: they change how strictly the others are judged, nothing else.
    """
    n = scores.shape[0]
    special = np.array([c.special for c in policy.categories], dtype=bool)
    eff_review = np.broadcast_to(review, scores.shape).copy()
    eff_block = np.broadcast_to(block, scores.shape).copy()
    lower = policy.escalation.lower_by
    if special.any() and lower > 0:
        fired = (scores[:, special] >= review[special]).any(axis=1) if n else np.zeros(0, bool)
        drop = np.where(fired[:, None] & ~special[None, :], lower, 0.0)
        eff_review = np.maximum(eff_review - drop, -1.0)
        eff_block = np.maximum(eff_block - drop, -1.0)
    severity = (scores >= eff_review).astype(np.int8) + (scores >= eff_block).astype(np.int8)
    # A special category is a modifier (the SD checker's "special care"): it never acts alone.
    severity[:, special] = 0
    return severity, eff_review, eff_block


def audit_sampled(item_id: str, rate: float) -> bool:
    """Deterministic per item, so re-scoring or a backtest reproduces the same sample."""
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass(frozen=True)
class Judgement:
    """The verdict rule's output for n items under one policy (C categories)."""

    severity: I8  # (n, C) per category: 0 allow, 1 review, 2 block (see `Action.of`)
    review_at: F64  # (n, C) effective thresholds after tenant overrides and escalation
    block_at: F64  # (n, C)
    action: I8  # (n,) the item's severity, audit samples raised to review
    audit: npt.NDArray[np.bool_]  # (n,) allowed items sent to review by sampling
    bank: I64  # (n,) index of the bank match that decided (`BankSet.banks`), -1 where none


def judge(
    policy: Policy,
    scores: F32,
    *,
    item_ids: Sequence[str],
    tenant_ids: I64,
    tenant_names: Mapping[int, str],
    banks: tuple[BankSet, BankScores] | None = None,
) -> Judgement:
    """THE verdict rule, for a batch: thresholds, escalation, banks, most severe, audit.

    The worker calls it once per batch and a backtest once per policy over all stored traffic,
    so the two can never disagree. Thresholds depend on the tenant only through
    `tenant_overrides`, so items are grouped into one group per overridden tenant plus everyone
    else: a handful of vectorised calls, whatever the number of items. Bank matches (their
    cosines computed by the caller, see `clipmod.policy.banks`) apply after the prompts: an
    `allow` match clears prompt-based flags, a `block`/`review` match raises the action.
    """
    n, n_cat = scores.shape
    severity = np.zeros((n, n_cat), dtype=np.int8)
    eff_review = np.zeros((n, n_cat), dtype=np.float64)
    eff_block = np.zeros((n, n_cat), dtype=np.float64)
    rest = np.ones(n, dtype=bool)
    by_name = {name: tid for tid, name in tenant_names.items()}
    groups: list[tuple[str | None, npt.NDArray[np.bool_]]] = []
    for tenant in policy.tenant_overrides:
        if tenant in by_name:
            mask = tenant_ids == by_name[tenant]
            groups.append((tenant, mask))
            rest &= ~mask
    groups.append((None, rest))
    for group, mask in groups:
        if mask.any():
            review, block = thresholds(policy, group)
            severity[mask], eff_review[mask], eff_block[mask] = apply_thresholds(
                policy, scores[mask], review, block
            )
    deciding = np.full(n, -1, dtype=np.int64)
    if banks is not None:
        decision = bank_rule.decide(*banks)
        severity[decision.suppressed] = 0
        deciding = decision.bank
    action = severity.max(axis=1) if n_cat else np.zeros(n, dtype=np.int8)
    if banks is not None:
        action = np.maximum(action, decision.severity)
    audit = np.zeros(n, dtype=bool)
    if policy.audit_sample_rate > 0:
        # Sampling hashes the item id, so only allowed items are hashed at all.
        allowed = np.flatnonzero(action == 0)
        rate = policy.audit_sample_rate
        audit[allowed] = [audit_sampled(item_ids[i], rate) for i in allowed.tolist()]
        action[audit] = Action.REVIEW.severity
    return Judgement(severity, eff_review, eff_block, action.astype(np.int8), audit, deciding)


@dataclass(frozen=True)
class CategoryResult:
    id: str
    score: float
    review_at: float
    block_at: float
    action: Action
    top_prompt: str
    source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "review_at": round(self.review_at, 6),
            "block_at": round(self.block_at, 6),
            "action": self.action.value,
            "top_prompt": self.top_prompt,
            "source": self.source,
        }


@dataclass(frozen=True)
class Outcome:
    action: Action
    categories: list[CategoryResult]
    audit: bool
    bank_match: BankMatch | None = None


Parts = Sequence[tuple[str, npt.NDArray[np.floating]]]
"""One item's embeddings by source, e.g. `[("image", (1, d)), ("text", (windows, d))]`."""


def decide_batch(
    bank: PromptBank,
    items: Sequence[Parts],
    *,
    item_ids: Sequence[str],
    tenants: Sequence[str | None],
    banks: BankSet | None = None,
) -> list[Outcome]:
    """Verdicts for a batch: every row scored in ONE matrix product, then `judge` once.

    Rows of all items are stacked so the prompt similarity is one (rows, d) @ (d, P) product;
    each item's score per category is then the maximum over its own rows (`max_over`), which
    also names the prompt and the source (image or text) that decided it. With `banks`, the
    batch's image rows go through one more product, against the policy's stacked banks.
    """
    if not items:
        return []
    rows = [
        np.asarray(emb, dtype=np.float32).reshape(-1, bank.embeddings.shape[1])
        for parts in items
        for _, emb in parts
    ]
    all_scores, all_tops = score(bank, np.concatenate(rows, axis=0))
    combined: list[tuple[F32, I64, I64]] = []
    start = 0
    for parts in items:
        scored = []
        for _, emb in parts:
            count = len(np.asarray(emb).reshape(-1, bank.embeddings.shape[1]))
            scored.append((all_scores[start : start + count], all_tops[start : start + count]))
            start += count
        combined.append(max_over(scored))
    scores = np.stack([c[0] for c in combined])
    names = dict(enumerate(dict.fromkeys(t for t in tenants if t is not None)))
    index = {t: i for i, t in names.items()}
    tenant_ids = np.array([index.get(t, -1) if t else -1 for t in tenants], dtype=np.int64)
    matched = _match_images(banks, items, bank.embeddings.shape[1]) if banks else None
    verdict = judge(
        bank.policy,
        scores,
        item_ids=item_ids,
        tenant_ids=tenant_ids,
        tenant_names=names,
        banks=(banks, matched) if banks is not None and matched is not None else None,
    )
    # Plain lists from here: one `tolist()` per array instead of a numpy scalar per field,
    # which was most of this loop's cost at a GPU's batch of 256 (same values either way).
    score_rows, review_rows = scores.tolist(), verdict.review_at.tolist()
    block_rows, severity_rows = verdict.block_at.tolist(), verdict.severity.tolist()
    actions, audits, bank_hits = verdict.action.tolist(), verdict.audit.tolist(), verdict.bank
    outcomes = []
    for k, parts in enumerate(items):
        _, tops, owner = combined[k]
        top_list, owner_list = tops.tolist(), owner.tolist()
        categories = [
            CategoryResult(
                id=cat.id,
                score=score_rows[k][c],
                review_at=review_rows[k][c],
                block_at=block_rows[k][c],
                action=Action.of(severity_rows[k][c]),
                top_prompt=cat.prompts[top_list[c]].text,
                source=parts[owner_list[c]][0],
            )
            for c, cat in enumerate(bank.policy.categories)
        ]
        hit = (
            bank_rule.match_of(banks, matched, int(bank_hits[k]), k)
            if banks is not None and matched is not None and bank_hits[k] >= 0
            else None
        )
        outcomes.append(Outcome(Action.of(actions[k]), categories, bool(audits[k]), hit))
    return outcomes


def _match_images(banks: BankSet, items: Sequence[Parts], dim: int) -> BankScores:
    """Bank cosines for each item's image row (items without an image match nothing)."""
    owners = [k for k, parts in enumerate(items) for source, _ in parts if source == "image"]
    rows = [
        np.asarray(emb, dtype=np.float32).reshape(-1, dim)[0]
        for parts in items
        for source, emb in parts
        if source == "image"
    ]
    found = banks.match(np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32))
    sim = np.full((len(items), len(banks.banks)), -np.inf, dtype=np.float32)
    entry = np.full((len(items), len(banks.banks)), -1, dtype=np.int64)
    sim[owners], entry[owners] = found.similarity, found.entry
    return BankScores(sim, entry)


def decide(
    bank: PromptBank,
    parts: Parts,
    *,
    item_id: str,
    tenant: str | None = None,
    banks: BankSet | None = None,
) -> Outcome:
    """The verdict for one item: `decide_batch` with a batch of one."""
    return decide_batch(bank, [parts], item_ids=[item_id], tenants=[tenant], banks=banks)[0]
