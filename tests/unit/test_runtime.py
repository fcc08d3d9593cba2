"""The model runtime: our fast preprocessing must equal transformers' own processor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipmod.runtime import ClipRuntime
from clipmod.text import CONTEXT_TOKENS


@pytest.mark.parametrize("size", [(64, 64), (150, 100), (90, 200), (640, 480), (33, 500)])
def test_preprocessing_matches_the_processor(runtime: ClipRuntime, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    ours = runtime.image_spec.to_array(img)
    theirs = runtime.processor.image_processor(images=img, return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 64), (640, 480), (33, 500)])
def test_uint8_pixels_normalised_on_the_device_score_like_the_float32_path(
    runtime: ClipRuntime, size: tuple[int, int]
) -> None:
    """The worker hands the model uint8 and normalises there; the embeddings (hence every
    score) must be what the processor's float32 pixels give."""
    rng = np.random.default_rng(size[0])
    imgs = [
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(3)
    ]
    raw = np.stack([runtime.preprocess(i) for i in imgs])
    assert raw.dtype == np.uint8
    assert raw.shape[1] == 3
    processor = runtime.processor.image_processor
    theirs = np.stack([processor(images=i, return_tensors="np")["pixel_values"][0] for i in imgs])
    np.testing.assert_allclose(
        runtime.encode_pixels(raw), runtime.encode_pixels(theirs.astype(np.float32)), atol=1e-5
    )


def test_image_embeddings_are_unit_vectors(runtime: ClipRuntime) -> None:
    imgs = [Image.new("RGB", (80, 60), c) for c in ((255, 0, 0), (0, 0, 255))]
    emb = runtime.encode_images(imgs)
    assert emb.shape == (2, runtime.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_long_text_is_cut_into_77_token_windows(runtime: ClipRuntime) -> None:
    windows = runtime.text_windows("a photo of a red knife " * 60)
    assert len(windows) > 1
    assert all(2 <= len(w) <= CONTEXT_TOKENS for w in windows)
    assert all(w[0] == runtime.tokenizer.bos_token_id for w in windows)
    assert all(w[-1] == runtime.tokenizer.eos_token_id for w in windows)
    emb = runtime.encode_token_windows(windows)
    assert emb.shape == (len(windows), runtime.dim)


def test_window_embedding_equals_the_tokenizer_path(runtime: ClipRuntime) -> None:
    """Our own padding/masking must give what the processor's tokenisation gives."""
    import torch

    text = "a photo of a red knife"
    ours = runtime.encode_texts([text])[0]
    batch = runtime.tokenizer(
        [text], padding="max_length", max_length=CONTEXT_TOKENS, return_tensors="pt"
    )
    with torch.inference_mode():
        out = runtime.model.get_text_features(**batch)
    theirs = torch.nn.functional.normalize(out.pooler_output, dim=-1)[0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_revision_identifies_the_weights(runtime: ClipRuntime) -> None:
    again = ClipRuntime.load(runtime.name, "cpu")
    assert again.revision == runtime.revision
    assert len(runtime.revision) == 12
