"""Pipeline throughput vs the bare model forward pass, measured in the same run.

For each model (the bundled demo CLIP, and a full-size ViT-B/32 from transformers' default
`CLIPConfig` with random weights), at the same batch size:

1. bare forward: preprocessed pixels → `get_image_features`, timed over several batches;
2. pipeline: N JPEG uploads go through the real intake code into the queue (embedded default:
   SQLite + SQLite broker), then a real `clipmod worker` process drains it. Throughput is taken
   from the verdicts' own `scored_at` stamps over the steady state (first batch excluded, as the
   bare forward's warm-up is), so process start and model load are not counted.

Every upload is accepted before the worker starts, so intake never competes with the worker for
the cores inside the measured window: the figure is the worker's own throughput on a backlog.
After the run the worker's `/metrics` give the split per item (claim, decode, forward, decide,
write; the rest is time outside the batch stages: the broker and the task call), and the decode
ceiling is printed: decoding costs `decode_ms` of one core per image and bare forward uses every
core, so on `cores` cores e2e/bare cannot exceed cores / (decode_ms/1000 · bare + cores) even with
free queueing and writes.

The ratio pipeline (e2e) / bare forward is the figure of merit: it says how much the service
loses to queueing, decoding, preprocessing, scoring and database writes. Goal: ≥ 0.85 on
ViT-B/32. `--device cuda` runs both halves on the GPU in fp16 (`bench/gpu.sh` prepares a bare
GPU machine); `--broker`/`--database` (or `CLIPMOD_BENCH_BROKER_URL`/`CLIPMOD_BENCH_DATABASE_URL`)
move the pipeline to Redis/PostgreSQL: a PostgreSQL URL names the server, and the benchmark
creates and drops a database of its own on it.
Run: `make bench` or `python -m bench.pipeline [--model vit-b32] [--images N] [--device cuda]`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from sqlalchemy import create_engine, func, select, text
from tqdm import tqdm

from bench.procstat import cpu_seconds
from clipmod import keys, migrate
from clipmod import settings as settings_mod
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.demo import world
from clipmod.models import Verdict

CACHE = Path(".bench")


def vit_b32_folder() -> Path:
    """A full-size ViT-B/32 (random weights) with the bundled tokenizer, saved once."""
    from transformers import AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = CACHE / "vit-b32-random"
    if (folder / "model.safetensors").exists():
        return folder
    tok = AutoProcessor.from_pretrained(settings_mod.BUNDLED_MODEL).tokenizer
    config = CLIPConfig()
    config.text_config.vocab_size = max(len(tok), 49408)
    config.text_config.bos_token_id = tok.bos_token_id
    config.text_config.eos_token_id = tok.eos_token_id
    config.text_config.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    model = CLIPModel(config)
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(folder)
    return folder


def make_jpegs(n: int, unique: int = 384) -> list[bytes]:
    """Upload-like JPEGs: world scenes upscaled to 640x480 with sensor-ish noise.

    Rendering costs ~8 ms an image even on a fast machine, so at most `unique` are rendered and
    the list cycles through them: every upload is still its own item, decoded on its own.
    """
    rng = np.random.default_rng(0)
    out: list[bytes] = []
    for seed in tqdm(range(min(n, unique)), desc="images", file=sys.stderr, leave=False):
        img = world.render(seed, "heldout").image.resize((640, 480), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (480, 640, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(n)]


def decode_ms(model_dir: Path, jpegs: list[bytes], n: int = 128) -> float:
    """Decode + preprocess of one upload on one thread, as the worker does it (best of 3)."""
    from transformers import AutoProcessor

    from clipmod import images, pixels

    # The processor alone: loading the model (on a GPU machine, a second copy) is not needed.
    spec = pixels.ImageSpec.from_processor(AutoProcessor.from_pretrained(model_dir).image_processor)
    limits = images.ImageLimits.from_settings(settings_mod.load({}))
    sample = [jpegs[i % len(jpegs)] for i in range(n)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for data in sample:
            pixels.decode_pixels(data, limits, spec)
        best = min(best, (time.perf_counter() - started) / n * 1000)
    return best


def stage_split(metrics_texts: list[str]) -> dict[str, float]:
    """ms per item in each batch stage, from the workers' `/metrics` after a run."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    items = 0.0
    for metrics_text in metrics_texts:
        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                if sample.name == "clipmod_batch_stage_seconds_sum":
                    stage = sample.labels["stage"]
                    sums[stage] = sums.get(stage, 0.0) + sample.value
                elif sample.name == "clipmod_batch_size_sum":
                    items += sample.value
    return {k: v * 1000 / items for k, v in sums.items()} if items else {}


