"""Facts the README states about the bundled model, checked so that they cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

from clipmod.runtime import ClipRuntime

README = Path(__file__).resolve().parents[2] / "README.md"


def test_example_verdict_names_the_bundled_model_revision(runtime: ClipRuntime) -> None:
    revisions = set(re.findall(r'"revision": "([0-9a-f]{12})"', README.read_text()))
    assert revisions == {runtime.revision}
