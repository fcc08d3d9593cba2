"""CLIP's text window, in one place: the runtime cuts text by it and lint warns about it."""

from __future__ import annotations

from collections.abc import Sequence

CONTEXT_TOKENS = 77  # CLIP's text context, including the start and end tokens
BODY_TOKENS = CONTEXT_TOKENS - 2  # what is left for the text itself


def body_chunks(ids: Sequence[int]) -> list[list[int]]:
    """Token ids cut into window bodies; long text is scored by its most severe window, so
    every token must land in some window (never truncated). Empty text is one empty window."""
    return [list(ids[i : i + BODY_TOKENS]) for i in range(0, len(ids), BODY_TOKENS)] or [[]]
