"""The committed demo model: loads offline like any checkpoint, and does what its card says.

The quality checks run on the very set the model card and README report (1000 held-out images,
seed 0; evaluation is deterministic), and their floors ARE the stated targets: a claim in the
docs that stops being true fails here, not in a user's hands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from clipmod.demo import world
from clipmod.demo.evaluate import DEFAULT_MODEL, DEFAULT_POLICY, evaluate
from clipmod.demo.train import MODEL_ID, TEXT_POSITIONS, to_pixels

# The targets the model card and README state; measured 0.961 and 0.90-0.96 on this set.
ACCURACY_FLOOR = 0.9
PRF_FLOOR = 0.9
N = 1000


@pytest.fixture(scope="module")
def result() -> dict:
    return evaluate(DEFAULT_MODEL, DEFAULT_POLICY, n=N, seed=0)


def test_folder_is_complete_and_small() -> None:
    names = {p.name for p in DEFAULT_MODEL.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "training.json",
        "MODEL_CARD.md",
    } <= names
    size = sum(p.stat().st_size for p in DEFAULT_MODEL.iterdir())
    assert size < 25 * 1024 * 1024
    info = json.loads((DEFAULT_MODEL / "training.json").read_text())
    assert {"seed", "steps", "wall_time_s", "final_loss", "versions"} <= set(info)


def test_loads_offline_with_auto_classes() -> None:
    script = f"""
import torch
from transformers import AutoModel, AutoProcessor
from PIL import Image
model = AutoModel.from_pretrained({str(DEFAULT_MODEL)!r}).eval()
proc = AutoProcessor.from_pretrained({str(DEFAULT_MODEL)!r})
inputs = proc(text=["a photo of a knife"], images=[Image.new("RGB", (300, 200))],
              return_tensors="pt", padding=True)
with torch.inference_mode():
    out = model(**inputs)
print(type(model).__name__, tuple(out.logits_per_image.shape))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["CLIPModel", "(1,", "1)"]


def test_text_window_and_image_size_match_the_service() -> None:
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(DEFAULT_MODEL)
    assert config.text_config.max_position_embeddings == TEXT_POSITIONS == 77
    assert config.vision_config.image_size == world.SIZE
    proc = AutoProcessor.from_pretrained(DEFAULT_MODEL)
    tok = proc.tokenizer
    assert config.text_config.vocab_size == len(tok)
    assert (config.text_config.bos_token_id, config.text_config.eos_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
    )


def test_processor_sees_what_training_saw() -> None:
    """Training normalises tensors itself; inference goes through the saved processor."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(DEFAULT_MODEL)
    images = [world.render(seed, "val").image for seed in range(4)]
    expected = to_pixels(
        torch.stack(
            [
                torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(
                    world.SIZE, world.SIZE, 3
                )
                for im in images
            ]
        )
    )
    got = proc(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(got, expected, atol=1e-5)


def test_committed_tokenizer_keeps_world_words_whole() -> None:
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(DEFAULT_MODEL).tokenizer
    for word in [*world.OBJECTS, *world.COLOURS]:
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    caption = world.render(0, "heldout").caption
    decoded = tok.decode(tok(caption)["input_ids"], skip_special_tokens=True)
    assert decoded.replace(" ", "") == caption.replace(" ", "")


def test_demo_policy_is_written_for_this_model() -> None:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    assert doc["model"] == MODEL_ID
    assert [c["id"] for c in doc["categories"]] == list(world.VIOLATIONS)
    for c in doc["categories"]:
        assert 0 < c["review_at"] <= c["block_at"] <= 1


def test_zero_shot_accuracy_on_held_out_pairs(result: dict) -> None:
    assert result["zero_shot_accuracy"] >= ACCURACY_FLOOR


@pytest.mark.parametrize("category", list(world.VIOLATIONS))
def test_policy_precision_and_recall_on_held_out_pairs(result: dict, category: str) -> None:
    metrics = result["categories"][category]
    assert metrics["precision"] >= PRF_FLOOR, metrics
    assert metrics["recall"] >= PRF_FLOOR, metrics
