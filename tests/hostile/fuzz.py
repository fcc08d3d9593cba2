"""Seeded byte-mutation fuzzing of the image decode path, shared by CI and long local runs.

Small valid images of every accepted format (and the modes that take different conversion
paths: 16-bit, 32-bit integer, float, palette, alpha, CMYK, EXIF-rotated) are mutated with a
seeded `random.Random`, then fed to the intake's check (`images.inspect`) and to the worker's
decode (`images.decode_rgb` + the runtime's `preprocess`). Only `ClipmodError` may come out.
Byte mutation rather than Hypothesis: no new dependency, and a case is reproduced from its
(seed, index) alone.

A long run that also shrinks what it finds into regression files:

    python -m tests.hostile.fuzz --cases 20000 --seed 1 --out /tmp/fuzz
    python -m tests.hostile.fuzz --cases 20000 --seed 1 --out /tmp/fuzz --against main

`--against REF` fuzzes `clipmod/images.py` as of that git ref instead (to find the inputs that
broke it: those are the corpus in tests/hostile/corpus/).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipmod import images
from clipmod.errors import ClipmodError
from tests.images import encode

CORPUS = Path(__file__).parent / "corpus"
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF)


def _rgb(size: tuple[int, int] = (24, 16), seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[:, : size[0] // 2] //= 4  # structure, not only noise
    return Image.fromarray(arr)


def _ramp(dtype: str, high: float) -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, high, 24).astype(dtype), (16, 1)))


def _animated(fmt: str) -> bytes:
    frames = [_rgb(seed=s).convert("P") if fmt == "GIF" else _rgb(seed=s) for s in (1, 2)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)


@cache
def seeds() -> dict[str, bytes]:
    """Small valid files, one per format and decode path; names say which."""
    rgb = _rgb()
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    exif = Image.Exif()
    exif[0x0112] = 6
    be16 = Image.frombytes("I;16B", (24, 16), np.asarray(_ramp("uint16", 65535)).astype(">u2"))
    return {
        "jpeg-rgb": encode(rgb, "JPEG", quality=80),
        "jpeg-grey-progressive": encode(rgb.convert("L"), "JPEG", progressive=True),
        "jpeg-cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg-exif-rotated": encode(rgb, "JPEG", exif=exif),
        "png-rgb": encode(rgb, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-palette-transparent": encode(rgb.convert("P"), "PNG", transparency=0),
        "png-16bit": encode(_ramp("uint16", 65535), "PNG"),
        "png-grey-alpha-exif": encode(rgba.convert("LA"), "PNG", exif=exif),
        "gif": encode(rgb.convert("P"), "GIF", transparency=1),
        "gif-animated": _animated("GIF"),
        "webp-lossy": encode(rgb, "WEBP", quality=70),
        "webp-lossless-alpha": encode(rgba, "WEBP", lossless=True),
        "webp-animated": _animated("WEBP"),
        "bmp-rgb": encode(rgb, "BMP"),
        "bmp-palette": encode(rgb.convert("P"), "BMP"),
        "bmp-1bit": encode(rgb.convert("1"), "BMP"),
        "tiff-rgb": encode(rgb, "TIFF"),
        "tiff-rgb-deflate-rotated": encode(rgb, "TIFF", compression="tiff_deflate", exif=exif),
        "tiff-lzw-alpha": encode(rgba, "TIFF", compression="tiff_lzw"),
        "tiff-jpeg": encode(rgb, "TIFF", compression="jpeg"),
        "tiff-16bit": encode(_ramp("uint16", 65535), "TIFF"),
        "tiff-16bit-big-endian": encode(be16, "TIFF"),
        "tiff-32bit-int": encode(_ramp("int32", 70_000), "TIFF"),
        "tiff-float": encode(_ramp("float32", 1.0), "TIFF"),
        "tiff-1bit-group4": encode(rgb.convert("1"), "TIFF", compression="group4"),
    }


def _position(data: bytes | bytearray, rng: random.Random) -> int:
    """Half the edits hit bytes 8..80: headers, where most bugs are, past the magic number
    (an edit there mostly makes the file unrecognisable, which tests little)."""
    roll = rng.random()
    if roll < 0.05 or len(data) <= 8:
        return rng.randrange(min(len(data), 8))
    if roll < 0.55:
        return rng.randrange(8, min(len(data), 80))
    return rng.randrange(len(data))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: bit flips, interesting values, cuts, deletions, copies."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        op = rng.randrange(7)
        at = _position(out, rng)
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.randrange(256)
        elif op == 2:
            width = rng.choice((1, 2, 4))
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            order = rng.choice(("big", "little"))
            out[at : at + width] = value.to_bytes(width, order)
        elif op == 3:
            del out[at:]
        elif op == 4:
            del out[at : at + rng.randint(1, 32)]
        elif op == 5:
            src = rng.randrange(len(out))
            out[at:at] = out[src : src + rng.randint(1, 32)]
        else:
            out[at] = rng.choice(INTERESTING) & 0xFF
    return bytes(out)


def cases(n: int, seed: int) -> Iterator[tuple[str, int, bytes]]:
    """(seed image name, case index, mutated bytes); the same (n, seed) always gives the same."""
    names = sorted(seeds())
    for index in range(n):
        rng = random.Random(f"{seed}:{index}")
        name = names[index % len(names)]
        yield name, index, mutate(seeds()[name], rng)


@dataclass
class Escape:
    """A non-ClipmodError that came out of a decode path."""

    path: str
    error: BaseException

    @property
    def kind(self) -> str:
        """What makes two escapes the same bug: path, type and message without its numbers."""
        message = re.sub(r"\d+", "N", str(self.error))[:40]
        return f"{self.path}:{type(self.error).__name__}:{message}"

    def __str__(self) -> str:
        return f"{self.path}: {type(self.error).__name__}: {self.error}"


@dataclass
class Target:
    """The functions under test; for `--against REF`, an older images module's."""

    inspect: Callable[[bytes], object]
    decode: Callable[[bytes], object]


