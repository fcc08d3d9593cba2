"""The three actions a verdict can carry, in severity order: the one place that order lives.

Scoring computes severities as small integers (0, 1, 2) over whole arrays; `Action.of` turns
one back into the enum, so verdicts, backtests and reports never keep their own copy.
"""

from __future__ import annotations

import enum


class Action(enum.StrEnum):
    """Declared in severity order: an item's action is the most severe of its categories'."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _ORDER.index(self)

    @classmethod
    def of(cls, severity: int) -> Action:
        return _ORDER[severity]


_ORDER: tuple[Action, ...] = tuple(Action)
