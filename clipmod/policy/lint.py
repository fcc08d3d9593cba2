"""Lint a policy: things that validate but would moderate badly.

The schema rejects what cannot be a policy; lint finds what is probably a mistake, before an
editor publishes it. Checks that need the model (prompt tokens, prompt similarity) run when a
runtime is given; checks against past traffic when a database session is given too, and they
re-score the stored embeddings for the runtime's revision (no image forward pass).

Codes are stable; severities:

- error: the policy would not do what it says (`contrast_without_negatives`, `duplicate_prompt`,
  `prompt_is_negative`, `shared_prompt`, `model_mismatch`, `prompt_no_tokens`,
  `threshold_flags_everything`);
- warning: worth a look (`near_duplicate_prompt`, `prompt_truncated`,
  `never_flags`, `reviews_all_traffic`, `blocks_all_traffic`, `unknown_tenant`,
  `escalation_unused`, `special_without_escalation`);
- banks (`bank_lint`): errors `bank_not_found`, `bank_model_mismatch`,
  `bank_version_not_found`; warnings `bank_empty`, `bank_entries_conflict`,
  `bank_matches_much_traffic`.

Exit status of `clipmod policy lint`: 0 clean (or warnings only), 1 warnings with `--strict`,
2 any error or an invalid file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.bundled import declared_model_id
from clipmod.models import Tenant
from clipmod.policy import scoring
from clipmod.policy.bank_lint import bank_findings
from clipmod.policy.loader import node_at
from clipmod.policy.rescore import BankCache, item_scores
from clipmod.policy.schema import Category, Policy
from clipmod.policy.scoring import TextEncoder
from clipmod.policy.traffic import StoredEmbeddings, load_embeddings
from clipmod.text import BODY_TOKENS
from clipmod.traffic.sync import TrafficStore

NEAR_DUPLICATE_COS = 0.95
MIN_TRAFFIC = 20  # fewer stored items than this say nothing about a threshold

Severity = Literal["error", "warning"]


class LintRuntime(TextEncoder, Protocol):
    """The parts of `clipmod.runtime.ClipRuntime` lint uses: a text encoder, and more."""

    @property
    def display_name(self) -> str: ...
    def text_windows(self, text: str) -> list[list[int]]: ...


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    field: str
    message: str
    source: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column} " if self.line is not None else ""
        return f"{where}{self.field}: {self.severity} [{self.code}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exit_status(findings: Sequence[Finding], *, strict: bool = False) -> int:
    """2 with any error; 1 with warnings under `strict`; else 0."""
    if any(f.severity == "error" for f in findings):
        return 2
    return 1 if strict and findings else 0


def lint(
    policy: Policy,
    *,
    runtime: LintRuntime | None = None,
    session: Session | None = None,
    model_name: str | None = None,
    yaml_text: str | None = None,
    source: str = "<policy>",
    near_duplicate: float = NEAR_DUPLICATE_COS,
    min_traffic: int = MIN_TRAFFIC,
    traffic: StoredEmbeddings | None = None,
    banks: BankCache | None = None,
    traffic_scores: Callable[[Policy, StoredEmbeddings], npt.NDArray[np.float32]] | None = None,
    store: TrafficStore | None = None,
) -> list[Finding]:
    """Every finding for `policy`, errors first; positioned when `yaml_text` is given.

    `traffic` (the stored embeddings, already read), `banks` and `traffic_scores` (the stored
    items' scores under the policy's prompts, perhaps remembered) let a caller that lints on
    every pause in typing (the editor) skip re-reading history and re-scoring it when only
    thresholds changed. They change no finding.
    """
    findings = [*_structure(policy), *_model_name(policy, runtime, model_name)]
    emb: StoredEmbeddings | None = None  # stored traffic, once read (the bank checks use it too)
    if runtime is not None:
        findings += _tokens(policy, runtime)
        findings += _similar_prompts(policy, runtime, near_duplicate)
        if session is not None:
            emb = (
                traffic
                if traffic is not None
                else load_embeddings(session, runtime.revision, store=store)
            )
            if traffic_scores is None:
                cache = banks or BankCache()

                def traffic_scores(p: Policy, e: StoredEmbeddings) -> npt.NDArray[np.float32]:
                    return item_scores(cache.get(p, runtime), e)

            findings += _traffic(policy, emb, min_traffic, traffic_scores)
    if session is not None:
        revision = runtime.revision if runtime is not None else None
        findings += [
            Finding(*f) for f in bank_findings(policy, session, revision, emb, min_traffic)
        ]
        known = set(session.scalars(select(Tenant.name)))
        findings += [
            Finding("warning", "unknown_tenant", f"tenant_overrides.{name}", "no such tenant")
            for name in policy.tenant_overrides
            if name not in known
        ]
    if yaml_text is not None:
        findings = _positioned(findings, yaml_text, source)
    return sorted(findings, key=lambda f: (f.severity != "error", f.line or 0, f.field))


# -- checks that need nothing but the policy ----------------------------------------------------


def _norm(text: str) -> str:
    """CLIP's tokenizer lowercases and collapses whitespace: such texts are the same prompt."""
    return " ".join(text.casefold().split())