def current_target(preprocess: Callable[[Image.Image], Any], size: int) -> Target:
    from clipmod.settings import load

    limits = images.ImageLimits.from_settings(load({}))
    return Target(
        inspect=lambda data: images.inspect(data, limits),
        decode=lambda data: preprocess(images.decode_rgb(data, limits, size)),
    )


def check(data: bytes, target: Target) -> Escape | None:
    for path, fn in (("inspect", target.inspect), ("decode", target.decode)):
        try:
            fn(data)
        except ClipmodError:
            pass
        except Exception as exc:
            return Escape(path, exc)
    return None


def shrink(data: bytes, still_fails: Callable[[bytes], bool]) -> bytes:
    """Delete ever smaller chunks while the failure persists (a simple ddmin)."""
    chunk = max(1, len(data) // 2)
    while chunk >= 1:
        at = 0
        while at < len(data):
            candidate = data[:at] + data[at + chunk :]
            if candidate and still_fails(candidate):
                data = candidate
            else:
                at += chunk
        chunk //= 2
    return data


def _key(seed_name: str, escape: Escape) -> str:
    return f"{seed_name.split('-')[0]}:{escape.kind}"


def _old_target(ref: str, preprocess: Callable[[Image.Image], Any], size: int) -> Target:
    source = subprocess.run(
        ["git", "show", f"{ref}:clipmod/images.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("clipmod_images_at_" + re.sub(r"\W", "_", ref))
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{ref}:clipmod/images.py", "exec"), module.__dict__)  # noqa: S102
    old: Any = module
    return Target(
        inspect=lambda data: old.inspect(data, 40_000_000),
        decode=lambda data: preprocess(old.decode_rgb(data, 40_000_000, target=size)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write shrunk reproducers here")
    parser.add_argument("--against", metavar="REF", help="fuzz clipmod/images.py at this ref")
    args = parser.parse_args(argv)

    from clipmod.runtime import ClipRuntime
    from clipmod.settings import BUNDLED_MODEL

    runtime = ClipRuntime.load(str(BUNDLED_MODEL), "cpu")
    warnings.simplefilter("error")  # as under pytest: a warning escaping is a failure too
    size = runtime.image_spec.target
    if args.against:
        target = _old_target(args.against, runtime.preprocess, size)
    else:
        target = current_target(runtime.preprocess, size)
    found: dict[str, tuple[str, int, bytes, Escape]] = {}
    slowest: list[tuple[float, str, int]] = []
    started = time.perf_counter()
    for name, index, data in cases(args.cases, args.seed):
        t0 = time.perf_counter()
        escape = check(data, target)
        slowest = sorted([*slowest, (time.perf_counter() - t0, name, index)], reverse=True)[:5]
        if escape is not None:
            kind = _key(name, escape)
            if kind not in found:
                found[kind] = (name, index, data, escape)
                print(f"case {index} ({name}): {escape}", flush=True)
    elapsed = time.perf_counter() - started
    print(f"{args.cases} cases in {elapsed:.1f} s; {len(found)} distinct escapes")
    print("slowest:", ", ".join(f"{n}#{i} {t * 1000:.0f} ms" for t, n, i in slowest))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for kind, (name, index, data, escape) in found.items():

            def same(candidate: bytes, kind: str = kind, name: str = name) -> bool:
                e = check(candidate, target)
                return e is not None and _key(name, e) == kind

            small = shrink(data, same)
            fmt = name.split("-")[0]
            slug = re.sub(r"[^a-z0-9]+", "-", escape.kind.lower())[:60]
            digest = hashlib.sha256(small).hexdigest()[:8]
            path = args.out / f"{fmt}-{slug.strip('-')}-{digest}.{fmt}"
            path.write_bytes(small)
            print(f"{path} ({len(small)} bytes, from case {index} of {name})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
