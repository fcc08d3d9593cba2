"""Benchmark: what bank matching with 100,000 entries adds to the worker's batch.

Not a test: it prints numbers. The real `workers.pipeline.Scorer` with the bundled model scores
batches of 32 upload-like JPEGs (640x480, through the worker's own decode) against a migrated
SQLite database, the whole batch timed: claim, decode, forward, `decide_batch`, write. Two
tenants run the demo policy, one of them with a `block` bank of `--entries` random unit vectors
referenced; batches alternate between them so drifting machine load hits both alike. The first
batch of each (the bank's one-off load from SQL) is left out.

Each round also times `BankSet.match` alone on 32 rows (best of three): the bank's own cost per
batch, as a share of the same round's batch without banks. Both are noisy on a shared machine
(OpenBLAS's two threads slow down sharply when another process holds a core), so it reports
medians over rounds and ratios within rounds.

    .venv/bin/python -m bench.banks [--entries 100000] [--batches 25] [--batch 32]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import insert

from bench.pipeline import make_jpegs
from clipmod import embeddings, keys, migrate
from clipmod import settings as settings_mod
from clipmod.actions import Action
from clipmod.banks import live, registry
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import BankEntry, BankVersion, Item
from clipmod.policy import versions
from clipmod.runtime import ClipRuntime
from clipmod.storage import BlobStore
from workers.pipeline import Scorer

TENANTS = ("plain", "banked")


def build(path: Path, runtime: ClipRuntime, entries: int) -> None:
    settings = settings_mod.load({"CLIPMOD_DATA_DIR": str(path)})
    migrate.upgrade(settings)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    demo = settings_mod.BUNDLED_POLICY.read_text(encoding="utf-8")
    with transaction(sessions) as session:
        bank = registry.create_bank(
            session,
            "known-bad",
            "block",
            model_revision=runtime.revision,
            dim=runtime.dim,
            author="bench",
        )
        session.add(BankVersion(bank_id=bank.id, version=1, entries=entries, author="bench"))
        rng = np.random.default_rng(0)
        for start in range(0, entries, 10_000):
            rows = rng.standard_normal((min(10_000, entries - start), runtime.dim))
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            session.execute(
                insert(BankEntry),
                [
                    {
                        "bank_id": bank.id,
                        "embedding": embeddings.to_bytes(r[None, :]),
                        "source": "upload",
                        "image_sha256": f"{start + k:064x}",
                        "added_in": 1,
                    }
                    for k, r in enumerate(rows)
                ],
            )
        plain = versions.publish(session, demo, author="bench").version
        banked = versions.publish(
            session, demo + "banks:\n  - {name: known-bad, threshold: 0.95}\n", author="bench"
        ).version
        for tenant, version in zip(TENANTS, (plain, banked), strict=True):
            versions.activate(
                session, version, by="bench", tenants=[keys.get_or_create_tenant(session, tenant)]
            )
        versions.activate(session, plain, by="bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=25, help="timed batches per tenant")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=Path(".bench") / "banks")
    args = parser.parse_args(argv)

    runtime = ClipRuntime.load(str(settings_mod.BUNDLED_MODEL), "cpu")
    path = args.dir / f"{args.entries}x{runtime.dim}-{runtime.revision}"
    if not (path / "clipmod.db").exists():
        build(path, runtime, args.entries)
    settings = settings_mod.load({"CLIPMOD_DATA_DIR": str(path), "CLIPMOD_POLICY_REFRESH_S": "60"})
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    blobs = BlobStore(settings.blob_dir)
    jpegs = make_jpegs(args.batch * 4)
    digests = [blobs.put(j) for j in jpegs]
    with sessions() as session:
        tenant_ids = {t: keys.get_or_create_tenant(session, t).id for t in TENANTS}
        session.commit()
    with sessions() as session:
        version = versions.resolve(session, tenant_ids["banked"])
        assert version is not None
        bank_set, _ = live.resolve(session, versions.load(version), runtime.revision)
    entries = sum(len(s) for s in bank_set.banks)
    assert entries == args.entries
    assert all(s.kind == Action.BLOCK for s in bank_set.banks)
    rows32 = runtime.encode_images(
        [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs[: args.batch]]
    )
    scorer = Scorer(settings, runtime, sessions, blobs)
    times: dict[str, list[float]] = {t: [] for t in (*TENANTS, "match")}
    rng = np.random.default_rng(1)
    try:
        for round_ in range(args.batches + 1):
            for tenant in TENANTS if round_ % 2 else TENANTS[::-1]:
                with transaction(sessions) as session:
                    pick = rng.choice(len(digests), args.batch, replace=False)
                    rows = [
                        Item(tenant_id=tenant_ids[tenant], image_sha256=digests[k]) for k in pick
                    ]
                    session.add_all(rows)
                    session.flush()
                    ids = [r.id for r in rows]
                started = time.perf_counter()
                scorer.score_batch(ids)
                if round_:  # the first round loads the model's prompts and the bank
                    times[tenant].append(time.perf_counter() - started)
            if round_:  # the bank's own cost, under this round's load: best of three
                alone = []
                for _ in range(3):
                    started = time.perf_counter()
                    bank_set.match(rows32)
                    alone.append(time.perf_counter() - started)
                times["match"].append(min(alone))
    finally:
        scorer.close()
        engine.dispose()
    plain, banked, match = (statistics.median(times[t]) for t in (*TENANTS, "match"))
    # Each round ran one batch of each back to back: ratios within a round cancel load drift.
    rounds = list(zip(times["plain"], times["banked"], times["match"], strict=True))
    paired = statistics.median(b / p - 1 for p, b, _ in rounds)
    share = statistics.median(m / p for p, _, m in rounds)
    print(
        f"worker batch of {args.batch} (bundled model, CPU, {os.cpu_count()} CPUs): median "
        f"{plain * 1000:.1f} ms without banks, {banked * 1000:.1f} ms with {entries:,} bank "
        f"entries: {100 * (banked - plain) / plain:+.1f}% (median of paired rounds "
        f"{100 * paired:+.1f}%; {args.batches} rounds; spread without "
        f"{min(times['plain']) * 1000:.0f}-{max(times['plain']) * 1000:.0f} ms, with "
        f"{min(times['banked']) * 1000:.0f}-{max(times['banked']) * 1000:.0f} ms)"
    )
    print(
        f"bank matching alone, {args.batch} rows x {entries:,} entries: median "
        f"{match * 1000:.2f} ms, {100 * share:.1f}% of the same round's batch without banks "
        f"(median over rounds; load average {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
