"""The Celery app both sides share: the API sends by task name, the worker consumes.

Only ids travel on the queue, as JSON. `acks_late` means a message is acknowledged after its
batch finished, so a worker killed mid-batch has its items redelivered; writing a verdict is
idempotent, so a redelivery is harmless.
"""

from __future__ import annotations

from celery import Celery

from clipmod.settings import Settings

SCORE_TASK = "clipmod.score_item"
SCORE_QUEUE = "clipmod.score"


def make_celery(settings: Settings) -> Celery:
    app = Celery("clipmod", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=SCORE_QUEUE,
        task_routes={SCORE_TASK: {"queue": SCORE_QUEUE}},
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


def enqueue_scoring(app: Celery, item_ids: list[str]) -> None:
    """Send one message per item; call only after the transaction that created them committed."""
    with app.producer_or_acquire() as producer:
        for item_id in item_ids:
            app.send_task(SCORE_TASK, args=[item_id], producer=producer)
