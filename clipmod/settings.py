"""Settings from `CLIPMOD_*` environment variables.

Every setting has a default that works on a laptop (SQLite, an embedded broker, the bundled
demo model), so `clipmod up` needs no configuration; production overrides the URLs. Settings
are read when `load()` is called, never at import time, so tests and tools can set the
environment first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from clipmod.bundled import BUNDLED_MODEL, BUNDLED_POLICY

PREFIX = "CLIPMOD_"
__all__ = ["BUNDLED_MODEL", "BUNDLED_POLICY", "Settings", "SettingsError", "load"]


class SettingsError(ValueError):
    """A `CLIPMOD_*` variable holds a value we cannot use; the message names it."""


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    return value if value not in (None, "") else None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{PREFIX}{name}={value} must be >= {minimum}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, minimum: float | None = None
) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r} is not a number") from None
    if minimum is not None and not value >= minimum:  # `not >=` also refuses NaN
        raise SettingsError(f"{PREFIX}{name}={value} must be >= {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (_get(env, name) or default).lower()
    if raw not in choices and not (name == "DEVICE" and raw.startswith("cuda:")):
        raise SettingsError(f"{PREFIX}{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class Settings:
    """One immutable view of the configuration; see README "Settings" for each field."""

    data_dir: Path
    database_url: str
    broker_url: str
    model: str
    policy: Path
    device: str = "auto"
    batch_size: int = 32
    batch_wait_ms: int = 30
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 12_000
    max_aspect_ratio: float = 20.0
    max_text_chars: int = 20_000
    decode_threads: int = 2
    policy_refresh_s: float = 2.0
    stuck_after_s: float = 600.0
    sweep_every_s: float = 60.0
    broker_poll_interval_s: float = 0.02
    log_level: str = "info"

    def to_env(self) -> dict[str, str]:
        """The `CLIPMOD_*` variables that `load()` turns back into these exact settings.

        Child processes (a worker started by `clipmod up`, tests, benchmarks) get their
        configuration this way, so a parent and its children can never disagree.
        """
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def traffic_dir(self) -> Path:
        """The traffic store (`clipmod.traffic`): beside the blobs, on the same shared volume."""
        return self.data_dir / "traffic"

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")


# One place for every default: the dataclass. `load` reads them from here.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `env` (default: `os.environ`); raises `SettingsError` on bad values."""
    env = os.environ if env is None else env
    data_dir = Path(_get(env, "DATA_DIR") or "./var").resolve()
    d = _DEFAULTS
    return Settings(
        data_dir=data_dir,
        database_url=_get(env, "DATABASE_URL") or f"sqlite:///{data_dir / 'clipmod.db'}",
        broker_url=_get(env, "BROKER_URL") or f"sqla+sqlite:///{data_dir / 'broker.db'}",
        model=_get(env, "MODEL") or str(BUNDLED_MODEL),
        policy=Path(_get(env, "POLICY") or BUNDLED_POLICY),
        device=_choice(env, "DEVICE", d["device"], ("auto", "cpu", "cuda", "mps")),
        batch_size=_int(env, "BATCH_SIZE", d["batch_size"]),
        batch_wait_ms=_int(env, "BATCH_WAIT_MS", d["batch_wait_ms"], minimum=0),
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", d["max_upload_bytes"]),
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", d["max_image_pixels"]),
        max_image_side=_int(env, "MAX_IMAGE_SIDE", d["max_image_side"]),
        max_aspect_ratio=_float(env, "MAX_ASPECT_RATIO", d["max_aspect_ratio"], minimum=1.0),
        max_text_chars=_int(env, "MAX_TEXT_CHARS", d["max_text_chars"]),
        decode_threads=_int(env, "DECODE_THREADS", d["decode_threads"]),
        policy_refresh_s=_float(env, "POLICY_REFRESH_S", d["policy_refresh_s"]),
        stuck_after_s=_float(env, "STUCK_AFTER_S", d["stuck_after_s"]),
        sweep_every_s=_float(env, "SWEEP_EVERY_S", d["sweep_every_s"]),
        broker_poll_interval_s=_float(env, "BROKER_POLL_INTERVAL_S", d["broker_poll_interval_s"]),
        log_level=(_get(env, "LOG_LEVEL") or d["log_level"]).lower(),
    )
