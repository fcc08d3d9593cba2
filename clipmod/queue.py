"""The Celery app both sides share: the API sends by task name, the worker consumes.

Only ids travel on the queue, as JSON. The database is the queue of record: an upload is a
`queued` row, and a worker takes work by claiming rows (`workers.store.claim`), a full batch
of the oldest queued items at a time. A message is a wake-up that may name items, not the only
trace of them.

On Redis a message is sent per wake-up, not per upload (the doorbell, below): at ~500 uploads/s
one message per upload cost the worker's consumer about 1 ms of CPU each (a BRPOP, kombu's
unacked bookkeeping, a Request, an ack: three round trips), as much as decoding the image. On
other brokers (the embedded SQLite one) every upload still sends its own message.

`acks_late` means a message is acknowledged after the work it woke was done or handed back, so
a worker killed mid-batch has its messages redelivered; writing a verdict is idempotent, so a
redelivery is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import lru_cache

import redis
from celery import Celery
from kombu.utils.uuid import uuid

from clipmod.errors import ClipmodError
from clipmod.settings import Settings

log = logging.getLogger(__name__)

SCORE_TASK = "clipmod.score_item"
SCORE_QUEUE = "clipmod.score"
# Callbacks have their own queue and their own workers (`clipmod worker --role deliver`), so a
# slow receiver never holds up scoring.
DELIVER_TASK = "clipmod.deliver"
DELIVER_QUEUE = "clipmod.deliver"
# The doorbell: set (NX) by whoever sends a wake-up, deleted by a worker right before each claim.
BELL_KEY = "clipmod.score.bell"
# Only bounds how long a bell whose message nobody answers (no worker running) suppresses
# further messages; correctness comes from the delete-before-claim order, not from this.
BELL_TTL_MS = 5000
_BELL_SET = (BELL_KEY, "1", "PX", BELL_TTL_MS)
_BELL_SET_NX = (*_BELL_SET, "NX")


def make_celery(settings: Settings) -> Celery:
    app = Celery("clipmod", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=SCORE_QUEUE,
        task_routes={
            SCORE_TASK: {"queue": SCORE_QUEUE},
            DELIVER_TASK: {"queue": DELIVER_QUEUE},
        },
        # The batch task needs a full batch in hand plus the next one gathering behind it.
        worker_prefetch_multiplier=max(2 * settings.batch_size, 4),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        enable_utc=True,
    )
    if settings.uses_embedded_broker:
        _configure_embedded_broker(settings)
        # These options go to SQLAlchemy's create_engine: wait on SQLite's lock, don't fail.
        app.conf.broker_transport_options = {"connect_args": {"timeout": 30}}
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        # An unacked message returns to the queue after this long: longer than any batch.
        app.conf.broker_transport_options = {"visibility_timeout": 3600}
    return app


def _configure_embedded_broker(settings: Settings) -> None:
    """kombu's SQLAlchemy transport polls; its 1 s default would add ~1 s to every item.

    The interval is a class attribute: passing it in `broker_transport_options` would reach
    `create_engine` instead and crash the worker.
    """
    from kombu.transport import sqlalchemy as sqla_transport

    sqla_transport.Transport.polling_interval = settings.broker_poll_interval_s
    settings.data_dir.mkdir(parents=True, exist_ok=True)


def prepare_broker(app: Celery) -> None:
    """Connect once up front: kombu's SQLite transport creates its tables on first use, and two
    threads or processes doing that at the same moment race ("table kombu_queue already exists").
    """
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        conn.default_channel.queue_declare(SCORE_QUEUE, durable=True, auto_delete=False)


def broker_backlog(app: Celery, recent_s: float, timeout: float = 2.0) -> int:
    """Messages the scoring queue holds for workers: waiting, plus (Redis) recently taken.

    A worker takes messages ahead of its batch (prefetch); on Redis they sit in kombu's
    `unacked` index until acknowledged, stamped with the time they were taken. Those taken
    within `recent_s` belong to a live worker and are counted; older ones belong to a dead one
    (kombu hands them back only after the visibility timeout), so the reconciler should see
    their items as missing. Raises when the broker cannot be reached within `timeout`.
    """
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        channel = conn.default_channel
        declared = channel.queue_declare(SCORE_QUEUE, durable=True, auto_delete=False)
        count = int(declared.message_count)
        index = getattr(channel, "unacked_index_key", None)
        if index is not None and hasattr(channel, "client"):
            count += int(channel.client.zcount(index, time.time() - recent_s, "+inf"))
        return count


# Every doorbell client's: a broker that does not answer fails a request, it does not hang it.
_TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 5}


def _redis_url(app: Celery) -> str | None:
    """The broker's URL when it is Redis (the doorbell's home), else None."""
    url = str(app.conf.broker_url or "")
    return url if url.startswith(("redis://", "rediss://")) else None


@lru_cache(maxsize=8)
def _redis(url: str) -> redis.Redis:
    """One client (and connection pool) per broker URL for the process: kombu's producer
    builds a new redis-py client for every publish, a third of what a send cost."""
    return redis.Redis.from_url(url, **_TIMEOUTS)


def doorbell(app: Celery) -> redis.Redis | None:
    """The Redis client the doorbell lives on, or None where every upload sends a message."""
    url = _redis_url(app)
    return _redis(url) if url is not None else None


class OwnDoorbell:
    """A doorbell client with a connection of its own, for one thread at a time (intake's group
    leader, `api.newitems.Writer`).

    Why: the shared client checks its connection out of a pool and back around every command,
    and the check-out first looks for stray bytes on the socket: one more syscall that releases
    the GIL, a thread hand-off on a busy API process. A single-connection client skips both.
    It is made on first use (redis-py connects it at once, and the API must start while Redis
    is down); after an error redis-py reconnects it on the next command.
    """

    def __init__(self, app: Celery):
        self.url = _redis_url(app)
        self._client: redis.Redis | None = None

    def client(self) -> redis.Redis | None:
        """The client, None where every upload sends a message; raises if Redis is down."""
        if self._client is None and self.url is not None:
            self._client = redis.Redis.from_url(
                self.url, single_connection_client=True, **_TIMEOUTS
            )
        return self._client


def answer_bell(app: Celery) -> None:
    """A worker calls this right before each claim of queued items.

    Why no upload is missed: an upload commits, then tries to set the bell. If the bell was
    already set, that happened before a worker's delete, and the worker's claim after the
    delete sees the committed row; if it was not set, the upload sends a message of its own.
    """
    client = doorbell(app)
    if client is not None:
        client.delete(BELL_KEY)


def enqueue_scoring(
    app: Celery, item_ids: list[str], *, force: bool = False, bell: OwnDoorbell | None = None
) -> None:
    """Wake a worker for these items; the rows must be committed: a worker that
    hears of an uncommitted row finds nothing.

    On Redis one message is sent only when the bell was not already ringing (or with `force`,
    which the reconciler and hand-backs use): a worker deletes the bell before each claim, and
    a claim takes every queued item, not only the ones a message names. Elsewhere one message
    per item. A broker failure becomes `queue_unavailable` (503): the items are stored, and a
    client that retries with the same `external_id` queues them again. `bell`: ring on that
    client instead of the shared one.
    """
    try:
        client = bell.client() if bell is not None else doorbell(app)
        if client is not None:
            if not item_ids and not force:
                return
            _ring(app, client, [item_ids[0] if item_ids else None], force=force)
            return
        _send(app, item_ids)
    except Exception as exc:
        log.exception("enqueue failed for %d items", len(item_ids))
        raise queue_unavailable(item_ids) from exc


def wake_another(app: Celery) -> bool:
    """After a full claim: ring the bell so that one more idle worker joins; True if it rang.

    A claim that comes back full means more may be queued than this worker will take soon. A
    backlog with no new uploads behind it (workers back after an outage, a burst accepted while
    they were down) was otherwise worked by the one worker its wake-up reached, and the others
    joined only when that worker's task budget ran out. Each worker that joins claims a full
    batch and rings in turn, so idle workers join one after another. The ring keeps the
    doorbell's rule (a bell set means a message is on its way), so an upload that finds it set
    is still claimed. On other brokers every upload has its own message, which reaches every
    worker already. Best effort: a broker error is logged, the budget's wake-up and the
    reconciler still follow.
    """
    client = doorbell(app)
    if client is None:
        return False
    try:
        return _ring(app, client, [None], force=False)
    except Exception as exc:
        log.warning("could not wake another worker: %s", exc)
        return False


def _ring(app: Celery, client: redis.Redis, wake: Iterable[str | None], *, force: bool) -> bool:
    """Set the bell and send one message, unless it was ringing already (`force`: always).

    The SET goes through `execute_command`: `Redis.set` first checks and assembles its keyword
    options in Python, ~7 µs of CPU on every intake group's ring, for the same command."""
    if not client.execute_command("SET", *_BELL_SET if force else _BELL_SET_NX):  # type: ignore[no-untyped-call]
        return False  # a wake-up is on its way
    try:
        _send(app, wake)
    except Exception:
        client.delete(BELL_KEY)  # best effort: let the next upload ring again
        raise
    return True


