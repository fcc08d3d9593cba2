"""The one validation of a policy text, for the CLI, the API and the editor alike.

`check` is `parse_policy` (YAML and schema, positioned problems) followed by `lint.lint`
(positioned findings). `clipmod policy lint`, `POST /v1/policies/lint` and the editor's live
markers all call it, so the three can never disagree about a text: a test feeds all three the
same texts and compares what they say.

The editor checks on every pause in typing; `CachingEncoder` and a `BankCache` make that cheap
without changing any answer: a prompt list is embedded by the real model the first time it is
seen, and an unchanged list (the common case, when a threshold is being edited) is not
embedded again.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clipmod.models import ItemEmbedding
from clipmod.policy import lint
from clipmod.policy.lint import Finding, LintRuntime
from clipmod.policy.loader import PolicyError, Problem, parse_policy
from clipmod.policy.rescore import BankCache, item_scores
from clipmod.policy.schema import Policy
from clipmod.policy.traffic import StoredEmbeddings, load_embeddings
from clipmod.traffic.sync import TrafficStore


@dataclass(frozen=True)
class Validation:
    """What a text is: its problems (it is no policy) or its policy and lint findings."""

    source: str
    policy: Policy | None
    problems: list[Problem] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.problems) + sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    def markers(self) -> list[dict[str, Any]]:
        """Problems and findings in one shape: severity, code, field, message, line, column, and
        `text`, the exact line the CLI prints for it."""
        out = [
            {
                "severity": "error",
                "code": "invalid_policy",
                "field": p.field,
                "message": p.message,
                "line": p.line,
                "column": p.column,
                "text": str(p),
            }
            for p in self.problems
        ]
        out += [
            {
                "severity": f.severity,
                "code": f.code,
                "field": f.field,
                "message": f.message,
                "line": f.line or 1,
                "column": f.column or 1,
                "text": str(f),
            }
            for f in self.findings
        ]
        return out


def check(
    text: str,
    *,
    source: str = "<policy>",
    runtime: LintRuntime | None = None,
    session: Session | None = None,
    model_name: str | None = None,
    near_duplicate: float = lint.NEAR_DUPLICATE_COS,
    traffic: StoredEmbeddings | None = None,
    banks: BankCache | None = None,
    scores: ScoreCache | None = None,
    store: TrafficStore | None = None,
) -> Validation:
    """Parse, then lint: a text with problems is not linted (there is no policy to lint)."""
    try:
        policy = parse_policy(text, source=source)
    except PolicyError as exc:
        return Validation(source, None, problems=exc.problems)
    findings = lint.lint(
        policy,
        runtime=runtime,
        session=session,
        model_name=model_name,
        yaml_text=text,
        source=source,
        near_duplicate=near_duplicate,
        traffic=traffic,
        store=store,
        banks=banks,
        traffic_scores=scores.scores_of(runtime, banks) if scores and runtime else None,
    )
    return Validation(source, policy, findings=findings)


class CachingEncoder:
    """A `LintRuntime` that remembers the embeddings of the last prompt lists it was asked for.

    Keyed by the whole list, so every answer is exactly the one the model gives for that call
    (batching can move the last bits of a float; a per-text cache could then make the editor
    print a cosine the CLI would not).
    """

    def __init__(self, runtime: LintRuntime, size: int = 64):
        self.runtime = runtime
        self.size = size
        self._cache: OrderedDict[tuple[str, ...], npt.NDArray[np.floating[Any]]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def revision(self) -> str:
        return self.runtime.revision

    @property
    def logit_scale(self) -> float:
        return self.runtime.logit_scale

    @property
    def display_name(self) -> str:
        return self.runtime.display_name

    def text_windows(self, text: str) -> list[list[int]]:
        return self.runtime.text_windows(text)

    def encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.floating[Any]]:
        key = tuple(texts)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        rows = self.runtime.encode_texts(list(texts))
        with self._lock:
            self._cache[key] = rows
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return rows


def prompt_signature(policy: Policy) -> str:
    """What a category's scores depend on: its mode, prompts and negatives (with weights), and
    nothing else, so that moving a threshold keeps the signature."""
    return json.dumps(
        [
            [
                c.mode,
                [[p.text, p.weight] for p in c.prompts],
                [[n.text, n.weight] for n in c.negatives],
            ]
            for c in policy.categories
        ]
    )


class ScoreCache:
    """The stored items' scores under the newest prompt set: while an editor moves thresholds,
    lint's traffic checks compare against scores computed once, not once per keystroke (0.3 s
    per 100k items on the development machine)."""

    def __init__(self) -> None:
        # The traffic is held, not just named: compared by identity, a freed copy's id could
        # be reused by a new one.
        self._emb: StoredEmbeddings | None = None
        self._key: tuple[str, str] | None = None
        self._scores: npt.NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    def scores_of(
        self, runtime: LintRuntime, banks: BankCache | None
    ) -> Callable[[Policy, StoredEmbeddings], npt.NDArray[np.float32]]:
        cache = banks or BankCache()

        def scores(policy: Policy, emb: StoredEmbeddings) -> npt.NDArray[np.float32]:
            key = (runtime.revision, prompt_signature(policy))
            with self._lock:
                if emb is self._emb and key == self._key and self._scores is not None:
                    return self._scores
            out = item_scores(cache.get(policy, runtime), emb)
            with self._lock:
                self._emb, self._key, self._scores = emb, key, out
            return out

        return scores


class TrafficCache:
    """Stored traffic for lint's threshold checks, read again only when items were added.

    Lint compares thresholds with the scores of every stored item; reading 100k items takes
    most of a second, too slow for every pause in typing. A count of the stored rows (a few
    milliseconds) says whether the copy in memory is still the whole history. The copy costs
    ~1 KB per item (d = 512, float16) in the API process, and only once someone uses the editor.
    """

    def __init__(self) -> None:
        self._cached: tuple[str, int, StoredEmbeddings] | None = None
        self._lock = threading.Lock()

    def get(self, session: Session, revision: str) -> StoredEmbeddings:
        count = int(
            session.scalar(
                select(func.count())
                .select_from(ItemEmbedding)
                .where(ItemEmbedding.model_revision == revision)
            )
            or 0
        )
        with self._lock:
            cached = self._cached
            if cached is not None and cached[:2] == (revision, count):
                return cached[2]
            emb = load_embeddings(session, revision)
            self._cached = (revision, count, emb)
            return emb
