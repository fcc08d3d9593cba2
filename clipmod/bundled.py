"""What ships inside the installed package: the demo model, the policies, the migrations.

Found through `importlib.resources`, never relative to a source checkout, so a plain
`pip install .` (not only an editable one) runs `clipmod db upgrade` and `clipmod up`.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path


def _folder(package: str, *parts: str) -> Path:
    # Wheels install unzipped, so the resource is a real directory on disk.
    return Path(str(files(package).joinpath(*parts)))


BUNDLED_MODEL = _folder("clipmod", "assets", "demo-clip")
POLICIES = _folder("policies")
BUNDLED_POLICY = POLICIES / "demo.yaml"
MIGRATIONS = _folder("migrations")


def declared_model_id(folder: str | Path) -> str | None:
    """The `model_id` a model folder's `training.json` declares (`clipmod.demo.train` writes
    it), or None: lint, verdicts and the runtime all name the bundled model by it."""
    try:
        info = json.loads((Path(folder) / "training.json").read_text(encoding="utf-8"))
        return str(info["model_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