def _structure(policy: Policy) -> Iterator[Finding]:
    owner: dict[str, str] = {}
    for i, cat in enumerate(policy.categories):
        at = f"categories[{i}]"
        if cat.mode == "contrast" and not cat.negatives:
            yield Finding(
                "error",
                "contrast_without_negatives",
                f"{at}.negatives",
                "a contrast category needs negatives: with none, its score is always 1.0 and "
                "it blocks everything",
            )
        seen: dict[str, int] = {}
        for j, p in enumerate(cat.prompts):
            key = _norm(p.text)
            if key in seen:
                yield Finding(
                    "error",
                    "duplicate_prompt",
                    f"{at}.prompts[{j}]",
                    f"same text as prompts[{seen[key]}] ({p.text!r})",
                )
            seen.setdefault(key, j)
            if key in owner and owner[key] != cat.id:
                yield Finding(
                    "error",
                    "shared_prompt",
                    f"{at}.prompts[{j}]",
                    f"{p.text!r} is also a prompt of category {owner[key]!r}: "
                    "both would fire on the same content",
                )
            owner.setdefault(key, cat.id)
        for j, n in enumerate(cat.negatives):
            if _norm(n.text) in seen:
                yield Finding(
                    "error",
                    "prompt_is_negative",
                    f"{at}.negatives[{j}]",
                    f"{n.text!r} is both a prompt and a negative of this category",
                )
        yield from _contrast_bounds(policy, i, cat)
    specials = any(c.special for c in policy.categories)
    if policy.escalation.lower_by > 0 and not specials:
        yield Finding(
            "warning",
            "escalation_unused",
            "escalation.lower_by",
            "no category is `special`, so escalation never applies",
        )
    if specials and policy.escalation.lower_by == 0:
        yield Finding(
            "warning",
            "special_without_escalation",
            "escalation.lower_by",
            "a `special` category never acts by itself, and with lower_by 0 it lowers nothing",
        )


def _threshold_fields(policy: Policy, i: int, cat: Category) -> Iterator[tuple[str, float, float]]:
    """(field prefix, review_at, block_at) for the category and each tenant's override of it."""
    yield f"categories[{i}]", cat.review_at, cat.block_at
    for tenant, override in policy.tenant_overrides.items():
        t = override.thresholds.get(cat.id)
        if t is not None:
            yield f"tenant_overrides.{tenant}.thresholds.{cat.id}", t.review_at, t.block_at


def _contrast_bounds(policy: Policy, i: int, cat: Category) -> Iterator[Finding]:
    """A contrast score is a probability: a threshold at or below 0 fires on everything."""
    if cat.mode != "contrast":
        return
    for at, review, block in _threshold_fields(policy, i, cat):
        for name, value in (("review_at", review), ("block_at", block)):
            if value <= 0:
                yield Finding(
                    "error",
                    "threshold_flags_everything",
                    f"{at}.{name}",
                    f"{value} ≤ 0, and a contrast score (a probability) is never below 0",
                )


def _model_aliases(runtime: LintRuntime | None, model_name: str | None) -> list[str]:
    """Names the workers' model goes by: the runtime's, the setting and its folder name, and a
    bundled folder's `model_id` from its `training.json` (`clipmod.demo.train` writes it)."""
    names = [runtime.display_name] if runtime is not None else []
    if model_name:
        folder = Path(model_name)
        names += [declared_model_id(folder) or "", folder.name, model_name]
    return list(dict.fromkeys(n for n in names if n))


def _model_name(
    policy: Policy, runtime: LintRuntime | None, model_name: str | None
) -> Iterator[Finding]:
    """Thresholds are calibrated for one model's score distribution; another model's differ."""
    names = _model_aliases(runtime, model_name)
    if policy.model and names and policy.model not in names:
        also = f" ({', '.join(names[1:])})" if len(names) > 1 else ""
        yield Finding(
            "error",
            "model_mismatch",
            "model",
            f"written for {policy.model!r}, but the workers run {names[0]!r}{also}: "
            "its thresholds do not carry over",
        )


