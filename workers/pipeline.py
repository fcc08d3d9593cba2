"""Score a batch of items: the body of the worker's task, as a plain object.

Celery only hands us ids (see `workers.tasks`); everything here takes its dependencies
explicitly, so tests drive it directly against a real database and model.

One batch = one transaction to claim the items, decoding on the GPU or in a thread or process
pool (`workers.prepare`), ONE image forward pass and ONE text forward pass, then one
transaction writing every verdict and embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings
from clipmod.banks.live import LiveBanks
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import ActivationMode, utcnow
from clipmod.policy import scoring
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import ingest, metrics, store
from workers.metrics import StageTimer
from workers.policies import PolicyCache
from workers.prepare import Preparer

log = logging.getLogger(__name__)

MAX_ATTEMPTS = store.MAX_ATTEMPTS


@dataclass
class _Work:
    """One claimed item on its way through the batch."""

    id: str
    tenant: str
    tenant_id: int
    image_sha256: str | None
    text: str | None
    version_id: int
    shadow_version_id: int | None
    pixels: np.ndarray | torch.Tensor | None = None  # a tensor: decoded on the model's GPU
    windows: list[list[int]] = field(default_factory=list)
    error: ClipmodError | None = None
    image_emb: np.ndarray | None = None
    text_emb: np.ndarray | None = None
    image_url: str | None = None

    def parts(self) -> list[tuple[str, np.ndarray]]:
        """The embeddings a verdict is decided from, by source (see `scoring.Parts`)."""
        parts: list[tuple[str, np.ndarray]] = []
        if self.image_emb is not None:
            parts.append(("image", self.image_emb))
        if self.text_emb is not None:
            parts.append(("text", self.text_emb))
        return parts


@dataclass
class Batch:
    """A claimed batch between `Scorer.begin` and `Scorer.finish`."""

    work: list[_Work]
    timer: StageTimer
    error: Exception | None = None
    rows: tuple[list[store.Scored], list[store.Failed]] | None = None


class Scorer:
    def __init__(
        self,
        settings: Settings,
        runtime: ClipRuntime,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        worker_id: str | None = None,
    ):
        self.settings = settings
        self.runtime = runtime
        self.sessions = sessions
        self.blobs = blobs
        self.policies = PolicyCache(runtime, settings.policy_refresh_s)
        self.worker_id = worker_id or store.worker_identity()
        self.banks = LiveBanks(runtime.revision, settings.policy_refresh_s, runtime.device)
        # Claimed, neither written nor handed back yet: after a failed hand-back (the database
        # went away) no message names them, and the heartbeat keeps renewing their lease.
        self.held: set[str] = set()
        self._preparer = Preparer(settings, runtime, blobs)

    def warm(self) -> None:
        """Start the decode processes before the worker says it is ready."""
        self._preparer.warm()

    def close(self) -> None:
        self._preparer.close()

    # -- the batch ---------------------------------------------------------------------------

    def score_batch(self, item_ids: list[str], fill: int = 0) -> list[str]:
        """Score what is still pending among `item_ids`, topped up to `fill` items with the
        oldest queued ones; returns the ids it requeued. (The worker's task runs the same two
        halves overlapped, see `workers.overlap`.)

        A database outage at the claim (or at the hand-back) raises: the task then rejects the
        messages back to the broker instead of acknowledging work it never did.
        """
        return self.finish(self.begin(item_ids, fill))

    def begin(self, item_ids: list[str], fill: int = 0) -> Batch:
        """Claim and prepare a batch: the half that needs no model. A failure to prepare is
        kept in the batch and handled by `finish`, like one of the model or the write."""
        timer = StageTimer()
        with timer.stage("claim"):
            work = self._claim(item_ids, fill)
        self.held.update(w.id for w in work)
        batch = Batch(work, timer)
        if work:
            try:
                with timer.stage("decode"):
                    self._prepare(work)
            except Exception as exc:
                batch.error = exc
        return batch

    def finish(self, batch: Batch) -> list[str]:
        """Forward pass, verdicts and write, one after the other; returns the ids it requeued
        after a failure. (The task writes behind instead: `compute` now, `settle` later.)"""
        self.compute(batch)
        return self.settle(batch)

    def compute(self, batch: Batch) -> None:
        """The model's half: forward pass and verdicts, into `batch.rows`. A failure is kept
        in the batch for `settle`, so the items are handed back by whoever writes."""
        if not batch.work or batch.error is not None:
            return
        try:
            with batch.timer.stage("forward"):
                self._forward(batch.work)
            with batch.timer.stage("decide"):
                batch.rows = self._decide(batch.work)
        except Exception as exc:
            batch.error = exc

    def settle(self, batch: Batch) -> list[str]:
        """The database's half: write the rows `compute` made, or hand the items back after a
        failure of any stage; returns the ids it requeued. Raises only when the hand-back
        itself fails (the database is down): then the ids stay held."""
        work = batch.work
        ids = [w.id for w in work]
        if not work:
            return []
        if batch.error is None:
            assert batch.rows is not None, "settle() before compute()"
            try:
                with batch.timer.stage("write"):
                    self._store(*batch.rows)
            except Exception as exc:
                batch.error = exc
        if batch.error is not None:
            log.error(
                "batch of %d failed; returning its items to the queue",
                len(work),
                exc_info=batch.error,
            )
            requeue = self._release(work)  # if this raises too, the ids stay held
            self.held.difference_update(ids)
            return requeue
        self.held.difference_update(ids)
        metrics.observe_batch(work, batch.timer)
        return []

    def _claim(self, item_ids: list[str], fill: int = 0) -> list[_Work]:
        with transaction(self.sessions) as session:
            claimed = store.claim(session, item_ids, self.worker_id, self.settings.lease_s, fill)
            work = []
            for item in claimed:
                version_id = self.policies.version_for(
                    session, item.tenant_id, ActivationMode.ACTIVE
                )
                if version_id is None:
                    raise RuntimeError("no active policy version; run `clipmod db upgrade`")
                shadow = self.policies.version_for(session, item.tenant_id, ActivationMode.SHADOW)
                work.append(
                    _Work(
                        id=item.id,
                        tenant=item.tenant,
                        tenant_id=item.tenant_id,
                        image_sha256=item.image_sha256,
                        text=item.text,
                        version_id=version_id,
                        shadow_version_id=shadow if shadow != version_id else None,
                        image_url=item.image_url,
                    )
                )
                self.policies.bank(session, version_id)
                if shadow and shadow != version_id:
                    self.policies.bank(session, shadow)
            return work

    def _prepare(self, work: list[_Work]) -> None:
        ingest.fetch_urls(work, self.settings, self.blobs, self.sessions)
        self._preparer.prepare(work)

    def _forward(self, work: list[_Work]) -> None:
        ok = [w for w in work if w.error is None]
        with_image = [w for w in ok if w.pixels is not None]
        if with_image:
            emb = self.runtime.encode_pixels(self._stack([w.pixels for w in with_image]))
            for w, e in zip(with_image, emb, strict=True):
                w.image_emb = e[None, :]
        with_text = [w for w in ok if w.windows]
        if with_text:
            flat = [win for w in with_text for win in w.windows]
            emb = self.runtime.encode_token_windows(flat)
            start = 0
            for w in with_text:
                w.text_emb = emb[start : start + len(w.windows)]
                start += len(w.windows)

    def _stack(self, parts: list[np.ndarray | torch.Tensor | None]) -> np.ndarray | torch.Tensor:
        """One batch of pixels: on the device when some were decoded there (the rest join them
        with one copy each), else on the host, where `encode_pixels` pins it for the copy."""
        if all(isinstance(p, np.ndarray) for p in parts):
            return np.stack(parts)  # type: ignore[arg-type]
        device = self.runtime.device
        return torch.stack(
            [p if isinstance(p, torch.Tensor) else torch.from_numpy(p).to(device) for p in parts]
        )

    def _outcomes(
        self, session: Session, work: list[_Work], version_of: Callable[[_Work], int | None]
    ) -> dict[str, scoring.Outcome]:
        """Verdicts for the whole batch: one `decide_batch` per policy version in it."""
        groups: dict[int, list[_Work]] = {}
        for w in work:
            version_id = version_of(w)
            if version_id is not None:
                groups.setdefault(version_id, []).append(w)
        out: dict[str, scoring.Outcome] = {}
        for version_id, group in groups.items():
            prompts = self.policies.bank(session, version_id)
            outcomes = scoring.decide_batch(
                prompts,
                [w.parts() for w in group],
                item_ids=[w.id for w in group],
                tenants=[w.tenant for w in group],
                banks=self.banks.for_policy(session, prompts.policy),
            )
            out.update(zip([w.id for w in group], outcomes, strict=True))
        return out

    def _decide(self, work: list[_Work]) -> tuple[list[store.Scored], list[store.Failed]]:
        """The batch's rows, outside the write's transaction: the banks are cached, so the
        session rarely queries (a policy or bank refresh) and the write stays short."""
        with self.sessions() as session:
            return self._decide_in(session, work)

    def _decide_in(
        self, session: Session, work: list[_Work]
    ) -> tuple[list[store.Scored], list[store.Failed]]:
        ok = [w for w in work if w.error is None]
        outcomes = self._outcomes(session, ok, lambda w: w.version_id)
        shadows = self._outcomes(session, ok, lambda w: w.shadow_version_id)
        failed = [store.Failed(w.id, w.error.code, w.error.message) for w in work if w.error]
        scored = [self._rows(w, outcomes[w.id], shadows.get(w.id)) for w in ok]
        return scored, failed

    def _store(self, scored: list[store.Scored], failed: list[store.Failed]) -> None:
        """One transaction; idempotent (see `store.write`), so a retried batch is harmless."""
        with transaction(self.sessions) as session:
            store.write(session, scored, failed)

    def _write(self, work: list[_Work]) -> None:
        """Decide and write in one transaction (tests drive the stages one by one)."""
        with transaction(self.sessions) as session:
            store.write(session, *self._decide_in(session, work))

    def _rows(
        self, w: _Work, outcome: scoring.Outcome, shadow: scoring.Outcome | None
    ) -> store.Scored:
        now = utcnow()
        return store.Scored(
            item_id=w.id,
            verdict={
                "item_id": w.id,
                "policy_version_id": w.version_id,
                "action": outcome.action,
                "categories": [c.to_dict() for c in outcome.categories],
                "audit": outcome.audit,
                "model_name": self.runtime.display_name,
                "model_revision": self.runtime.revision,
                "bank_match": outcome.bank_match.to_dict() if outcome.bank_match else None,
                "scored_at": now,
            },
            embedding={
                "item_id": w.id,
                "model_revision": self.runtime.revision,
                "dim": self.runtime.dim,
                "image": embeddings.to_bytes(w.image_emb) if w.image_emb is not None else None,
                "text": embeddings.to_bytes(w.text_emb) if w.text_emb is not None else None,
                "text_windows": len(w.text_emb) if w.text_emb is not None else 0,
                "created_at": now,
            },
            shadow=None
            if shadow is None or w.shadow_version_id is None
            else {
                "item_id": w.id,
                "policy_version_id": w.shadow_version_id,
                "action": shadow.action,
                "categories": [c.to_dict() for c in shadow.categories],
                "scored_at": now,
            },
        )

    def _release(self, work: list[_Work]) -> list[str]:
        """After an unexpected failure: requeue items with attempts left, fail the rest."""
        with transaction(self.sessions) as session:
            requeue, failed = store.release(session, self.worker_id, [w.id for w in work])
        metrics.REQUEUED.labels("batch_failed").inc(len(requeue))
        metrics.FAILED.labels("scoring_error").inc(len(failed))
        return requeue
