"""Benchmark: what bank matching with 50,000 and 100,000 entries adds to the worker's batch.

Not a test: it prints numbers. The real `workers.pipeline.Scorer` with the bundled model scores
batches of 32 upload-like JPEGs (640x480, through the worker's own decode) against a migrated
SQLite database, the whole batch timed: claim, decode, forward, `decide_batch`, write. Two
tenants run the demo policy, one of them with a `block` bank of `--entries` random unit vectors
referenced. Each round scores one batch without banks, one with them as workers match them (the
int8 prefilter, `clipmod.banks.prefilter`) and one with the plain float32 product (a second
scorer whose `LiveBanks` skips the prefilter), in rotating order so drifting machine load hits
all three alike. The first round (the bank's one-off load from SQL) is left out.

The bank's own cost is also timed twice per round, both ways: inside the real batch (the
worker's `scoring._match_images`, wrapped here), with the caches as decoding and the forward
pass left them, and alone on 32 image rows (best of three). Each is reported as a share of the
same round's batch without banks. Whole batches are noisy on a shared machine (the in-batch
share much less so), so it reports medians over rounds and ratios within rounds.

    .venv/bin/python -m bench.banks [--entries 50000 100000] [--batches 25] [--batch 32]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path
from typing import Any

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
from clipmod.policy import scoring, versions
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
    parser.add_argument("--entries", type=int, nargs="+", default=[50_000, 100_000])
    parser.add_argument("--batches", type=int, default=25, help="timed rounds")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=Path(".bench") / "banks")
    args = parser.parse_args(argv)
    runtime = ClipRuntime.load(str(settings_mod.BUNDLED_MODEL), "cpu")
    jpegs = make_jpegs(args.batch * 4)
    for entries in args.entries:
        run(runtime, jpegs, entries, args)
    return 0


def run(runtime: ClipRuntime, jpegs: list[bytes], entries: int, args: argparse.Namespace) -> None:
    path = args.dir / f"{entries}x{runtime.dim}-{runtime.revision}"
    if not (path / "clipmod.db").exists():
        build(path, runtime, entries)
    settings = settings_mod.load({"CLIPMOD_DATA_DIR": str(path), "CLIPMOD_POLICY_REFRESH_S": "60"})
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    blobs = BlobStore(settings.blob_dir)
    digests = [blobs.put(j) for j in jpegs]
    with sessions() as session:
        tenant_ids = {t: keys.get_or_create_tenant(session, t).id for t in TENANTS}
        session.commit()
    with sessions() as session:
        version = versions.resolve(session, tenant_ids["banked"])
        assert version is not None
        policy = versions.load(version)
        plain_set, _ = live.resolve(session, policy, runtime.revision)
        coded_set, _ = live.resolve(session, policy, runtime.revision, prefilter_at=0)
    assert sum(len(s) for s in plain_set.banks) == entries
    assert coded_set.prefilter is not None
    assert all(s.kind == Action.BLOCK for s in plain_set.banks)
    rows32 = runtime.encode_images(
        [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs[: args.batch]]
    )
    assert np.array_equal(plain_set.match(rows32).entry, coded_set.match(rows32).entry)
    scorer = Scorer(settings, runtime, sessions, blobs)
    float32 = Scorer(settings, runtime, sessions, blobs)
    float32.banks.prefilter_at = None  # the same banks, matched with the float32 product only
    kinds = {"plain": (scorer, "plain"), "int8": (scorer, "banked"), "float32": (float32, "banked")}
    names = ("match int8", "match float32", "in situ int8", "in situ float32")
    times: dict[str, list[float]] = {k: [] for k in (*kinds, *names)}
    in_situ: list[float] = []
    match_images = scoring._match_images

    def timed(*a: Any, **kw: Any) -> Any:  # the bank matching inside the real batch
        started = time.perf_counter()
        try:
            return match_images(*a, **kw)
        finally:
            in_situ.append(time.perf_counter() - started)

    scoring._match_images = timed
    rng = np.random.default_rng(1)
    order = list(kinds)
    try:
        for round_ in range(args.batches + 1):
            for kind in order[round_ % 3 :] + order[: round_ % 3]:
                runner, tenant = kinds[kind]
                with transaction(sessions) as session:
                    pick = rng.choice(len(digests), args.batch, replace=False)
                    rows = [
                        Item(tenant_id=tenant_ids[tenant], image_sha256=digests[k]) for k in pick
                    ]
                    session.add_all(rows)
                    session.flush()
                    ids = [r.id for r in rows]
                in_situ.clear()
                started = time.perf_counter()
                runner.score_batch(ids)
                if round_:  # the first round loads the model's prompts and the bank
                    times[kind].append(time.perf_counter() - started)
                    if kind != "plain":
                        times[f"in situ {kind}"].append(sum(in_situ))
            if round_:  # the bank's own cost, under this round's load: best of three each
                for name, bank_set in (("match int8", coded_set), ("match float32", plain_set)):
                    alone = []
                    for _ in range(3):
                        started = time.perf_counter()
                        bank_set.match(rows32)
                        alone.append(time.perf_counter() - started)
                    times[name].append(min(alone))
    finally:
        scoring._match_images = match_images
        scorer.close()
        float32.close()
        engine.dispose()
    report(times, entries, args)


def report(times: dict[str, list[float]], entries: int, args: argparse.Namespace) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    plain = med["plain"]
    print(
        f"{entries:,} entries, worker batch of {args.batch} (bundled model, CPU, "
        f"{os.cpu_count()} CPUs, {args.batches} rounds, load average {os.getloadavg()[0]:.1f}): "
        f"median {plain * 1000:.1f} ms without banks "
        f"({min(times['plain']) * 1000:.0f}-{max(times['plain']) * 1000:.0f} ms)"
    )
    for kind in ("int8", "float32"):
        # Each round ran one batch of each back to back: ratios within a round cancel drift.
        paired = statistics.median(
            b / p - 1 for p, b in zip(times["plain"], times[kind], strict=True)
        )
        share = {
            how: statistics.median(
                m / p for p, m in zip(times["plain"], times[f"{how} {kind}"], strict=True)
            )
            for how in ("match", "in situ")
        }
        label = "int8 prefilter (workers)" if kind == "int8" else "float32 product (before)"
        print(
            f"  {label}: batch {med[kind] * 1000:.1f} ms, "
            f"{100 * (med[kind] - plain) / plain:+.1f}% (paired rounds {100 * paired:+.1f}%); "
            f"matching in the batch {med[f'in situ {kind}'] * 1000:.2f} ms "
            f"({100 * share['in situ']:.1f}% of the round's batch without banks), "
            f"alone {med[f'match {kind}'] * 1000:.2f} ms ({100 * share['match']:.1f}%)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
