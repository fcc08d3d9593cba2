"""Prompt scoring: embeddings in, per-category scores out.

Embeddings are L2-normalised, so a dot product is a cosine. Two modes per category (see README
"How scoring works"):

- `similarity`: max over the category's prompts of weight · cosine (the Stable Diffusion safety
  checker's and LAION's detector's rule);
- `contrast`: CLIP zero-shot; softmax with the model's logit scale over prompts + negatives
  (log-weights as priors); the score is the probability mass on the category's own prompts.

Contrast categories usually share most of their columns (one category's prompts are the
others' negatives), so rather than a softmax per category over gathered columns, every prompt's
exp(scale · cosine) is computed once per row and ONE small matrix product sums each category's
weighted numerator and denominator: the same probabilities for about a third of the work, which
is what lets a backtest re-score a million items in about a second. A per-row stabiliser shared
by all categories could underflow for a category far below the row's best prompt; those rows
(none, in practice) are recomputed with a per-category stabiliser, so the result is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from clipmod.policy.schema import Category, Policy

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_TINY = 1e-30  # a denominator below this may have lost its digits to underflow: recompute


class TextEncoder(Protocol):
    """What scoring needs of a model: prompt embeddings, and which weights they came from.

    `clipmod.runtime.ClipRuntime` is one; tests and benchmarks may pass a stand-in.
    """

    @property
    def revision(self) -> str: ...
    @property
    def logit_scale(self) -> float: ...
    def encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.floating[Any]]: ...


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
    contrast: I64  # (K,) indices of the contrast categories
    mass: F32  # (P, 2K) per contrast category: numerator weights, then denominator weights

    @property
    def category_ids(self) -> list[str]:
        return [c.id for c in self.policy.categories]

    @cached_property
    def embeddings_t(self) -> F32:
        """(d, P), contiguous: the right-hand side of every product."""
        return np.ascontiguousarray(self.embeddings.T)

    @property
    def signature(self) -> tuple[object, ...]:
        """Everything scores depend on (not thresholds): equal signatures, equal scores."""
        cats = tuple(
            (c.mode, tuple((p.text, p.weight) for p in (*c.prompts, *c.negatives)), len(c.prompts))
            for c in self.policy.categories
        )
        return (self.texts, self.logit_scale, cats, self.embeddings.tobytes())


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
    contrast = [c for c, cat in enumerate(policy.categories) if cat.mode == "contrast"]
    mass = np.zeros((len(texts), 2 * len(contrast)), dtype=np.float32)
    for k, c in enumerate(contrast):
        span = spans[c]
        np.add.at(mass[:, k], span.prompts, span.weights)
        cols = np.concatenate([span.prompts, span.negatives])
        np.add.at(mass[:, len(contrast) + k], cols, np.exp(span.log_weights))
    return PromptBank(
        policy,
        tuple(texts),
        embeddings,
        float(logit_scale),
        tuple(spans),
        np.asarray(contrast, dtype=np.int64),
        mass,
    )


def _category_scores(cat: Category, span: _Span, sims: F32, scale: float) -> tuple[F32, I64]:
    """One category, the direct way: the reference `_contrast` must equal, and its fallback."""
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


@dataclass
class Workspace:
    """Buffers `score` reuses across calls: re-scoring history calls it a few hundred times,
    and fresh multi-megabyte arrays each time cost page faults that outweigh the arithmetic."""

    _buffers: dict[str, F32] = field(default_factory=dict)

    def get(self, name: str, rows: int, cols: int) -> F32:
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = np.empty((rows, cols), dtype=np.float32)
            self._buffers[name] = buf
        return buf[:rows]


def _contrast(bank: PromptBank, sims: F32, work: Workspace) -> F32:
    """(n, K) probability mass of every contrast category, from one exp pass (module doc)."""
    k, n = len(bank.contrast), len(sims)
    z = np.multiply(sims, np.float32(bank.logit_scale), out=work.get("z", n, sims.shape[1]))
    top = np.max(z, axis=1, keepdims=True, out=work.get("top", n, 1))
    z -= top
    np.exp(z, out=z)
    sums = np.matmul(z, bank.mass, out=work.get("sums", n, 2 * k))
    num, den = sums[:, :k], sums[:, k:]
    tiny = den < _TINY
    out: F32 = np.divide(num, np.where(tiny, np.float32(1.0), den), dtype=np.float32)
    low = np.flatnonzero(tiny.any(axis=1))
    if len(low):
        for j, c in enumerate(bank.contrast.tolist()):
            cat, span = bank.policy.categories[c], bank.spans[c]
            out[low, j] = _category_scores(cat, span, sims[low], bank.logit_scale)[0]
    return out


def score(
    bank: PromptBank,
    embeddings: npt.NDArray[np.floating],
    *,
    tops: bool = True,
    work: Workspace | None = None,
) -> tuple[F32, I64]:
    """Scores (n, C) and, per category, the index of its top prompt within the category (n, C).

    `tops=False` (re-scoring history, where only scores are read) leaves the tops at 0.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim == 1:
        emb = emb[None, :]
    n, n_cat = emb.shape[0], len(bank.spans)
    scores = np.zeros((n, n_cat), dtype=np.float32)
    top = np.zeros((n, n_cat), dtype=np.int64)
    if n == 0:
        return scores, top
    work = work or Workspace()
    sims = np.matmul(emb, bank.embeddings_t, out=work.get("sims", n, len(bank.texts)))
    if len(bank.contrast):
        scores[:, bank.contrast] = _contrast(bank, sims, work)
    scale = np.float32(bank.logit_scale)
    for c, (cat, span) in enumerate(zip(bank.policy.categories, bank.spans, strict=True)):
        if cat.mode == "similarity":
            weighted = sims[:, span.prompts] * span.weights
            if tops:
                top[:, c] = weighted.argmax(axis=1)
                scores[:, c] = weighted[np.arange(n), top[:, c]]
            else:
                scores[:, c] = weighted.max(axis=1)
        elif tops:
            # The most probable prompt is the one with the largest prior-weighted logit.
            logits = sims[:, span.prompts] * scale + span.log_weights[: len(span.prompts)]
            top[:, c] = logits.argmax(axis=1)
    return scores, top


def max_over(parts: Sequence[tuple[F32, I64]]) -> tuple[F32, I64, I64]:
    """Combine several score sets for ONE item (image, text windows) by per-category maximum.

    Returns (scores (C,), top prompt (C,), index of the part that won (C,)).
    """
    if len(parts) == 1 and len(parts[0][0]) == 1:  # one row (an image alone): nothing to pick
        only_scores, only_tops = parts[0]
        return only_scores[0], only_tops[0], np.zeros(only_scores.shape[1], dtype=np.int64)
    stacked = np.concatenate([s for s, _ in parts], axis=0)  # (parts*rows, C)
    tops = np.concatenate([t for _, t in parts], axis=0)
    owner = np.concatenate([np.full(len(s), i) for i, (s, _) in enumerate(parts)])
    best = stacked.argmax(axis=0)
    cols = np.arange(stacked.shape[1])
    return stacked[best, cols], tops[best, cols], owner[best].astype(np.int64)
