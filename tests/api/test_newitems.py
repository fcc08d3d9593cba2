"""`api.newitems`: a batch of uploads in one INSERT, on SQLite and on PostgreSQL.

Each dialect has its own statement (PostgreSQL's is hand-written over arrays), so each test
runs on both and reads the rows back through the ORM: the PostgreSQL statement must store
exactly what the model's own defaults would.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from api import create_app
from api.newitems import NewItem, NewUpload, Writer
from api.services import Services
from clipmod import keys, migrate
from clipmod.db import make_engine, transaction
from clipmod.errors import ClipmodError, StorageUnavailable
from clipmod.models import Item, ItemStatus, Tenant, new_id
from clipmod.models.base import as_utc, utcnow
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests import images
from tests.api.conftest import auth
from tests.conftest import make_settings
from tests.e2e.conftest import postgres_url, production_settings  # noqa: F401


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "sqlite":
        return settings
    return request.getfixturevalue("production_settings")  # type: ignore[no-any-return]


@contextmanager
def app_services(settings: Settings) -> Iterator[tuple[Services, int]]:
    """The app's services for `settings`, and a tenant's id."""
    services: Services = create_app(settings).extensions["clipmod"]
    try:
        with transaction(services.sessions) as session:
            keys.create_key(session, "acme")
            tenant = session.scalars(select(Tenant.id).where(Tenant.name == "acme")).one()
        yield services, tenant
    finally:
        services.engine.dispose()


@pytest.fixture
def stack(stack_settings: Settings) -> Iterator[tuple[Services, int]]:
    with app_services(stack_settings) as pair:
        yield pair


@pytest.fixture
def svc(stack: tuple[Services, int]) -> Services:
    return stack[0]


@pytest.fixture
def tenant_id(stack: tuple[Services, int]) -> int:
    return stack[1]


def new_item(tenant_id: int, external_id: str | None = None, **fields: object) -> NewItem:
    values: dict[str, object] = {
        "id": new_id(),
        "tenant_id": tenant_id,
        "external_id": external_id,
        "text": "hello",
        "metadata": None,
        "content_hash": "c" * 64,
        "image_sha256": None,
        "image_url": None,
        "image_format": None,
        "image_width": None,
        "image_height": None,
    }
    values.update(fields)
    return NewItem(**values)  # type: ignore[arg-type]


def uploads(*items: NewItem, images: dict[str, bytes] | None = None) -> list[NewUpload]:
    return [NewUpload(item, (images or {}).get(item.id)) for item in items]


def write(svc: Services, batch: list[NewItem]) -> list[bool | BaseException]:
    """One group through a fresh writer, as the group's leader hands it over."""
    return Writer(svc.engine, svc.celery, svc.blobs)(uploads(*batch))


def test_a_batch_stores_every_column_and_the_models_defaults(svc: Services, tenant_id: int) -> None:
    batch = [
        new_item(tenant_id, "a", metadata={"user": 7, "tags": ["x", None]}),
        new_item(
            tenant_id,
            None,
            text=None,
            image_sha256="f" * 64,
            image_format="jpeg",
            image_width=640,
            image_height=480,
        ),
        new_item(tenant_id, "c", text=None, image_url="https://example.com/a.png"),
        # Beyond ASCII: PostgreSQL's rows travel as JSON escapes (an emoji as a surrogate pair).
        new_item(tenant_id, "é😀", text='héllo 😀 \u2028 日本 \\ "q"', metadata={"ключ": "😀"}),
    ]
    assert write(svc, batch) == [True, True, True, True]
    with svc.sessions() as session:
        rows = {item.id: item for item in session.scalars(select(Item))}
    assert set(rows) == {job.id for job in batch}
    for job in batch:
        row = rows[job.id]
        assert (row.status, row.attempts, row.error_code, row.claimed_by) == (
            ItemStatus.QUEUED,
            0,
            None,
            None,
        )
        assert abs(row.created_at - row.updated_at) < timedelta(seconds=1)
        assert abs(as_utc(row.created_at) - utcnow()) < timedelta(minutes=1)
        assert (row.tenant_id, row.external_id, row.text, row.meta) == (
            job.tenant_id,
            job.external_id,
            job.text,
            job.metadata,
        )
        assert (row.image_sha256, row.image_url, row.content_hash) == (
            job.image_sha256,
            job.image_url,
            job.content_hash,
        )
        assert (row.image_format, row.image_width, row.image_height) == (
            job.image_format,
            job.image_width,
            job.image_height,
        )


def test_a_taken_external_id_is_reported_for_its_own_upload_only(
    svc: Services, tenant_id: int
) -> None:
    assert write(svc, [new_item(tenant_id, "taken")]) == [True]
    batch = [
        new_item(tenant_id, "new-1"),
        new_item(tenant_id, "taken"),
        new_item(tenant_id, "twice"),
        new_item(tenant_id, "twice"),  # the same id twice in one batch: the first wins
        new_item(tenant_id, None),
    ]
    assert write(svc, batch) == [True, False, True, False, True]
    with svc.sessions() as session:
        stored = set(session.scalars(select(Item.id)))
    assert {batch[0].id, batch[2].id, batch[4].id} <= stored
    assert batch[1].id not in stored and batch[3].id not in stored


