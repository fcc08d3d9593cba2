"""GPU JPEG decoding (`workers.gpujpeg`) against the CPU decoders: speed and agreement.

Speed: model-sized pixels per second from 640x480 JPEGs at the worker's batch size, through
the worker's own code: `GpuJpeg.decode` (nvJPEG + resize + crop on the device) and the decode
process pool (`workers.decoding.DecodePool`, one process per core, as a GPU worker runs it).

Agreement: the same JPEGs through both paths, compared as uint8 pixels (mean, 99th percentile
and largest difference), as embeddings (cosine, per model) and, for the bundled demo model
with its bundled policy, as verdicts (how many actions differ, largest score difference).
That is what switching a worker from `CLIPMOD_GPU_JPEG=off` to `auto` changes.

On a machine without nvJPEG, `--stand-in` decodes with Pillow at full scale instead, so the
script itself can be checked on a CPU (its speed figures then mean nothing).
Run: `python -m bench.gpudecode [--device cuda] [--images N] [--batch N] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from bench.pipeline import make_jpegs, vit_b32_folder
from clipmod import images, settings
from clipmod.policy import scoring
from clipmod.policy.loader import load_policy_file
from clipmod.runtime import ClipRuntime
from workers import decoding
from workers.gpujpeg import GpuJpeg, full_scale_pillow, nvjpeg


def rate(fn, batches: list[list[bytes]]) -> float:  # type: ignore[no-untyped-def]
    fn(batches[0])  # warm-up: nvJPEG's handles, the pool's processes
    started = time.perf_counter()
    for batch in batches:
        fn(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def agreement(runtime: ClipRuntime, gpu: GpuJpeg, jpegs: list[bytes]) -> dict[str, float]:
    limits = images.ImageLimits.from_settings(settings.load({}))
    cpu_px = np.stack([decoding.decode_bytes(d, limits, runtime.image_spec).pixels for d in jpegs])
    on_gpu = gpu.decode(jpegs)
    assert all(p is not None for p in on_gpu), "a plain JPEG did not go to the GPU"
    gpu_px = torch.stack(on_gpu)  # type: ignore[arg-type]
    diff = np.abs(gpu_px.cpu().numpy().astype(np.int16) - cpu_px.astype(np.int16))
    e_cpu = runtime.encode_pixels(cpu_px)
    e_gpu = runtime.encode_pixels(gpu_px)
    cos = (e_cpu * e_gpu).sum(axis=1)
    return {
        "pixel_mean_abs": float(diff.mean()),
        "pixel_p99_abs": float(np.percentile(diff, 99)),
        "pixel_max_abs": float(diff.max()),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "_e_cpu": e_cpu,  # type: ignore[dict-item]
        "_e_gpu": e_gpu,  # type: ignore[dict-item]
    }


def verdicts(runtime: ClipRuntime, e_cpu: np.ndarray, e_gpu: np.ndarray) -> dict[str, float]:
    """The bundled policy's verdicts from each path's embeddings."""
    policy, _ = load_policy_file(settings.BUNDLED_POLICY)
    bank = scoring.build_bank(policy, runtime.encode_texts, runtime.logit_scale)
    n = len(e_cpu)
    ids, tenants = [str(i) for i in range(n)], ["bench"] * n
    a = scoring.decide_batch(
        bank, [[("image", e[None])] for e in e_cpu], item_ids=ids, tenants=tenants
    )
    b = scoring.decide_batch(
        bank, [[("image", e[None])] for e in e_gpu], item_ids=ids, tenants=tenants
    )
    score_diff = max(
        abs(x.score - y.score)
        for oa, ob in zip(a, b, strict=True)
        for x, y in zip(oa.categories, ob.categories, strict=True)
    )
    return {
        "actions_differ": sum(oa.action != ob.action for oa, ob in zip(a, b, strict=True)),
        "score_max_abs_diff": float(score_diff),
        "items": n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--agree", type=int, default=256, help="images compared between paths")
    parser.add_argument("--stand-in", action="store_true", help="Pillow instead of nvJPEG")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    jpegs = make_jpegs(args.images)
    batches = [jpegs[i : i + args.batch] for i in range(0, len(jpegs), args.batch)]
    limits = images.ImageLimits.from_settings(settings.load({}))
    decode = full_scale_pillow if args.stand_in else nvjpeg(device)
    out: dict[str, object] = {
        "device": args.device,
        "decoder": "pillow stand-in" if args.stand_in else "nvjpeg",
    }
    for name, folder in (("vit-b32", vit_b32_folder()), ("bundled", settings.BUNDLED_MODEL)):
        runtime = ClipRuntime.load(str(folder), args.device)
        gpu = GpuJpeg(runtime.image_spec, limits, device, decode)
        found = agreement(runtime, gpu, jpegs[: args.agree])
        e_cpu, e_gpu = found.pop("_e_cpu"), found.pop("_e_gpu")
        if name == "bundled":
            found.update(verdicts(runtime, e_cpu, e_gpu))  # type: ignore[arg-type]
        if name == "vit-b32":
            found["gpu_decode_img_s"] = rate(gpu.decode, batches)
            pool = decoding.DecodePool(os.cpu_count() or 1, limits, runtime.image_spec)
            try:
                found["cpu_processes"] = pool.processes
                found["cpu_decode_img_s"] = rate(pool.decode, batches)
            finally:
                pool.close()
        out[name] = found
        print(
            f"{name}: "
            + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in found.items()
            ),
            flush=True,
        )
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
