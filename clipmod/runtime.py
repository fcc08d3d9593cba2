"""The CLIP model in a process: loading, preprocessing and the forward passes.

Workers score with it; the policy tools (lint, backtest) and the evaluation embed prompts with
it. It lives in the domain package so the API never imports worker internals.

A bundled folder and a hub id (`openai/clip-vit-base-patch32`) take the same path through
`AutoModel`/`AutoProcessor.from_pretrained`. Image preprocessing reimplements the processor's
resize → centre-crop → normalise in PIL + numpy from the processor's own config: it matches
transformers' output (tests/test_runtime.py checks this) and, fed by JPEG draft decoding, keeps
preprocessing a small fraction of a forward pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipmod.bundled import declared_model_id
from clipmod.text import body_chunks

log = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def model_revision(name: str, model: Any) -> str:
    """Identify the exact weights: the hub commit if known, else a hash of the local files."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return str(commit)[:12]
    folder = Path(name)
    digest = hashlib.sha256()
    for fname in sorted(os.listdir(folder)):
        if fname.endswith((".safetensors", ".bin", "config.json")):
            digest.update(fname.encode())
            digest.update((folder / fname).read_bytes())
    return digest.hexdigest()[:12]


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

    def to_array(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image → normalised float32 CHW array, as the model expects."""
        w, h = img.size
        if self.shortest_edge:
            s = self.shortest_edge
            new_w, new_h = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        else:
            assert self.resize_hw is not None
            new_h, new_w = self.resize_hw
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), resample=Image.Resampling(self.resample))
        if self.crop_hw:
            ch, cw = self.crop_hw
            top, left = int((new_h - ch) / 2), int((new_w - cw) / 2)
            img = img.crop((left, top, left + cw, top + ch))
        arr = np.asarray(img, dtype=np.float32) * self.rescale
        arr = (arr - self.mean) / self.std
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ClipRuntime:
    """One loaded CLIP model; create it once per process (it is not cheap)."""

    def __init__(self, name: str, model: Any, processor: Any, device: torch.device):
        self.name = name
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.image_spec = ImageSpec.from_processor(processor.image_processor)
        self.revision = model_revision(name, model)
        self.logit_scale = float(model.logit_scale.exp().item())
        self.dim = int(model.config.projection_dim)

    @classmethod
    def load(cls, name: str, device: str = "auto") -> ClipRuntime:
        from transformers import AutoModel, AutoProcessor

        dev = pick_device(device)
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
        log.info("loading model %s on %s (%s)", name, dev, dtype)
        model = AutoModel.from_pretrained(name, dtype=dtype).to(dev).eval()
        processor = AutoProcessor.from_pretrained(name)
        return cls(name, model, processor, dev)

    @property
    def display_name(self) -> str:
        """The model's name for verdicts and policies' `model:` field.

        A hub id as given; a folder by the `model_id` its `training.json` declares (the bundled
        model does), else by its last path component.
        """
        path = Path(self.name)
        if not path.is_dir():
            return self.name
        return declared_model_id(path) or path.name

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return self.image_spec.to_array(img)

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) preprocessed pixels → (n, d) L2-normalised float32 embeddings."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = torch.from_numpy(pixels).to(self.device, self.dtype)
        out = self.model.get_image_features(pixel_values=batch)
        emb = getattr(out, "pooler_output", out)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        return emb.cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(i) for i in images]))

    def text_windows(self, text: str) -> list[list[int]]:
        """Token ids of `text` cut into 77-token windows, each with its own start/end tokens."""
        ids = self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        return [[bos, *chunk, eos] for chunk in body_chunks(ids)]

    @torch.inference_mode()
    def encode_token_windows(self, windows: Sequence[Sequence[int]]) -> np.ndarray:
        if not windows:
            return np.zeros((0, self.dim), dtype=np.float32)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else self.tokenizer.eos_token_id
        length = max(len(w) for w in windows)
        ids = torch.full((len(windows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(windows), length), dtype=torch.long)
        for i, w in enumerate(windows):
            ids[i, : len(w)] = torch.tensor(w)
            mask[i, : len(w)] = 1
        out = self.model.get_text_features(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
        )
        emb = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One embedding per text (first window): used for prompts, which are short."""
        return self.encode_token_windows([self.text_windows(t)[0] for t in texts])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.display_name,
            "revision": self.revision,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