def test_a_row_the_database_refuses_fails_only_its_own_upload(
    svc: Services, tenant_id: int
) -> None:
    batch = [new_item(tenant_id, "ok-1"), new_item(999_999, "orphan"), new_item(tenant_id)]
    answers = write(svc, batch)  # no such tenant: a foreign key violation for the whole INSERT
    assert answers[0] is True and answers[2] is True
    assert isinstance(answers[1], Exception)
    with svc.sessions() as session:
        assert set(session.scalars(select(Item.id))) == {batch[0].id, batch[2].id}


def test_a_lost_database_fails_the_batch_at_once(svc: Services, tenant_id: int) -> None:
    dead = make_engine("postgresql+psycopg://clipmod@127.0.0.1:1/none", pool_pre_ping=False)
    try:
        answers = Writer(dead, svc.celery, svc.blobs)(
            uploads(new_item(tenant_id), new_item(tenant_id))
        )
    finally:
        dead.dispose()
    assert all(isinstance(a, OperationalError) for a in answers)
    assert answers[0] is answers[1]  # one attempt for the batch, not one per upload


def test_a_broker_outage_answers_each_upload_with_its_own_item(
    tmp_path: Path, migrated_template: Path
) -> None:
    shutil.copy(migrated_template, tmp_path / "clipmod.db")
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")
    migrate.upgrade(settings)
    with app_services(settings) as (services, tenant):
        batch = [new_item(tenant, "one"), new_item(tenant, "two")]
        answers = write(services, batch)
    for job, answer in zip(batch, answers, strict=True):
        assert isinstance(answer, ClipmodError) and answer.code == "queue_unavailable"
        assert job.id in str(answer) and str(answer).count("item ") == 1
    other = batch[1].id
    assert other not in str(answers[0])  # never another upload's (or tenant's) item id


def image_item(tenant_id: int, data: bytes) -> NewItem:
    return new_item(
        tenant_id,
        image_sha256=hashlib.sha256(data).hexdigest(),
        image_format="jpeg",
        image_width=64,
        image_height=64,
    )


def test_the_group_stores_each_blob_before_its_row_and_looks_again_after_the_commit(
    svc: Services, tenant_id: int
) -> None:
    """The leader writes the group's images, inserts, then checks each file once more: one that
    a deletion of the same bytes took in between (`BlobStore.remove_unless`) is written back."""
    data = [images.solid(colour=(c, 0, 0)) for c in (10, 20)]
    batch = [image_item(tenant_id, d) for d in data]
    writer = Writer(svc.engine, svc.celery, svc.blobs)
    on_disk_at_insert: list[bool] = []
    insert = writer._insert

    def racing_insert(items: list[NewItem]) -> set[str]:
        on_disk_at_insert.extend(svc.blobs.path(str(i.image_sha256)).exists() for i in items)
        svc.blobs.path(str(items[1].image_sha256)).unlink()  # the deletion, before the commit
        return insert(items)

    writer._insert = racing_insert  # type: ignore[method-assign]
    answers = writer(uploads(*batch, images={i.id: d for i, d in zip(batch, data, strict=True)}))
    assert answers == [True, True]
    assert on_disk_at_insert == [True, True]
    for item, d in zip(batch, data, strict=True):
        assert svc.blobs.get(str(item.image_sha256)) == d


def test_a_blob_the_store_refuses_fails_only_its_own_upload(svc: Services, tenant_id: int) -> None:
    good = images.solid(colour=(1, 2, 3))
    bad = next(
        d
        for c in range(256)
        if (d := images.solid(colour=(c, 9, 9)))
        and hashlib.sha256(d).hexdigest()[:2] != hashlib.sha256(good).hexdigest()[:2]
    )
    # The folder the bad blob belongs in is a file: that write fails as on a full disk.
    svc.blobs.root.mkdir(parents=True, exist_ok=True)
    (svc.blobs.root / hashlib.sha256(bad).hexdigest()[:2]).write_bytes(b"")
    batch = [image_item(tenant_id, good), image_item(tenant_id, bad)]
    answers = Writer(svc.engine, svc.celery, svc.blobs)(
        uploads(*batch, images={batch[0].id: good, batch[1].id: bad})
    )
    assert answers[0] is True
    assert isinstance(answers[1], StorageUnavailable), answers[1]
    assert answers[1].code == "storage_unavailable" and answers[1].status == 503
    with svc.sessions() as session:
        assert set(session.scalars(select(Item.id))) == {batch[0].id}  # no row for missing bytes


