"""Seeded fuzzing and the corpus of reproducers: only our own errors ever leave the decode path.

The CI run is small and fixed (the same cases every time); `python -m tests.hostile.fuzz` runs
long ones and shrinks what they find into `corpus/` (see tests/hostile/fuzz.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipmod import images
from clipmod.errors import ClipmodError
from clipmod.runtime import ClipRuntime
from clipmod.settings import load
from tests.hostile import fuzz

CI_SEED = 20261128
CI_CASES = 2600  # 100 per seed image; ~1 s on the development machine


@pytest.fixture(scope="module")
def target(runtime: ClipRuntime) -> fuzz.Target:
    return fuzz.current_target(runtime.preprocess, runtime.image_spec.target)


@pytest.mark.parametrize("name", sorted(fuzz.seeds()))
def test_every_seed_is_a_valid_image(runtime: ClipRuntime, name: str) -> None:
    """Mutations start from files that decode, so the fuzz reaches past the header checks."""
    data = fuzz.seeds()[name]
    limits = images.ImageLimits.from_settings(load({}))
    info = images.inspect(data, limits)
    assert info.format == name.split("-")[0]
    pixels = runtime.preprocess(images.decode_rgb(data, limits, runtime.image_spec.target))
    assert pixels.shape[0] == 3


def test_seeded_mutations_raise_only_our_errors(target: fuzz.Target) -> None:
    escapes = []
    for name, index, data in fuzz.cases(CI_CASES, CI_SEED):
        escape = fuzz.check(data, target)
        if escape is not None:
            escapes.append(f"case {index} ({name}): {escape}")
    assert not escapes, f"{len(escapes)} escapes (seed {CI_SEED}):\n" + "\n".join(escapes[:10])


def test_mutations_are_reproducible() -> None:
    assert list(fuzz.cases(30, 7)) == list(fuzz.cases(30, 7))
    assert list(fuzz.cases(30, 7)) != list(fuzz.cases(30, 8))


CORPUS = sorted(fuzz.CORPUS.iterdir())


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 20
    assert all(p.stat().st_size < 4096 for p in CORPUS)


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_files_raise_only_our_errors(target: fuzz.Target, path: Path) -> None:
    assert fuzz.check(path.read_bytes(), target) is None


def test_the_elongated_tiff_the_fuzz_found_is_refused_from_its_header() -> None:
    """24 x 1,048,592 px in 1.7 kB: it held the old worker for ~2 s, resized to 64 x 2.8 M."""
    data = (fuzz.CORPUS / "tiff-24x1048592-elongated-slow.tif").read_bytes()
    limits = images.ImageLimits.from_settings(load({}))
    with pytest.raises(ClipmodError) as info:
        images.decode_rgb(data, limits, target=64)
    assert info.value.code == "image_side_too_large"
