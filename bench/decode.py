"""Worst-case cost of one image at intake (`images.inspect`) and in the worker (`decode_rgb` +
`preprocess`), under the default limits: is every input bounded in time and memory?

Each case is the most expensive shape a format allows within `CLIPMOD_MAX_IMAGE_PIXELS`,
`CLIPMOD_MAX_IMAGE_SIDE` and `CLIPMOD_MAX_ASPECT_RATIO` (and small enough on the wire to pass
`CLIPMOD_MAX_UPLOAD_BYTES`). Every measurement runs in a fresh process so its peak resident
memory is its own: the figure is how far the resident size peaked above where it stood just
before the call (Linux: the peak is reset through /proc/self/clear_refs).

Run: `python -m bench.decode [--target 224]`.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SQUARE = 6_324  # 6,324^2 = 39.99 M pixels, just under the default budget


def _pattern(size: tuple[int, int]) -> np.ndarray:
    """A diagonal gradient: real work for every decoder, yet compressible under 10 MB."""
    w, h = size
    return (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def cases() -> dict[str, bytes]:
    sq = (SQUARE, SQUARE)
    grey = Image.fromarray(_pattern(sq))
    rgb = Image.merge("RGB", (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grey))
    rgba = rgb.copy()
    rgba.putalpha(grey)
    sixteen = Image.fromarray(_pattern(sq).astype(np.uint16) * 257)
    floats = Image.fromarray(_pattern(sq).astype(np.float32) * 3.5 - 100)
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png-grey-40M": _save(grey, "PNG"),
        "png-rgba-40M": _save(rgba, "PNG"),
        "png-16bit-40M": _save(sixteen, "PNG"),
        "png-600x12000": _save(Image.fromarray(_pattern((600, 12_000))), "PNG"),
        "jpeg-rgb-40M-rotated": _save(rgb, "JPEG", quality=85, exif=exif),
        "gif-transparent-40M": _save(grey.convert("P"), "GIF", transparency=0),
        "webp-lossless-rgba-40M": _save(rgba, "WEBP", lossless=True, method=0),
        "tiff-float-40M": _save(floats, "TIFF", compression="tiff_deflate"),
    }


CHILD = """
import json, sys, time
from clipmod import images
from clipmod.runtime import ClipRuntime
from clipmod.settings import BUNDLED_MODEL, load

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB

path, mode, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
limits = images.ImageLimits.from_settings(load({}))
spec = ClipRuntime.load(str(BUNDLED_MODEL), "cpu").image_spec
if target != spec.target:
    import dataclasses
    spec = dataclasses.replace(spec, shortest_edge=target, crop_hw=(target, target))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
start = time.perf_counter()
if mode == "intake":
    images.inspect(data, limits)
else:
    spec.to_array(images.decode_rgb(data, limits, spec.target))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": status("VmHWM") - before}))
"""


def measure(path: Path, mode: str, target: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, str(target)],
        check=True,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, default=224, help="model input (ViT-B/32: 224)")
    args = parser.parse_args()
    print(
        f"| case | bytes | intake s | intake MiB | worker s | worker MiB |  (target {args.target})"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in cases().items():
            path = Path(tmp) / name
            path.write_bytes(data)
            intake = measure(path, "intake", args.target)
            worker = measure(path, "worker", args.target)
            print(
                f"| {name} | {len(data):,} | {intake['seconds']:.2f} | {intake['peak_mib']:.0f} "
                f"| {worker['seconds']:.2f} | {worker['peak_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