class WatchedStore(BlobStore):
    """A real store that counts how many blob operations run at once; `delay_s` gives each the
    latency of a network file system."""

    def __init__(self, root: Path, delay_s: float = 0.0):
        super().__init__(root)
        self.delay_s, self.running, self.most = delay_s, 0, 0
        self.lock = threading.Lock()

    def _op(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay_s)
        with self.lock:
            self.running -= 1

    def put(self, data: bytes, digest: str | None = None) -> str:
        self._op()
        return super().put(data, digest)

    def ensure(self, data: bytes, digest: str) -> None:
        self._op()
        super().ensure(data, digest)


@pytest.mark.parametrize(("delay_s", "parallel"), [(0.0, False), (0.1, True)])
def test_the_leader_writes_a_quick_store_itself_and_a_slow_one_in_parallel(
    svc: Services,
    tenant_id: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    delay_s: float,
    parallel: bool,
) -> None:
    # A group of 8 goes parallel once an op is estimated above 1/8 of this (62 ms): the slow
    # store's are, a local disk's never are, not even on a stalled CI machine.
    monkeypatch.setattr("api.newitems.SERIAL_BLOB_OPS_UP_TO_S", 0.5)
    store = WatchedStore(tmp_path / "blobs", delay_s)
    writer = Writer(svc.engine, svc.celery, store)
    for n in range(2):
        data = [images.solid(colour=(n, c, 7)) for c in range(8)]
        batch = [image_item(tenant_id, d) for d in data]
        jobs = uploads(*batch, images={i.id: d for i, d in zip(batch, data, strict=True)})
        assert writer(jobs) == [True] * 8
        for item, d in zip(batch, data, strict=True):
            assert store.get(str(item.image_sha256)) == d
    # The first group, with no estimate yet, always goes one blob after another.
    assert (store.most > 1) is parallel, store.most


def test_a_refused_upload_leaves_no_blob_behind(
    client: FlaskClient, api_key: str, settings: Settings
) -> None:
    """The blob is written before the row now; a conflict must take it away again."""
    first, second = images.solid(colour=(200, 40, 40)), images.solid(colour=(40, 200, 40))

    def post(data: bytes):  # type: ignore[no-untyped-def]
        return client.post(
            "/v1/items",
            data={"external_id": "e1", "file": (io.BytesIO(data), "x.jpg")},
            headers=auth(api_key),
        )

    assert post(first).status_code == 202
    assert post(first).status_code == 200  # a replay keeps the (shared) blob
    refused = post(second)
    assert refused.status_code == 409
    blobs = BlobStore(settings.blob_dir)
    assert blobs.path(hashlib.sha256(first).hexdigest()).exists()
    assert not blobs.path(hashlib.sha256(second).hexdigest()).exists()


@pytest.mark.postgres
def test_a_connection_postgres_dropped_fails_one_batch_and_is_not_reused(
    production_settings: Settings,  # noqa: F811
) -> None:
    """PostgreSQL's INSERT runs on the driver's cursor, on a connection the writer keeps
    between groups; a dead one must still become SQLAlchemy's OperationalError (a 503) for its
    group only, and the next group must run on a new connection."""
    with app_services(production_settings) as (services, tenant):
        writer = Writer(services.engine, services.celery, services.blobs)
        assert writer(uploads(new_item(tenant))) == [True]
        killer = make_engine(production_settings.database_url)
        with killer.connect() as conn:  # every other session of this database: the writer's too
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        killer.dispose()
        [failed] = writer(uploads(new_item(tenant)))
        assert isinstance(failed, OperationalError), failed
        assert writer(uploads(new_item(tenant))) == [True]  # on a new connection


def test_an_external_id_whose_item_vanishes_between_insert_and_lookup_is_a_retryable_503(
    client: FlaskClient, api_key: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The INSERT skipped the row (the id was taken) but the look-up found nothing: the item was
    purged in between. Intake tries once more, then answers 503 and keeps no stray blob."""
    image = images.solid(colour=(10, 20, 30))
    data = {"external_id": "e1", "file": (io.BytesIO(image), "x.jpg")}
    assert client.post("/v1/items", data=data, headers=auth(api_key)).status_code == 202
    monkeypatch.setattr("api.items._existing", lambda *_: None)  # the race, every time
    other = images.solid(colour=(30, 20, 10))
    data = {"external_id": "e1", "file": (io.BytesIO(other), "x.jpg")}
    resp = client.post("/v1/items", data=data, headers=auth(api_key))
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "external_id_busy"
    blobs = BlobStore(settings.blob_dir)
    assert not blobs.path(hashlib.sha256(other).hexdigest()).exists()


def test_the_postgres_statement_sets_every_column_with_a_default_or_no_null() -> None:
    """PostgreSQL's INSERT skips SQLAlchemy, so the model's Python-side defaults are set in
    `_PG_DEFAULTS`; a column added later with a default (or NOT NULL) must be added there too."""
    from api.newitems import _FIELDS, _PG_DEFAULTS

    table = Item.__table__
    needed = {
        c.name
        for c in table.columns
        if c.default is not None or c.server_default is not None or not c.nullable
    }
    assert needed - {*_FIELDS, *_PG_DEFAULTS} == set()
