"""The generated world: deterministic, held-out pairs really held out, tokenizer faithful."""

from __future__ import annotations

import re

import pytest

from clipmod.demo import world
from clipmod.demo.tokenizer import train_tokenizer


def _pixels(s: world.Sample) -> bytes:
    return s.image.tobytes()


@pytest.mark.parametrize("split", world.SPLITS)
def test_same_seed_and_split_render_identically(split: str) -> None:
    for seed in (0, 1, 17, 123_456):
        a, b = world.render(seed, split), world.render(seed, split)
        assert _pixels(a) == _pixels(b)
        assert (a.caption, a.objects, a.colours, a.background, a.word) == (
            b.caption,
            b.objects,
            b.colours,
            b.background,
            b.word,
        )


def test_splits_and_seeds_differ() -> None:
    images = {_pixels(world.render(seed, split)) for seed in range(20) for split in world.SPLITS}
    assert len(images) == 60


def test_images_are_small_rgb() -> None:
    s = world.render(3, "train")
    assert s.image.mode == "RGB"
    assert s.image.size == (world.SIZE, world.SIZE)


def test_vocabulary_is_rich_enough() -> None:
    assert len(world.OBJECTS) >= 12
    assert len(world.COLOURS) >= 8
    assert len(set(world.OBJECTS)) == len(world.OBJECTS)
    assert set(world.OBJECTS) > world.VIOLATION_OBJECTS
    assert set(world.BENIGN).isdisjoint(world.VIOLATION_OBJECTS)


def test_every_object_is_trained_in_most_colours_and_held_out_in_some() -> None:
    for obj in world.OBJECTS:
        held = {c for o, c in world.HELD_OUT_PAIRS if o == obj}
        assert 1 <= len(held) <= len(world.COLOURS) // 2
    assert {c for _, c in world.HELD_OUT_PAIRS} == set(world.COLOURS)


def test_held_out_pairs_never_appear_in_train_or_val() -> None:
    held = set(world.HELD_OUT_PAIRS)
    phrases = [f"{c} {o}" for o, c in held]
    seen_pairs: set[tuple[str, str]] = set()
    for split in ("train", "val"):
        for seed in range(1500):
            s = world.render(seed, split)
            pairs = set(zip(s.objects, s.colours, strict=True))
            assert not pairs & held, (split, seed, pairs)
            assert not any(p in s.caption for p in phrases), s.caption
            seen_pairs |= pairs
    # Training still covers the rest of the grid, so held-out pairs are the only gap.
    assert len(seen_pairs) == len(world.OBJECTS) * len(world.COLOURS) - len(held)


def test_heldout_split_renders_only_held_out_pairs() -> None:
    held = set(world.HELD_OUT_PAIRS)
    seen = set()
    for seed in range(600):
        s = world.render(seed, "heldout")
        pairs = set(zip(s.objects, s.colours, strict=True))
        assert pairs <= held
        seen |= pairs
    assert seen == held


def test_world_varies_backgrounds_counts_words_and_templates() -> None:
    samples = [world.render(seed, "train") for seed in range(400)]
    assert {s.background for s in samples} == set(world.BACKGROUNDS)
    assert {len(s.objects) for s in samples} == {1, 2}
    assert 0.1 < sum(s.word is not None for s in samples) / len(samples) < 0.5
    shapes = {
        re.sub(r"\b(" + "|".join([*world.OBJECTS, *world.COLOURS]) + r")\b", "X", s.caption)
        for s in samples
        if s.word is None
    }
    assert len(shapes) >= 10


def test_captions_name_what_is_drawn() -> None:
    partial = 0
    for seed in range(400):
        s = world.render(seed, "val")
        named = {w for w in re.findall(r"[a-z]+", s.caption) if w in world.OBJECTS}
        assert named, s.caption
        assert named <= set(s.objects), s.caption  # never names what is not there
        partial += named != set(s.objects)
        assert len(s.objects) == len(s.colours)
        assert all(c in world.COLOURS for c in s.colours)
        if len(s.objects) == 2:
            assert s.objects[0] != s.objects[1]
    # Some two-object captions name one object (world.PAIR_NAMES_ONE), most name both.
    expected = 400 * world.PAIRS * world.PAIR_NAMES_ONE
    assert 0.5 * expected < partial < 1.5 * expected


def test_unknown_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        world.render(0, "test")


def test_tokenizer_round_trips_captions_with_clip_layout() -> None:
    captions = [world.render(seed, "train").caption for seed in range(800)]
    tok = train_tokenizer(captions)
    vocab = tok.get_vocab()
    assert tok.bos_token == "<|startoftext|>"
    assert tok.eos_token == "<|endoftext|>"
    assert (tok.bos_token_id, tok.eos_token_id) == (len(vocab) - 2, len(vocab) - 1)
    assert tok.pad_token_id == tok.eos_token_id
    for word in [*world.OBJECTS, *world.COLOURS, "photo"]:
        assert f"{word}</w>" in vocab, word
    for caption in captions[:200]:
        ids = tok(caption)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert ids[-1] == tok.eos_token_id
        # CLIP's decoder puts a space after every word-final token, quotes included.
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert decoded.replace(" ", "") == caption.replace(" ", "").lower()
    # Bytes the captions never used still encode (CLIP's full byte alphabet is present).
    ids = tok("Ünïcode ✓ 42!")["input_ids"]
    assert tok.unk_token_id not in ids[1:-1]


def test_tokenizer_training_is_deterministic() -> None:
    captions = [world.render(seed, "train").caption for seed in range(300)]
    assert train_tokenizer(captions).get_vocab() == train_tokenizer(captions).get_vocab()


def test_black_and_white_images_are_grey_and_never_held_out() -> None:
    mono = [s for s in (world.render(seed, "train") for seed in range(300)) if s.monochrome]
    assert mono
    for s in mono:
        r, g, b = s.image.split()
        assert r.tobytes() == g.tobytes() == b.tobytes()
        words = s.caption.replace("black and white", "").split()
        assert not any(c in words for c in world.COLOURS), s.caption
    assert not any(world.render(seed, "heldout").monochrome for seed in range(300))