# -- checks that need the model -------------------------------------------------------------


def _prompt_fields(policy: Policy) -> Iterator[tuple[str, str, int, bool]]:
    """(field, text, category index, is_negative) for every prompt and negative."""
    for i, cat in enumerate(policy.categories):
        for j, p in enumerate(cat.prompts):
            yield f"categories[{i}].prompts[{j}]", p.text, i, False
        for j, n in enumerate(cat.negatives):
            yield f"categories[{i}].negatives[{j}]", n.text, i, True


def _tokens(policy: Policy, runtime: LintRuntime) -> Iterator[Finding]:
    for field, text, _, _ in _prompt_fields(policy):
        windows = runtime.text_windows(text)
        body = sum(len(w) - 2 for w in windows)
        if body == 0:
            yield Finding("error", "prompt_no_tokens", field, f"{text!r} is no tokens to the model")
        elif len(windows) > 1:
            yield Finding(
                "warning",
                "prompt_truncated",
                field,
                f"{body} tokens; the model reads only the first {BODY_TOKENS} of a prompt",
            )


def _similar_prompts(policy: Policy, runtime: LintRuntime, limit: float) -> Iterator[Finding]:
    """Near-duplicate prompts by cosine under the loaded model, within a category (a redundant
    ensemble member) or across categories (both fire on the same content). Identical texts are
    `_structure`'s errors. Negatives are left out: in a contrast category they are meant to be
    other categories' prompts, and templated prompts ("a photo of a …") sit close under any
    CLIP, so comparing them would bury the real findings."""
    rows = [row for row in _prompt_fields(policy) if not row[3]]
    emb = scoring.l2_normalise(runtime.encode_texts([text for _, text, _, _ in rows]))
    cos = emb @ emb.T
    for a, b in zip(*np.triu_indices(len(rows), k=1), strict=True):
        (fa, ta, ca, _), (fb, tb, cb, _) = rows[a], rows[b]
        if cos[a, b] < limit or _norm(ta) == _norm(tb):
            continue
        where = (
            "in the same category"
            if ca == cb
            else f"of category {policy.categories[ca].id!r}: both would fire on the same content"
        )
        yield Finding(
            "warning",
            "near_duplicate_prompt",
            fb,
            f"{tb!r} is {cos[a, b]:.3f} cosine to {ta!r} ({fa}) {where}",
        )


def _traffic(
    policy: Policy,
    emb: StoredEmbeddings,
    min_traffic: int,
    scores_of: Callable[[Policy, StoredEmbeddings], npt.NDArray[np.float32]],
) -> Iterator[Finding]:
    """Thresholds outside the range of scores this policy gives the stored traffic."""
    n = len(emb)
    if n < min_traffic:
        return
    scores = scores_of(policy, emb)
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    for i, cat in enumerate(policy.categories):
        seen = f"scores seen on {n} stored items: {lo[i]:.3f} to {hi[i]:.3f}"
        for at, review, block in _threshold_fields(policy, i, cat):
            if review > hi[i]:
                yield Finding(
                    "warning", "never_flags", f"{at}.review_at", f"{review} is above all {seen}"
                )
            elif review <= lo[i]:
                yield Finding(
                    "warning",
                    "reviews_all_traffic",
                    f"{at}.review_at",
                    f"{review} is at or below all {seen}",
                )
            if block <= lo[i] and not cat.special:  # a special category never blocks
                yield Finding(
                    "warning",
                    "blocks_all_traffic",
                    f"{at}.block_at",
                    f"{block} is at or below all {seen}",
                )


# -- positions --------------------------------------------------------------------------------

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _positioned(findings: list[Finding], yaml_text: str, source: str) -> list[Finding]:
    """Attach file:line:column by walking the YAML node tree along each field path."""
    try:
        root = yaml.compose(yaml_text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return findings
    out = []
    for f in findings:
        loc = tuple(int(idx) if idx else key for key, idx in _PART.findall(f.field) if key or idx)
        node = node_at(root, loc)
        mark = node.start_mark if node is not None else None
        out.append(
            replace(
                f,
                source=source,
                line=mark.line + 1 if mark else 1,
                column=mark.column + 1 if mark else 1,
            )
        )
    return out
