"""The model's input geometry and normalisation, without torch.

Kept apart from `clipmod.runtime` so decode processes (`workers.decoding`) can import it
without loading torch: a spawned decoder that imported torch would cost seconds and hundreds
of MiB each. The host only resizes and crops to uint8; normalisation runs where the model is
(`ClipRuntime.encode_pixels`), so a batch crosses to a GPU as a quarter of the float32 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from clipmod import images


@dataclass(frozen=True)
class ImageSpec:
    """The processor's geometry and normalisation, read once from its config."""

    shortest_edge: int | None
    resize_hw: tuple[int, int] | None
    crop_hw: tuple[int, int] | None
    resample: int
    mean: np.ndarray
    std: np.ndarray
    rescale: float

    @classmethod
    def from_processor(cls, image_processor: Any) -> ImageSpec:
        size = dict(image_processor.size or {})
        crop = dict(getattr(image_processor, "crop_size", None) or {})
        do_crop = bool(getattr(image_processor, "do_center_crop", True)) and bool(crop)
        return cls(
            shortest_edge=size.get("shortest_edge"),
            resize_hw=(size["height"], size["width"]) if "height" in size else None,
            crop_hw=(crop["height"], crop["width"]) if do_crop else None,
            resample=int(getattr(image_processor, "resample", Image.Resampling.BICUBIC)),
            mean=np.asarray(image_processor.image_mean, dtype=np.float32),
            std=np.asarray(image_processor.image_std, dtype=np.float32),
            rescale=float(getattr(image_processor, "rescale_factor", 1 / 255)),
        )

    @property
    def target(self) -> int:
        """The smallest decoded size that loses nothing (for JPEG draft decoding)."""
        if self.shortest_edge:
            return self.shortest_edge
        assert self.resize_hw is not None
        return max(self.resize_hw)

    def resized(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) after the processor's resize of a w x h image."""
        if self.shortest_edge:
            s = self.shortest_edge
            return (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        assert self.resize_hw is not None
        return self.resize_hw[1], self.resize_hw[0]

    def crop_box(self, w: int, h: int) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) of the centre crop of a resized w x h image, or None."""
        if not self.crop_hw:
            return None
        ch, cw = self.crop_hw
        top, left = int((h - ch) / 2), int((w - cw) / 2)
        return left, top, left + cw, top + ch

    def to_uint8(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image → uint8 CHW at the model's resolution (resize + centre crop).
        `workers.gpujpeg.resize_crop` does the same on a GPU, from `resized` and `crop_box`."""
        new_w, new_h = self.resized(*img.size)
        if (new_w, new_h) != img.size:
            img = img.resize((new_w, new_h), resample=Image.Resampling(self.resample))
        box = self.crop_box(new_w, new_h)
        if box is not None:
            img = img.crop(box)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (…, 3, H, W) → normalised float32, on the host: the reference the device
        path (`ClipRuntime.encode_pixels`) is tested against."""
        arr = pixels.astype(np.float32) * self.rescale
        shape = (3, 1, 1)
        return np.ascontiguousarray((arr - self.mean.reshape(shape)) / self.std.reshape(shape))

    def to_array(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image → normalised float32 CHW, as transformers' processor gives it."""
        return self.normalise(self.to_uint8(img))


def decode_pixels(data: bytes, limits: images.ImageLimits, spec: ImageSpec) -> np.ndarray:
    """Stored bytes → uint8 CHW model input: the whole per-image CPU cost of a batch."""
    return spec.to_uint8(images.decode_rgb(data, limits, target=spec.target))
