"""Decoding JPEGs on the GPU (nvJPEG, through torchvision), where the machine has it.

On a GPU the model is no longer what limits a worker: on an H200, ViT-B/32 in fp16 took
~22,000 img/s (normalisation included), but 16 decode processes (`workers.decoding`) gave 1,816
img/s of 640x480 JPEGs, and nvJPEG with this module's resize 10,376 (README "Benchmarks"). So on
a CUDA device a batch's plain JPEGs are decoded, resized and cropped on the GPU, and reach the
model without crossing back to the host.

Only what the GPU decodes as Pillow would goes there (`images.plain_jpeg`: single-frame
YCbCr or greyscale JPEG, no EXIF rotation, within the limits), within a pixel budget.
Everything else (PNG, WebP, CMYK, rotated phone photos, very large JPEGs) and every batch
nvJPEG refuses as a whole (it returns no partial results) takes the CPU decoders, which also
give a broken image its own error code. A failure here therefore never fails an item.

The pixels are close to, not identical with, the CPU path's: Pillow decodes JPEGs at a reduced
DCT scale and resamples with its own bicubic filter, the GPU decodes at full scale, box-averages
to that scale and resamples with torch's antialiased bicubic. `bench.gpudecode` measures the
difference in pixels and in embeddings; `CLIPMOD_GPU_JPEG=off` keeps a GPU worker on the CPU
path.

torchvision is imported here only, lazily: it is not a dependency of the project (on the CPU
machines it would replace the pinned torch), and GPU images ship their own.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from clipmod import images
from clipmod.images import ImageLimits
from clipmod.pixels import ImageSpec

log = logging.getLogger(__name__)

# Raw JPEG bytes (1-D uint8 tensors on the host) -> uint8 (C, H, W) images on the device.
DecodeFn = Callable[[list[torch.Tensor]], list[torch.Tensor]]

# GPU memory is shared with the model, and uploads are chosen by adversaries: nvJPEG decodes at
# full scale, and the resize works on float32 copies, 12 bytes a pixel. So one call takes at
# most BATCH_PIXELS (~1.5 GB as float32; a batch of 256 640x480 JPEGs is 79 M), and an image
# above IMAGE_PIXELS (a 12 MP photo, say) goes to the CPU decoders, where draft mode decodes
# it at 1/8 scale for a fraction of a full decode.
IMAGE_PIXELS = 8_000_000
BATCH_PIXELS = 128_000_000


def nvjpeg(device: torch.device) -> DecodeFn:
    """torchvision's batched nvJPEG decode; raises ImportError where torchvision is absent."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
        return out if isinstance(out, list) else [out]

    return decode


def full_scale_pillow(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
    """nvJPEG's output made on the host: every pixel of each JPEG, RGB, (3, H, W) uint8.

    The stand-in where nvJPEG is not there (the CPU machines' tests, `bench.gpudecode
    --stand-in`), so everything after the decode is the code a GPU runs.
    """
    out = []
    for blob in blobs:
        img = Image.open(io.BytesIO(blob.numpy().tobytes())).convert("RGB")
        out.append(torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()))
    return out