def queue_unavailable(item_ids: list[str]) -> ClipmodError:
    """The answer for stored items a worker could not be told about (503, retryable)."""
    return ClipmodError(
        f"item {', '.join(item_ids)} is stored but the queue is unavailable; retry the same "
        "request (with the same external_id) to queue it again",
        code="queue_unavailable",
        status=503,
    )


def _send(app: Celery, item_ids: Iterable[str | None]) -> None:
    """One message per id (None: a wake-up naming no item)."""
    route = app.amqp.router.route({}, SCORE_TASK)
    with app.producer_or_acquire() as producer:
        for item_id in item_ids:
            # `send_task` minus its generic routing, argument repr and per-send queue
            # declaration: the same message (Celery's protocol 2) to the same queue, through
            # the anonymous exchange, which needs no binding (a Redis that restarted without
            # AOF has lost them; the list is created by the push itself).
            args = [item_id] if item_id is not None else []
            message = app.amqp.as_task_v2(
                uuid(), SCORE_TASK, args=args, argsrepr=repr(args), kwargsrepr="{}"
            )
            app.amqp.send_task_message(producer, SCORE_TASK, message, declare=[], **route)


def send_deliveries(app: Celery, claimed: list[tuple[str, str]]) -> None:
    """Queue claimed callbacks for the delivery workers. A failed send is only logged: the
    rows keep their lease, and the next dispatch after it runs out sends them again."""
    try:
        with app.producer_or_acquire() as producer:
            for delivery_id, token in claimed:
                app.send_task(
                    DELIVER_TASK, args=[delivery_id, token], queue=DELIVER_QUEUE, producer=producer
                )
    except Exception:
        log.exception("could not queue %d deliveries; retried after their lease", len(claimed))
