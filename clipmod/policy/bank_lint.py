"""Lint checks for a policy's banks (called by `lint.lint` when it has a database session).

Errors: a reference the workers could not honour (`bank_not_found`, `bank_model_mismatch`,
`bank_version_not_found`). Warnings: `bank_empty` (matches nothing); `bank_entries_conflict`,
a `block` or `review` entry closer than a threshold to an `allow` entry, so an image near both
is blocked and allowed at once (the block wins, and the allow entry does not do what its author
meant); `bank_matches_much_traffic`, a bank that at its threshold would decide a large share of
stored traffic (HMA's most reported problem: runaway matches).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.actions import Action
from clipmod.banks import registry
from clipmod.banks.history import match_history
from clipmod.errors import ClipmodError
from clipmod.models import Bank
from clipmod.policy.banks import BankSnapshot, stack
from clipmod.policy.schema import Policy
from clipmod.policy.traffic import StoredEmbeddings

MUCH_TRAFFIC = 0.05  # a bank deciding more than this share of stored items deserves a look
_PAIRS_BLOCK = 4096
_SAMPLE = 200_000  # stored items matched for `bank_matches_much_traffic`

# severity, code, field, message: the fields of `lint.Finding`, which imports this module
Finding = tuple[Literal["error", "warning"], str, str, str]


def bank_findings(
    policy: Policy,
    session: Session,
    revision: str | None,
    traffic: StoredEmbeddings | None = None,
    min_traffic: int = 20,
) -> Iterator[Finding]:
    snaps: list[tuple[int, BankSnapshot, float]] = []
    for i, ref in enumerate(policy.banks):
        at = f"banks[{i}]"
        bank = session.scalar(select(Bank).where(Bank.name == ref.name))
        if bank is None:
            yield ("error", "bank_not_found", f"{at}.name", f"no bank named {ref.name!r}")
            continue
        if revision is not None and bank.model_revision != revision:
            yield (
                "error",
                "bank_model_mismatch",
                f"{at}.name",
                f"bank {ref.name!r} holds embeddings of model revision {bank.model_revision}, "
                f"but the workers run {revision}: it would not be matched",
            )
            continue
        try:
            snap = registry.snapshot(session, bank, ref.version)
        except ClipmodError as exc:
            yield ("error", "bank_version_not_found", f"{at}.version", exc.message)
            continue
        if not len(snap):
            yield ("warning", "bank_empty", f"{at}.name", f"{snap.label} has no entries")
            continue
        snaps.append((i, snap, ref.threshold))
    yield from _conflicts(snaps)
    if traffic is not None and len(traffic) >= min_traffic and snaps:
        yield from _much_traffic(snaps, traffic)


def _conflicts(snaps: list[tuple[int, BankSnapshot, float]]) -> Iterator[Finding]:
    allows = [s for s in snaps if s[1].kind == Action.ALLOW]
    for i, flag, t_flag in snaps:
        if flag.kind == Action.ALLOW:
            continue
        for _, allow, t_allow in allows:
            limit = min(t_flag, t_allow)
            count, worst = 0, (-np.inf, -1, -1)
            for start in range(0, len(flag), _PAIRS_BLOCK):
                cos = flag.embeddings[start : start + _PAIRS_BLOCK] @ allow.embeddings.T
                count += int((cos >= limit).sum())
                r, c = np.unravel_index(int(cos.argmax()), cos.shape)
                if cos[r, c] > worst[0]:
                    worst = (float(cos[r, c]), start + int(r), int(c))
            if count:
                cos_max, row, col = worst
                yield (
                    "warning",
                    "bank_entries_conflict",
                    f"banks[{i}].name",
                    f"{count} pair(s) of {flag.label} ({flag.kind.value}) and {allow.label} "
                    f"(allow) entries are closer than {limit}; e.g. entry "
                    f"{flag.entry_ids[row]} is {cos_max:.3f} cosine to entry "
                    f"{allow.entry_ids[col]}: an image near both is {flag.kind.value}ed",
                )


def _much_traffic(
    snaps: list[tuple[int, BankSnapshot, float]], traffic: StoredEmbeddings
) -> Iterator[Finding]:
    keep = np.zeros(len(traffic), dtype=bool)
    keep[np.linspace(0, len(traffic) - 1, min(len(traffic), _SAMPLE)).astype(np.int64)] = True
    sample = traffic.subset(keep)
    scores = match_history(sample, [stack([(snap, t)]) for _, snap, t in snaps])
    for (i, snap, t), found in zip(snaps, scores, strict=True):
        share = float((found.similarity[:, 0] >= t).mean())
        if share > MUCH_TRAFFIC:
            yield (
                "warning",
                "bank_matches_much_traffic",
                f"banks[{i}].threshold",
                f"{snap.label} at {t} matches {100 * share:.1f}% of "
                f"{len(sample)} stored items: is the threshold too low?",
            )