def draft_scale(width: int, height: int, target: int) -> int:
    """The DCT scale Pillow's JPEG draft mode decodes at (`JpegImagePlugin.draft`): the largest
    of 8, 4, 2, 1 that keeps both sides >= `target`."""
    fits = min(width // target, height // target)
    return next((s for s in (8, 4, 2) if fits >= s), 1)  # smaller than the target: full scale


def resize_crop(batch: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """uint8 (N, 3, H, W) of one size -> uint8 (N, 3, h, w) at the model's input, by the CPU
    path's steps (`images._decode`, `ImageSpec.to_uint8`): draft scale, box reduction, resize
    to the shortest edge or fixed size, centre crop.

    nvJPEG decodes at full scale; a box average over the draft scale stands in for libjpeg's
    reduced-scale IDCT. With it the pixels differ from the CPU path's by a third less (mean
    absolute difference 0.51 -> 0.34 at 224 px, 0.38 -> 0.25 at 64 px, measured on the
    benchmark's JPEGs with a full-scale libjpeg decode standing in for nvJPEG).
    """
    x = batch.float()
    h, w = x.shape[-2:]
    scale = draft_scale(w, h, spec.target)
    if scale > 1:
        x = torch.nn.functional.avg_pool2d(x, scale, ceil_mode=True)
    h, w = x.shape[-2:]
    factor = min(h, w) // (images.REDUCING_GAP * spec.target)
    if factor > 1:
        x = torch.nn.functional.avg_pool2d(x, factor, ceil_mode=True)
        h, w = x.shape[-2:]
    new_w, new_h = spec.resized(w, h)
    if (new_h, new_w) != (h, w):
        x = torch.nn.functional.interpolate(
            x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        )
    box = spec.crop_box(new_w, new_h)
    if box is not None:
        left, top, right, bottom = box
        x = x[..., top:bottom, left:right]
    return x.round_().clamp_(0, 255).to(torch.uint8)


class GpuJpeg:
    """Decodes the plain JPEGs of a batch on the device; the caller decodes the rest."""

    def __init__(
        self,
        spec: ImageSpec,
        limits: ImageLimits,
        device: torch.device,
        decode: DecodeFn,
        image_pixels: int = IMAGE_PIXELS,
        batch_pixels: int = BATCH_PIXELS,
    ):
        self.spec, self.limits, self.device = spec, limits, device
        self.image_pixels, self.batch_pixels = image_pixels, batch_pixels
        self._decode = decode

    @classmethod
    def load(
        cls, setting: str, spec: ImageSpec, limits: ImageLimits, device: torch.device
    ) -> GpuJpeg | None:
        """The decoder `setting` (auto/on/off) asks for on `device`, or None for the CPU path.
        `on` fails loudly where `auto` falls back: an operator who asked for it wants to know."""
        if setting == "off" or (setting == "auto" and device.type != "cuda"):
            return None
        try:
            decode = nvjpeg(device)
        except Exception as exc:
            if setting == "on":
                raise RuntimeError(f"CLIPMOD_GPU_JPEG=on, but nvJPEG is not usable: {exc}") from exc
            log.info("JPEGs decode on the CPU: torchvision's nvJPEG is not usable (%s)", exc)
            return None
        log.info("JPEGs decode on %s (nvJPEG)", device)
        return cls(spec, limits, device, decode)

    def decode(self, blobs: list[bytes]) -> list[torch.Tensor | None]:
        """Model-sized uint8 (3, h, w) pixels on the device per blob, None where the CPU
        decoders must take it. Waits for the device, so the caller's stage timings hold."""
        out: list[torch.Tensor | None] = [None] * len(blobs)
        picked = self._pick(blobs)
        if not picked:
            return out
        try:
            decoded = self._decode(
                [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in picked]
            )
            on_gpu = self._model_sized(picked, decoded)
        except Exception as exc:  # nvJPEG refuses the whole list for one bad image
            log.warning(
                "nvJPEG refused a batch of %d; decoding it on the CPU (%s)", len(picked), exc
            )
            return out
        for i, pixels in on_gpu.items():
            out[i] = pixels
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return out

    def _pick(self, blobs: list[bytes]) -> list[int]:
        """The blobs this call decodes: plain JPEGs within the pixel budgets."""
        picked, total = [], 0
        for i, data in enumerate(blobs):
            size = images.plain_jpeg(data, self.limits)
            if size is None:
                continue
            pixels = size[0] * size[1]
            if pixels <= self.image_pixels and total + pixels <= self.batch_pixels:
                picked.append(i)
                total += pixels
        return picked

    def _model_sized(
        self, picked: list[int], decoded: list[torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """Decoded images, resized and cropped a group of one size at a time, by blob index;
        one that is not 3-channel RGB is left out (the CPU decoders take it)."""
        by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
        for i, img in zip(picked, decoded, strict=True):
            if img.dim() == 3 and img.shape[0] == 3:
                by_shape.setdefault(tuple(img.shape), []).append((i, img))
        out: dict[int, torch.Tensor] = {}
        for group in by_shape.values():
            model_sized = resize_crop(torch.stack([img for _, img in group]), self.spec)
            out.update((i, pixels) for (i, _), pixels in zip(group, model_sized, strict=True))
        return out
