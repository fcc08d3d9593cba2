"""The committed sample images are what their names say, and each has an expected verdict."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from clipmod.demo.samples import DEFAULT_OUT, WANTED


def test_every_sample_is_in_colour_and_has_an_expected_verdict() -> None:
    expected = json.loads((DEFAULT_OUT / "expected.json").read_text())
    for pairs in WANTED:
        name = "-and-".join(f"{c}-{o}" for o, c in pairs) + ".png"
        assert name in expected
        pixels = np.asarray(Image.open(DEFAULT_OUT / name).convert("RGB")).astype(int)
        # A black-and-white render has R == G == B everywhere; "blue-syringe.png" must be blue.
        assert (pixels.max(axis=-1) - pixels.min(axis=-1)).max() > 10, name
