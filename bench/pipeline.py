"""Pipeline throughput vs the bare model forward pass, measured in the same run.

For each model (the bundled demo CLIP, and a full-size ViT-B/32 from transformers' default
`CLIPConfig` with random weights), at the same batch size:

1. bare forward: preprocessed pixels → `get_image_features`, timed over several batches;
2. pipeline: N JPEG uploads go through the real intake code into the queue (embedded default:
   SQLite + SQLite broker), then a real `clipmod worker` process drains it. Throughput is taken
   from the verdicts' own `scored_at` stamps over the steady state (first batch excluded, as the
   bare forward's warm-up is), so process start and model load are not counted.

The ratio pipeline / bare forward is the figure of merit: it says how much the service loses
to queueing, decoding, preprocessing, scoring and database writes. Goal: ≥ 0.85 on ViT-B/32.
Run: `make bench` or `python -m bench.pipeline [--only vit-b32] [--images N]`.
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
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sqlalchemy import func, select
from tqdm import tqdm

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


def make_jpegs(n: int) -> list[bytes]:
    """Upload-like JPEGs: world scenes upscaled to 640x480 with sensor-ish noise."""
    rng = np.random.default_rng(0)
    out = []
    for seed in tqdm(range(n), desc="images", file=sys.stderr, leave=False):
        img = world.render(seed, "heldout").image.resize((640, 480), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (480, 640, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


def bare_forward(model_dir: Path, jpegs: list[bytes], batch: int, batches: int) -> float:
    from clipmod.runtime import ClipRuntime

    runtime = ClipRuntime.load(str(model_dir), "cpu")
    pixels = np.stack(
        [runtime.preprocess(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs[:batch]]
    )
    runtime.encode_pixels(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        runtime.encode_pixels(pixels)
    return batch * batches / (time.perf_counter() - started)


def pipeline(model_dir: Path, jpegs: list[bytes], batch: int) -> float:
    from api import create_app
    from cli.supervise import WorkerProcess, settings_env

    data_dir = Path(tempfile.mkdtemp(prefix="clipmod-bench-"))
    try:
        settings = settings_mod.load(
            {
                "CLIPMOD_DATA_DIR": str(data_dir),
                "CLIPMOD_MODEL": str(model_dir),
                "CLIPMOD_BATCH_SIZE": str(batch),
                "CLIPMOD_DEVICE": "cpu",
            }
        )
        migrate.upgrade(settings)
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            key = keys.create_key(session, "bench")
        client = create_app(settings).test_client()
        for data in tqdm(jpegs, desc="uploads", file=sys.stderr, leave=False):
            resp = client.post(
                "/v1/items",
                data={"file": (io.BytesIO(data), "x.jpg")},
                headers={"Authorization": f"Bearer {key}"},
                content_type="multipart/form-data",
            )
            assert resp.status_code == 202, resp.get_json()
        worker = WorkerProcess.start(settings_env(settings), log=data_dir / "worker.log")
        worker.wait_ready(timeout=600, settle=0.5)
        try:
            with tqdm(total=len(jpegs), desc="verdicts", file=sys.stderr, leave=False) as bar:
                done = 0
                while done < len(jpegs):
                    time.sleep(0.2)
                    with sessions() as session:
                        now = session.scalar(select(func.count(Verdict.id))) or 0
                    bar.update(now - done)
                    done = now
        finally:
            worker.stop()
        with sessions() as session:
            stamps = sorted(session.scalars(select(Verdict.scored_at)))
        engine.dispose()
        first_batch = sum(1 for s in stamps if s == stamps[0])
        return (len(stamps) - first_batch) / (stamps[-1] - stamps[0]).total_seconds()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


MODELS = {
    "bundled": (lambda: settings_mod.BUNDLED_MODEL, 32, 2048, 40),
    "vit-b32": (vit_b32_folder, 32, 320, 4),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(MODELS))
    parser.add_argument("--images", type=int, default=None, help="uploads per model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    results = {}
    for name, (folder_fn, batch, n, bare_batches) in MODELS.items():
        if args.only and name != args.only:
            continue
        folder = folder_fn()
        jpegs = make_jpegs(args.images or n)
        bare = bare_forward(folder, jpegs, batch, bare_batches)
        piped = pipeline(folder, jpegs, batch)
        results[name] = {
            "batch": batch,
            "images": len(jpegs),
            "bare_forward_img_s": bare,
            "pipeline_img_s": piped,
            "ratio": piped / bare,
        }
        print(
            f"{name:8s} batch {batch}: bare forward {bare:8.1f} img/s | pipeline "
            f"{piped:8.1f} img/s | pipeline/bare = {piped / bare:.2f}",
            flush=True,
        )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
