"""Scoring maths: embeddings in, per-category scores and actions out.

Pure numpy and vectorised over items, so the worker (a batch of fresh embeddings) and a backtest
(100k stored embeddings) run the same code. Embeddings are L2-normalised, so a dot product is a
cosine. Two modes per category (see README "Scoring"):

- `similarity`: max over the category's prompts of weight · cosine (the Stable Diffusion safety
  checker's and LAION's detector's rule);
- `contrast`: CLIP zero-shot; softmax with the model's logit scale over prompts + negatives
  (log-weights as priors); the score is the probability mass on the category's own prompts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clipmod.policy.schema import Category, Policy

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

ACTIONS = ("allow", "review", "block")  # index = severity


def l2_normalise(x: npt.NDArray[np.floating]) -> F32:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: F32 = (x / np.maximum(norm, 1e-12)).astype(np.float32)
    return out


@dataclass(frozen=True)
class _Span:
    """Where one category's prompts and negatives sit in the bank's embedding matrix."""

    prompts: I64
    negatives: I64
    log_weights: F32  # over prompts then negatives (contrast priors)
    weights: F32  # over prompts (similarity scale)


@dataclass(frozen=True)
class PromptBank:
    """Prompt embeddings of one policy version under one model: computed once, reused per item."""

    policy: Policy
    texts: tuple[str, ...]
    embeddings: F32  # (P, d), L2-normalised
    logit_scale: float
    spans: tuple[_Span, ...]

    @property
    def category_ids(self) -> list[str]:
        return [c.id for c in self.policy.categories]


def prompt_texts(policy: Policy) -> list[str]:
    """Every distinct prompt and negative text, in a stable order (the bank's rows)."""
    seen: dict[str, None] = {}
    for cat in policy.categories:
        for p in (*cat.prompts, *cat.negatives):
            seen.setdefault(p.text, None)
    return list(seen)


def build_bank(
    policy: Policy,
    encode_texts: Callable[[list[str]], npt.NDArray[np.floating]],
    logit_scale: float,
) -> PromptBank:
    """Embed each distinct prompt once; categories refer to rows by index."""
    texts = prompt_texts(policy)
    embeddings = l2_normalise(encode_texts(texts))
    row = {t: i for i, t in enumerate(texts)}
    spans = []
    for cat in policy.categories:
        prompts = np.array([row[p.text] for p in cat.prompts], dtype=np.int64)
        negatives = np.array([row[p.text] for p in cat.negatives], dtype=np.int64)
        weights = np.array([p.weight for p in cat.prompts], dtype=np.float32)
        neg_weights = np.array([p.weight for p in cat.negatives], dtype=np.float32)
        spans.append(
            _Span(prompts, negatives, np.log(np.concatenate([weights, neg_weights])), weights)
        )
    return PromptBank(policy, tuple(texts), embeddings, float(logit_scale), tuple(spans))


def _category_scores(cat: Category, span: _Span, sims: F32, scale: float) -> tuple[F32, I64]:
    if cat.mode == "similarity":
        weighted = sims[:, span.prompts] * span.weights
        top = weighted.argmax(axis=1)
        return weighted[np.arange(len(sims)), top], top
    cols = np.concatenate([span.prompts, span.negatives])
    logits = sims[:, cols] * scale + span.log_weights
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    own = probs[:, : len(span.prompts)]
    return own.sum(axis=1), own.argmax(axis=1)


def score(bank: PromptBank, embeddings: npt.NDArray[np.floating]) -> tuple[F32, I64]:
    """Scores (n, C) and, per category, the index of its top prompt within the category (n, C)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim == 1:
        emb = emb[None, :]
    n, n_cat = emb.shape[0], len(bank.spans)
    scores = np.zeros((n, n_cat), dtype=np.float32)
    tops = np.zeros((n, n_cat), dtype=np.int64)
    if n == 0:
        return scores, tops
    sims = emb @ bank.embeddings.T
    for c, (cat, span) in enumerate(zip(bank.policy.categories, bank.spans, strict=True)):
        scores[:, c], tops[:, c] = _category_scores(cat, span, sims, bank.logit_scale)
    return scores, tops


def max_over(parts: Sequence[tuple[F32, I64]]) -> tuple[F32, I64, I64]:
    """Combine several score sets for ONE item (image, text windows) by per-category maximum.

    Returns (scores (C,), top prompt (C,), index of the part that won (C,)).
    """
    stacked = np.concatenate([s for s, _ in parts], axis=0)  # (parts*rows, C)
    tops = np.concatenate([t for _, t in parts], axis=0)
    owner = np.concatenate([np.full(len(s), i) for i, (s, _) in enumerate(parts)])
    best = stacked.argmax(axis=0)
    cols = np.arange(stacked.shape[1])
    return stacked[best, cols], tops[best, cols], owner[best].astype(np.int64)


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
class CategoryResult:
    id: str
    score: float
    review_at: float
    block_at: float
    action: str
    top_prompt: str
    source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "score": round(self.score, 6),
            "review_at": round(self.review_at, 6),
            "block_at": round(self.block_at, 6),
            "action": self.action,
            "top_prompt": self.top_prompt,
            "source": self.source,
        }


@dataclass(frozen=True)
class Outcome:
    action: str
    categories: list[CategoryResult]
    audit: bool


def decide(
    bank: PromptBank,
    parts: Sequence[tuple[str, npt.NDArray[np.floating]]],
    *,
    item_id: str,
    tenant: str | None = None,
) -> Outcome:
    """The verdict for one item from its embeddings, e.g. [("image", (1,d)), ("text", (w,d))]."""
    policy = bank.policy
    scored = [score(bank, emb) for _, emb in parts]
    scores, tops, owner = max_over(scored)
    review, block = thresholds(policy, tenant)
    severity, eff_review, eff_block = apply_thresholds(policy, scores[None, :], review, block)
    results = []
    for c, cat in enumerate(policy.categories):
        results.append(
            CategoryResult(
                id=cat.id,
                score=float(scores[c]),
                review_at=float(eff_review[0, c]),
                block_at=float(eff_block[0, c]),
                action=ACTIONS[int(severity[0, c])],
                top_prompt=cat.prompts[int(tops[c])].text,
                source=parts[int(owner[c])][0],
            )
        )
    worst = int(severity.max()) if severity.size else 0
    audit = worst == 0 and audit_sampled(item_id, policy.audit_sample_rate)
    return Outcome(action="review" if audit else ACTIONS[worst], categories=results, audit=audit)
