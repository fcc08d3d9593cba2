"""Benchmark: `clipmod.policy.backtest` end to end on 1,000,000 stored items.

Not a test: it prints numbers. It synthesises a migrated SQLite database (under `.bench/`, kept
between runs so only the first run pays for the inserts) holding N items with random unit
embeddings in float16 (all with an image row, a third with 1-3 text windows, as the worker
stores them), the demo policy active, a draft with moved thresholds and a tenant override, and
some moderator decisions. Then it times, as the CLI runs them:

- rebuilding the traffic store from SQL (`clipmod traffic rebuild`), with `--rebuild` or when
  there is no store yet;
- the first backtest in a fresh process (`cold`: maps the store, checks its CRCs);
- `--repeat` backtests in one process (`warm`): store sync, scoring under the draft and the
  active version, `judge`, labels and the report.

The prompt encoder is a seeded stand-in (random unit vectors): the model's one-off prompt
embedding is not what this measures, and the synthetic item vectors are random anyway.
d = 128 is the bundled model's embedding size.

    .venv/bin/python -m bench.backtest [--items 1000000] [--dim 128] [--repeat 5] [--rebuild]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, insert, select

from clipmod import migrate
from clipmod import settings as settings_mod
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Decision, Item, ItemEmbedding, Tenant
from clipmod.policy import backtest, parse_policy, versions
from clipmod.traffic.sync import TrafficStore

REVISION = "bench-rev"
TENANTS = ("acme", "globex", "initech")


class StubEncoder:
    """Deterministic random prompt embeddings (seeded by the text), shaped like the model's."""

    revision = REVISION
    logit_scale = 100.0

    def __init__(self, dim: int):
        self.dim = dim

    def encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        rows = [
            np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts
        ]
        emb = np.asarray(rows, dtype=np.float32)
        out: npt.NDArray[np.float32] = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        return out


def _unit(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def build(path: Path, n: int, dim: int) -> None:
    """Create the database with `n` stored items (bulk inserts in chunks)."""
    settings = settings_mod.load({"CLIPMOD_DATA_DIR": str(path)})
    migrate.upgrade(settings)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    rng = np.random.default_rng(0)
    policy_text = settings_mod.BUNDLED_POLICY.read_text(encoding="utf-8")
    with transaction(sessions) as session:
        tenant_ids = []
        for name in TENANTS:
            session.add(tenant := Tenant(name=name))
            session.flush()
            tenant_ids.append(tenant.id)
        published = versions.publish(session, policy_text, author="bench")
        versions.activate(session, published.version, by="bench")
    chunk = 10_000
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        ids = [f"{start + i:032x}" for i in range(size)]
        windows = np.where(rng.random(size) < 1 / 3, rng.integers(1, 4, size), 0)
        img = _unit(rng, size, dim).astype("<f2")
        txt = _unit(rng, int(windows.sum()), dim).astype("<f2")
        offsets = np.concatenate([[0], np.cumsum(windows)])
        with transaction(sessions) as session:
            session.execute(
                insert(Item),
                [{"id": i, "tenant_id": tenant_ids[k % len(TENANTS)]} for k, i in enumerate(ids)],
            )
            session.execute(
                insert(ItemEmbedding),
                [
                    {
                        "item_id": ids[k],
                        "model_revision": REVISION,
                        "dim": dim,
                        "image": img[k].tobytes(),
                        "text": txt[offsets[k] : offsets[k + 1]].tobytes() if windows[k] else None,
                        "text_windows": int(windows[k]),
                    }
                    for k in range(size)
                ],
            )
            labelled = rng.random(size) < 0.02
            session.execute(
                insert(Decision),
                [
                    {"item_id": ids[k], "moderator": "bench", "labels": {"weapons": bool(k % 2)}}
                    for k in np.flatnonzero(labelled)
                ]
                or [{"item_id": ids[0], "moderator": "bench", "labels": {"weapons": True}}],
            )
    engine.dispose()


def draft_policy() -> str:
    text = settings_mod.BUNDLED_POLICY.read_text(encoding="utf-8")
    text = text.replace("review_at: 0.5", "review_at: 0.3", 1)
    override = "  acme:\n    thresholds:\n      weapons: {review_at: 0.2, block_at: 0.6}\n"
    return f"{text}\ntenant_overrides:\n{override}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(".bench") / "backtest")
    parser.add_argument("--rebuild", action="store_true", help="time a store rebuild from SQL")
    parser.add_argument("--sql", action="store_true", help="read SQL rows, not the store")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    path = args.dir / f"{args.items}x{args.dim}"
    settings = settings_mod.load({"CLIPMOD_DATA_DIR": str(path)})
    if not (path / "clipmod.db").exists():
        started = time.perf_counter()
        build(path, args.items, args.dim)
        print(f"built {path} in {time.perf_counter() - started:.1f} s")
    draft = parse_policy(draft_policy())
    encoder = StubEncoder(args.dim)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    store = None if args.sql else TrafficStore(settings.data_dir / "traffic", REVISION)
    if store is not None and not args.child and (args.rebuild or not store.files.dir.exists()):
        with sessions() as session:
            done = store.rebuild(session, reason="benchmark")
        print(f"store rebuilt from SQL: {done.items:,} items in {done.seconds:.1f} s")
    if not args.child and not args.sql:
        cold = subprocess.run(
            [sys.executable, "-m", "bench.backtest", *(argv or sys.argv[1:]), "--child"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"cold (first run in a fresh process): {cold}")
    with sessions() as session:
        count = session.scalar(select(func.count()).select_from(ItemEmbedding))
    walls, cpus = [], []
    for _ in range(1 if args.child else args.repeat):
        with sessions() as session:
            started, cpu = time.perf_counter(), time.process_time()
            report = backtest.backtest(session, draft, encoder, store=store)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        timings = ", ".join(f"{k} {v:.3f}" for k, v in report.timings.items())
        prefix = "" if args.child else "run: "
        print(f"{prefix}{walls[-1]:.3f} s wall, {cpus[-1]:.3f} s CPU ({timings})")
    engine.dispose()
    if args.child:
        return 0
    best, median = min(walls), statistics.median(walls)
    print(
        f"backtest ({'SQL rows' if args.sql else 'traffic store'}): {report.items:,} items "
        f"({count:,} stored, dim {args.dim}) on {os.cpu_count()} CPUs: median {median:.3f} s, "
        f"best {best:.3f} s, {report.items / median:,.0f} items/s (CPU time median "
        f"{statistics.median(cpus):.3f} s; load average {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