def bare_forward(
    model_dir: Path, jpegs: list[bytes], batch: int, batches: int, device: str = "cpu"
) -> float:
    """The model alone on ready uint8 pixels (host → device copy and normalisation included).

    The median of up to 8 windows: on a machine shared with other jobs one starved stretch (two
    torch threads wait on their slowest) swung a single timing 7x between runs.
    """
    from clipmod.runtime import ClipRuntime

    runtime = ClipRuntime.load(str(model_dir), device)
    pixels = np.stack(
        [
            runtime.preprocess(Image.open(io.BytesIO(jpegs[i % len(jpegs)])).convert("RGB"))
            for i in range(batch)
        ]
    )
    runtime.encode_pixels(pixels)  # warm-up
    per_window = max(1, batches // 8)
    rates = []
    for _ in range(max(1, batches // per_window)):
        started = time.perf_counter()
        for _ in range(per_window):
            runtime.encode_pixels(pixels)
        rates.append(batch * per_window / (time.perf_counter() - started))
    return float(np.median(rates))


class PipelineRun(NamedTuple):
    rate: float  # steady-state e2e img/s
    split: dict[str, float]  # ms per item by stage, and the workers' CPU ("cpu")
    jpeg_decoder: str  # "nvJPEG" or "CPU": what the workers logged (workers.gpujpeg)
    nvjpeg_refused: int  # batches nvJPEG refused, decoded on the CPU instead


@contextmanager
def fresh_database(url: str | None) -> Iterator[str | None]:
    """A PostgreSQL server URL → a database of this run's own, dropped afterwards; anything
    else (None: SQLite in the run's data dir) as given."""
    if not url or not url.startswith("postgresql"):
        yield url
        return
    name = f"clipmod_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pipeline(
    model_dir: Path,
    jpegs: list[bytes],
    batch: int,
    device: str = "cpu",
    broker: str | None = None,
    database: str | None = None,
    workers: int = 1,
) -> PipelineRun:
    """Steady-state e2e img/s, and the workers' ms per item by stage (see `stage_split`)."""
    with fresh_database(database) as db_url:
        return _pipeline(model_dir, jpegs, batch, device, broker, db_url, workers)


def _pipeline(
    model_dir: Path,
    jpegs: list[bytes],
    batch: int,
    device: str,
    broker: str | None,
    database: str | None,
    workers: int,
) -> PipelineRun:
    import urllib.request

    from api import create_app
    from cli.supervise import WorkerProcess, settings_env

    data_dir = Path(tempfile.mkdtemp(prefix="clipmod-bench-"))
    try:
        env = {
            "CLIPMOD_DATA_DIR": str(data_dir),
            "CLIPMOD_MODEL": str(model_dir),
            "CLIPMOD_BATCH_SIZE": str(batch),
            "CLIPMOD_DEVICE": device,
            # The benchmark is one tenant uploading as fast as it can: not what limits are for.
            "CLIPMOD_RATE_LIMIT": "100000000/minute",
        }
        env.update({"CLIPMOD_BROKER_URL": broker} if broker else {})
        env.update({"CLIPMOD_DATABASE_URL": database} if database else {})
        passed = ("CLIPMOD_DECODE_PROCESSES", "CLIPMOD_GPU_JPEG")
        env.update({k: v for k, v in os.environ.items() if k in passed})
        settings = settings_mod.load(env)
        migrate.upgrade(settings)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            key = keys.create_key(session, "bench")
        app = create_app(settings)
        local = threading.local()

        def upload(data: bytes) -> None:
            if not hasattr(local, "client"):
                local.client = app.test_client()
            resp = local.client.post(
                "/v1/items",
                data={"file": (io.BytesIO(data), "x.jpg")},
                headers={"Authorization": f"Bearer {key}"},
                content_type="multipart/form-data",
            )
            assert resp.status_code == 202, resp.get_json()

        # Threads: intake's image check decodes each upload, and Pillow releases the GIL.
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for _ in tqdm(
                pool.map(upload, jpegs),
                total=len(jpegs),
                desc="uploads",
                file=sys.stderr,
                leave=False,
            ):
                pass
        started = [
            WorkerProcess.start(settings_env(settings), log=data_dir / f"worker-{i}.log")
            for i in range(workers)
        ]
        for worker in started:
            worker.wait_ready(timeout=600)  # every upload is already in: nothing to settle
        cpu_before = sum(cpu_seconds(w.proc.pid) for w in started)
        with sessions() as session:
            scored_before = session.scalar(select(func.count(Verdict.id))) or 0
        try:
            with tqdm(total=len(jpegs), desc="verdicts", file=sys.stderr, leave=False) as bar:
                done = 0
                while done < len(jpegs):
                    time.sleep(0.2)
                    with sessions() as session:
                        now = session.scalar(select(func.count(Verdict.id))) or 0
                    bar.update(now - done)
                    done = now
            texts = []
            for worker in started:
                with urllib.request.urlopen(f"{worker.health_url}/metrics", timeout=5) as resp:
                    texts.append(resp.read().decode())
            split = stage_split(texts)
            # The workers' own CPU per item (decode processes, if any, are not in it): unlike
            # wall time it barely moves when other jobs share the cores.
            cpu = sum(cpu_seconds(w.proc.pid) for w in started) - cpu_before
            if len(jpegs) > scored_before:
                split["cpu"] = cpu * 1000 / (len(jpegs) - scored_before)
        finally:
            for worker in started:
                worker.stop()
        # Which decoder the workers used (workers.gpujpeg logs it), and how often nvJPEG
        # refused a batch (its items then decoded on the CPU).
        logged = "".join(
            (data_dir / f"worker-{i}.log").read_text(errors="replace") for i in range(workers)
        )
        with sessions() as session:
            stamps = sorted(session.scalars(select(Verdict.scored_at)))
        engine.dispose()
        first_batch = sum(1 for s in stamps if s == stamps[0])
        rate = (len(stamps) - first_batch) / (stamps[-1] - stamps[0]).total_seconds()
        decoder = "nvJPEG" if "(nvJPEG)" in logged else "CPU"
        return PipelineRun(rate, split, decoder, logged.count("nvJPEG refused"))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# name: (folder, batch, images, bare batches) on CPU; a GPU run takes --batch/--images.
MODELS = {
    "bundled": (lambda: settings_mod.BUNDLED_MODEL, 32, 2048, 40),
    "vit-b32": (vit_b32_folder, 32, 320, 4),
}


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "--only", dest="model", choices=sorted(MODELS))
    parser.add_argument("--images", type=int, default=None, help="uploads per model")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 32)")
    parser.add_argument("--bare-batches", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--broker", default=os.environ.get("CLIPMOD_BENCH_BROKER_URL"))
    parser.add_argument("--database", default=os.environ.get("CLIPMOD_BENCH_DATABASE_URL"))
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one GPU)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _options(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    backend = f"{(args.broker or 'sqla+sqlite').split(':')[0]} broker, " + (
        f"{(args.database or 'sqlite').split(':')[0].split('+')[0]} database"
    )
    results = {}
    for name, (folder_fn, cpu_batch, n, bare_batches) in MODELS.items():
        if args.model and name != args.model:
            continue
        batch = args.batch or cpu_batch
        folder = folder_fn()
        jpegs = make_jpegs(args.images or n)
        bare = bare_forward(folder, jpegs, batch, args.bare_batches or bare_batches, args.device)
        piped, split, decoder, refused = pipeline(
            folder, jpegs, batch, args.device, args.broker, args.database, args.workers
        )
        decode = decode_ms(folder, jpegs)
        cores = os.cpu_count() or 1
        ceiling = cores / (decode / 1000 * bare + cores)
        results[name] = {
            "jpeg_decoder": decoder,
            "nvjpeg_refused_batches": refused,
            "batch": batch,
            "images": len(jpegs),
            "workers": args.workers,
            "device": args.device,
            "backend": backend,
            "bare_forward_img_s": bare,
            "pipeline_img_s": piped,
            "ratio": piped / bare,
            "decode_ms": decode,
            "ceiling": ceiling,
            "worker_ms_per_item": split,
        }
        print(
            f"{name:8s} {args.device} batch {batch} ({backend}, {args.workers} worker"
            f"{'s' if args.workers > 1 else ''}): bare forward {bare:8.1f} img/s"
            f" | e2e {piped:8.1f} img/s | e2e/bare = {piped / bare:.2f} | JPEGs on {decoder}",
            flush=True,
        )
        stages = " ".join(f"{k} {v:.2f}" for k, v in split.items() if k != "cpu")
        outside = 1000 / piped - sum(v for k, v in split.items() if k != "cpu")
        cpu = f"; worker CPU {split['cpu']:.2f}" if "cpu" in split else ""
        print(
            f"{'':8s} worker ms per item: {stages}, outside the stages {max(outside, 0):.2f}{cpu}"
            f" | decode {decode:.2f} ms/img on one core:"
            f" e2e/bare <= {ceiling:.2f} on {cores} cores",
            flush=True,
        )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if args.device == "cuda":
        machine += f", {torch.cuda.get_device_name()}"
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
