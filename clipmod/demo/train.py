"""Train the bundled demo CLIP on the generated world, with CLIP's own recipe.

Why a home-grown CLIP: the service must run, and its tests must mean something, on machines that
cannot reach a model hub. A small ``CLIPModel`` trained contrastively here is a drop-in stand-in
for real weights: same classes, same processor, same 77-token text window, loaded by
``AutoModel``/``AutoProcessor`` like any other checkpoint.

The run is a pure function of its seed: every image is a pure function of its index, the data
order comes from a seeded generator, and torch trains in one process with a fixed thread count
and deterministic algorithms (bit-identical on one machine; another CPU may differ in the last
bits, which moves the final numbers by well under a point). Rendering happens once, up front and
in parallel, into a pool that training walks in epochs: on two cores that is cheaper than
drawing a fresh image for every step.

Why these sizes: patch 16 on 64 px images gives 16 tokens, four times cheaper than patch 8, and
on this world the cheaper model sees enough more images in the budget to end up better.

    python -m clipmod.demo.train --out clipmod/assets/demo-clip
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL
import tokenizers
import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from clipmod.demo import world
from clipmod.demo.tokenizer import train_tokenizer

MODEL_ID = "clipmod-demo-clip"
"""The id policies name in their ``model:`` field when written for this model."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_POSITIONS = 77
"""Kept at CLIP's value so the service's 77-token prompt windowing applies unchanged."""

DEFAULTS: dict[str, Any] = {
    "steps": 2600,
    "batch_size": 256,
    "pool": 80_000,
    "lr": 1e-3,
    "weight_decay": 0.1,
    "warmup": 60,
    "width": 128,
    "vision_layers": 4,
    "text_layers": 3,
    "patch": 16,
    "threads": 2,
}


def model_config(
    vocab: CLIPTokenizer, width: int, vision_layers: int, text_layers: int, patch: int
) -> CLIPConfig:
    """A CLIP shaped like ViT-B/16 in every respect except size.

    The text window stays at 77 positions although captions are short: the service windows
    long prompts in 77-token pieces for any CLIP, and the demo must behave like one.
    """
    heads = max(1, width // 32)
    text = {
        "vocab_size": len(vocab),
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "max_position_embeddings": TEXT_POSITIONS,
        "bos_token_id": vocab.bos_token_id,
        "eos_token_id": vocab.eos_token_id,
        "pad_token_id": vocab.pad_token_id,
        "projection_dim": width,
    }
    vision = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": heads,
        "image_size": world.SIZE,
        "patch_size": patch,
        "projection_dim": width,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)


def image_processor() -> Any:
    """The CLIP image processor, sized for the world's images.

    At 64x64 input its resize and crop are no-ops, so training can normalise tensors directly
    and still see exactly what inference will (a test checks that the two agree).
    """
    from transformers import CLIPImageProcessor  # Pil fallback without torchvision

    size = world.SIZE
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW, as ``image_processor`` would produce."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _render_chunk(bounds: tuple[int, int]) -> tuple[bytes, list[str]]:
    samples = [world.render(i, "train") for i in range(*bounds)]
    return b"".join(s.image.tobytes() for s in samples), [s.caption for s in samples]


def _render_pool(n: int, progress: bool, workers: int) -> tuple[torch.Tensor, list[str]]:
    """Render train samples 0..n-1 in ``workers`` processes (each sample is a pure function of
    its index, so the pool is identical whatever the process count)."""
    chunk = 500
    bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    pixels = bytearray()
    captions: list[str] = []
    bar = tqdm(total=n, desc="render", disable=not progress, unit="img", mininterval=2)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for raw, caps in pool.imap(_render_chunk, bounds):  # imap keeps the order
            pixels += raw
            captions += caps
            bar.update(len(caps))
    bar.close()
    side = world.SIZE
    images = torch.frombuffer(pixels, dtype=torch.uint8).view(n, side, side, 3)
    return images, captions


def _tokenizer_corpus(captions: list[str]) -> list[str]:
    # The zero-shot and policy prompts are caption sentences already; adding them explicitly
    # guarantees each object name is one token even if a rare one were missed by the pool.
    extra = [f"a photo of {world.article(o)}" for o in world.OBJECTS]
    return captions + extra


def _lr(step: int, steps: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def train(
    out_dir: str | Path,
    seed: int = 0,
    steps: int = DEFAULTS["steps"],
    progress: bool = True,
    on_step: Callable[[int, CLIPModel, CLIPTokenizer], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train from scratch and ``save_pretrained`` model + processor + ``training.json``.

    ``overrides`` replace entries of ``DEFAULTS`` (batch_size, pool, lr, ...) and ``on_step``
    is called after every step (to watch a tuning run); neither is needed for the real run.
    """
    hp = {**DEFAULTS, **overrides, "steps": steps}
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    started = time.monotonic()
    torch.set_num_threads(hp["threads"])
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)

    images, captions = _render_pool(hp["pool"], progress, hp["threads"])
    tok = train_tokenizer(_tokenizer_corpus(captions))
    enc = tok(captions, padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if ids.shape[1] > TEXT_POSITIONS:
        raise ValueError("a caption is longer than the text window")

    model = CLIPModel(
        model_config(tok, hp["width"], hp["vision_layers"], hp["text_layers"], hp["patch"])
    )
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": hp["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=hp["lr"],
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    order = torch.Generator().manual_seed(seed)
    perm = torch.randperm(hp["pool"], generator=order)
    cursor = 0
    bs = hp["batch_size"]
    labels = torch.arange(bs)
    losses: list[float] = []
    bar = tqdm(range(steps), desc="train", disable=not progress, unit="step", mininterval=2)
    for step in bar:
        if cursor + bs > len(perm):
            perm, cursor = torch.randperm(hp["pool"], generator=order), 0
        idx = perm[cursor : cursor + bs]
        cursor += bs
        batch_mask = mask[idx]
        width = int(batch_mask.sum(1).max())
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, hp["warmup"], hp["lr"])
        out = model(
            input_ids=ids[idx, :width],
            attention_mask=batch_mask[:, :width],
            pixel_values=to_pixels(images[idx]),
        )
        logits = out.logits_per_image  # already multiplied by logit_scale.exp()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP caps the temperature at 100 to keep training stable
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, model, tok)
        if step % 10 == 0:
            bar.set_postfix(
                loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}",
                scale=f"{model.logit_scale.exp().item():.1f}",
            )

    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_path)
    CLIPProcessor(image_processor=image_processor(), tokenizer=tok).save_pretrained(out_path)
    tail = losses[-50:]
    info = {
        "model_id": MODEL_ID,
        "seed": seed,
        "steps": steps,
        "hyperparameters": hp,
        "samples_seen": steps * bs,
        "wall_time_s": round(time.monotonic() - started, 1),
        "final_loss": round(sum(tail) / len(tail), 4),
        "logit_scale": round(model.logit_scale.exp().item(), 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "pillow": PIL.__version__,
        },
        "held_out_pairs": [list(p) for p in world.HELD_OUT_PAIRS],
    }
    (out_path / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to save the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument(
        "--pool",
        type=int,
        default=DEFAULTS["pool"],
        help="distinct training images rendered up front",
    )
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    info = train(
        args.out,
        seed=args.seed,
        steps=args.steps,
        progress=not args.quiet,
        batch_size=args.batch_size,
        pool=args.pool,
        lr=args.lr,
    )
    print(json.dumps({k: info[k] for k in ("steps", "wall_time_s", "final_loss", "logit_scale")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
