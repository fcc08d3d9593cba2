"""Two policy versions compared: side by side by line, and what changed, in words.

A YAML line diff shows every edit but not its meaning (a moved prompt looks like a deletion and
an insertion; a threshold hides among forty prompt lines), so the words come from the parsed
policies: which categories, prompts, negatives and thresholds differ.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from clipmod.policy.schema import Category, Policy, Thresholds

RowKind = Literal["same", "changed", "removed", "added"]


@dataclass(frozen=True)
class Row:
    """One side-by-side row: a line number and text on each side (None where a side has none)."""

    kind: RowKind
    left_no: int | None
    left: str | None
    right_no: int | None
    right: str | None


def side_by_side(left: str, right: str) -> list[Row]:
    a, b = left.splitlines(), right.splitlines()
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [
                Row("same", i + 1, a[i], j + 1, b[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            continue
        span = max(i2 - i1, j2 - j1)
        for k in range(span):
            i, j = i1 + k, j1 + k
            has_l, has_r = i < i2, j < j2
            kind: RowKind = "changed" if has_l and has_r else "removed" if has_l else "added"
            rows.append(
                Row(
                    kind,
                    i + 1 if has_l else None,
                    a[i] if has_l else None,
                    j + 1 if has_r else None,
                    b[j] if has_r else None,
                )
            )
    return rows


def folded(rows: list[Row], context: int = 3) -> list[Row | int]:
    """The rows with long unchanged runs replaced by their length: a threshold edit in a
    350-line policy reads as the few lines around it, not as the whole file twice."""
    near = [False] * len(rows)
    for i, row in enumerate(rows):
        if row.kind != "same":
            for j in range(max(0, i - context), min(len(rows), i + context + 1)):
                near[j] = True
    out: list[Row | int] = []
    for row, keep in zip(rows, near, strict=True):
        if keep:
            out.append(row)
        elif out and isinstance(out[-1], int):
            out[-1] += 1
        else:
            out.append(1)
    return out


def _texts(prompts: list[str]) -> str:
    return ", ".join(repr(p) for p in prompts)


def _list_changes(what: str, before: list[str], after: list[str]) -> Iterator[str]:
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    if added:
        yield f"added {what} {_texts(added)}"
    if removed:
        yield f"removed {what} {_texts(removed)}"
    if not added and not removed and before != after:
        yield f"reordered its {what}"


def _thresholds(before: Thresholds, after: Thresholds) -> Iterator[str]:
    for name in ("review_at", "block_at"):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            direction = "raised" if new > old else "lowered"
            yield f"{name} {old} → {new} ({direction})"


def _category(before: Category, after: Category) -> Iterator[str]:
    yield from _thresholds(before, after)
    if before.mode != after.mode:
        yield f"mode {before.mode} → {after.mode}"
    weights_a = {p.text: p.weight for p in before.prompts}
    weights_b = {p.text: p.weight for p in after.prompts}
    yield from _list_changes("prompts", list(weights_a), list(weights_b))
    for text, weight in weights_b.items():
        if text in weights_a and weights_a[text] != weight:
            yield f"prompt {text!r} weight {weights_a[text]} → {weight}"
    yield from _list_changes(
        "negatives", [n.text for n in before.negatives], [n.text for n in after.negatives]
    )
    if before.special != after.special:
        yield "is now special (escalates the others)" if after.special else "is no longer special"
    if (before.title, before.description) != (after.title, after.description):
        yield "title or description reworded"


def in_words(before: Policy, after: Policy) -> list[str]:
    """One sentence per change, thresholds and prompts first: what an editor needs to review."""
    out: list[str] = []
    if before.name != after.name:
        out.append(f"policy renamed {before.name!r} → {after.name!r}")
    if before.model != after.model:
        out.append(f"model {before.model or '(any)'!r} → {after.model or '(any)'!r}")
    old = {c.id: c for c in before.categories}
    new = {c.id: c for c in after.categories}
    for cid, cat in new.items():
        if cid not in old:
            out.append(
                f"category {cid}: added ({len(cat.prompts)} prompts, review_at {cat.review_at}, "
                f"block_at {cat.block_at})"
            )
        else:
            out += [f"category {cid}: {change}" for change in _category(old[cid], cat)]
    out += [f"category {cid}: removed" for cid in old if cid not in new]
    if [c.id for c in before.categories if c.id in new] != [
        c.id for c in after.categories if c.id in old
    ]:
        out.append("categories reordered")
    if before.escalation.lower_by != after.escalation.lower_by:
        out.append(
            f"escalation.lower_by {before.escalation.lower_by} → {after.escalation.lower_by}"
        )
    if before.audit_sample_rate != after.audit_sample_rate:
        out.append(f"audit_sample_rate {before.audit_sample_rate} → {after.audit_sample_rate}")
    out += _overrides(before, after)
    if before.description != after.description:
        out.append("description reworded")
    return out


def _overrides(before: Policy, after: Policy) -> Iterator[str]:
    tenants = sorted(set(before.tenant_overrides) | set(after.tenant_overrides))
    for tenant in tenants:
        a = before.tenant_overrides.get(tenant)
        b = after.tenant_overrides.get(tenant)
        if a is None:
            yield f"tenant {tenant}: override added"
        elif b is None:
            yield f"tenant {tenant}: override removed"
        else:
            for cid in sorted(set(a.thresholds) | set(b.thresholds)):
                ta, tb = a.thresholds.get(cid), b.thresholds.get(cid)
                if ta is None or tb is None:
                    yield f"tenant {tenant}: {cid} override {'added' if ta is None else 'removed'}"
                else:
                    yield from (f"tenant {tenant}: {cid} {c}" for c in _thresholds(ta, tb))
