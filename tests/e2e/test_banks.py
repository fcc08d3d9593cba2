"""Banks end to end: the real API, the embedded broker and a real worker process.

A sample image goes into a `block` bank through `/v1/banks`; a cropped, recoloured, JPEG
re-encoded copy uploaded through `/v1/items` comes back blocked by that bank, named in the
verdict, although the prompts allow it. The same holds the other way round for an `allow` bank:
a copy of an image the prompts block is allowed once the original is in the bank.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageOps

from api import create_app
from api.policies import RUNTIME_KEY
from clipmod import keys
from clipmod.db import transaction
from clipmod.runtime import ClipRuntime
from tests.e2e.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def altered(name: str) -> bytes:
    """Cropped to ~87%, hue turned by ~28°, contrast stretched, saved as a JPEG."""
    img = Image.open(SAMPLES / name).convert("RGB")
    w, h = img.size
    img = img.crop((int(w * 0.08), int(h * 0.06), int(w * 0.95), int(h * 0.93)))
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + 20) % 256
    img = ImageOps.autocontrast(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=75)
    return out.getvalue()


def submit(client: FlaskClient, key: str, data: bytes, name: str) -> str:
    reply = client.post(
        "/v1/items",
        data={"file": (io.BytesIO(data), name)},
        headers={"Authorization": f"Bearer {key}"},
        content_type="multipart/form-data",
    )
    assert reply.status_code == 202, reply.get_json()
    return str(reply.get_json()["id"])


def verdict(client: FlaskClient, key: str, item_id: str, stack: Stack) -> dict[str, Any]:
    wait_for(stack.sessions, [item_id])
    body = client.get(f"/v1/items/{item_id}", headers={"Authorization": f"Bearer {key}"})
    assert body.get_json()["status"] == "scored", body.get_json()
    return dict(body.get_json()["verdict"])


def test_banks_block_altered_copies_and_allow_known_good(
    embedded_stack: Stack, runtime: ClipRuntime
) -> None:
    stack = embedded_stack
    with transaction(stack.sessions) as session:
        admin = {"Authorization": f"Bearer {keys.create_key(session, 'ops', admin=True)}"}
    app = create_app(stack.settings)
    app.extensions[RUNTIME_KEY] = runtime  # what its first bank upload would load
    client = app.test_client()
    try:
        for name, kind in (("known-bad", "block"), ("logos", "allow")):
            created = client.post("/v1/banks", json={"name": name, "kind": kind}, headers=admin)
            assert created.status_code == 201, created.get_json()
        added = client.post(
            "/v1/banks/known-bad/entries",
            data={"file": (io.BytesIO((SAMPLES / "blue-cup.png").read_bytes()), "blue-cup.png")},
            headers=admin,
            content_type="multipart/form-data",
        )
        assert added.status_code == 201, added.get_json()
        demo = stack.settings.policy.read_text(encoding="utf-8")
        banks = "banks:\n  - {name: known-bad, threshold: 0.8}\n  - {name: logos, threshold: 0.8}\n"
        published = client.post("/v1/policies", json={"yaml": demo + banks}, headers=admin)
        assert published.status_code == 201, published.get_json()
        time.sleep(1.5)  # the worker re-checks activations and banks every 0.5 s here

        cup = verdict(
            client, stack.key, submit(client, stack.key, altered("blue-cup.png"), "c.jpg"), stack
        )
        assert cup["action"] == "block"
        assert all(c["action"] == "allow" for c in cup["categories"])  # the prompts allow it
        assert cup["bank_match"]["bank"] == "known-bad"
        assert cup["bank_match"]["label"] == "known-bad@1" and cup["bank_match"]["kind"] == "block"
        assert 0.8 <= cup["bank_match"]["similarity"] < 0.99  # a near, not an exact, copy
        flower = submit(client, stack.key, altered("yellow-flower.png"), "f.jpg")
        assert verdict(client, stack.key, flower, stack)["bank_match"] is None

        knife = altered("red-knife.png")
        before = verdict(client, stack.key, submit(client, stack.key, knife, "k1.jpg"), stack)
        assert before["action"] == "block" and before["bank_match"] is None
        added = client.post(
            "/v1/banks/logos/entries",
            data={"file": (io.BytesIO((SAMPLES / "red-knife.png").read_bytes()), "red-knife.png")},
            headers=admin,
            content_type="multipart/form-data",
        )
        assert added.status_code == 201, added.get_json()
        time.sleep(1.5)
        after = verdict(client, stack.key, submit(client, stack.key, knife, "k2.jpg"), stack)
        assert after["action"] == "allow"
        assert after["bank_match"]["label"] == "logos@1" and after["bank_match"]["kind"] == "allow"
        weapons = next(c for c in after["categories"] if c["id"] == "weapons")
        assert weapons["score"] >= weapons["block_at"] and weapons["action"] == "allow"
    finally:
        app.extensions["clipmod"].engine.dispose()
