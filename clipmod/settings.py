"""Settings from `CLIPMOD_*` environment variables.

Every setting has a default that works on a laptop (SQLite, an embedded broker, the bundled
demo model), so `clipmod up` needs no configuration; production overrides the URLs. Settings
are read when `load()` is called, never at import time, so tests and tools can set the
environment first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{name}={raw!r} must be true or false")


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
    # 0: decode in `decode_threads` threads; N: in N processes. `load` picks from the cores.
    decode_processes: int = 0
    # JPEGs on the GPU (nvJPEG via torchvision, `workers.gpujpeg`): auto = where it is there.
    gpu_jpeg: str = "auto"
    policy_refresh_s: float = 2.0
    lease_s: float = 15.0
    stuck_after_s: float = 10.0
    sweep_every_s: float = 5.0
    # Seconds one task call keeps claiming before it acknowledges its messages (workers/tasks).
    score_budget_s: float = 2.0
    broker_poll_interval_s: float = 0.02
    log_level: str = "info"
    # The review dashboard (api/dashboard). An empty secret key means "generate one into the
    # data dir" (clipmod.review.secret); it never appears in a repr or a log line.
    secret_key: str = field(default="", repr=False)
    secure_cookies: bool = False
    session_hours: float = 12.0
    blur_at: float = 0.5
    claim_lease_s: float = 300.0
    login_lock_after: int = 5
    login_lock_s: float = 900.0
    bulk_confirm_over: int = 10
    # Platform integration (README "Platform integration"). Empty `encryption_key`: a key file
    # generated in the data dir on first use (`clipmod.secretbox`).
    encryption_key: str = field(default="", repr=False)
    webhook_tolerance_s: float = 300.0
    fetch_allow: str = ""
    fetch_connect_timeout_s: float = 5.0
    fetch_read_timeout_s: float = 10.0
    fetch_total_timeout_s: float = 20.0
    delivery_timeout_s: float = 10.0
    delivery_backoff_s: float = 30.0
    delivery_backoff_max_s: float = 3600.0
    delivery_retry_for_s: float = 86400.0
    delivery_poll_s: float = 1.0
    delivery_concurrency: int = 4
    retention_days: int = 0
    retention_every_s: float = 3600.0
    # Delivery workers sweep the blob store this often (0: never; `clipmod.blobsweep`), removing
    # what no row names once it is older than the grace period.
    blob_sweep_every_s: float = 86400.0
    blob_sweep_grace_s: float = 3600.0
    rate_limit: str = "600/minute"
    rate_limit_storage_url: str = ""
    log_format: str = "text"
    # The API writes its INFO lines (the access log) in batches at most this far apart; 0: each
    # line at once (`clipmod.logs.BatchingHandler`).
    log_flush_s: float = 1.0
    health_host: str = "127.0.0.1"
    key_cache_s: float = 5.0

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

    @property
    def limiter_storage_url(self) -> str:
        """Where rate-limit counters live: shared by every API replica, so in Redis when the
        broker is Redis; the embedded default runs one API process, so memory is enough."""
        if self.rate_limit_storage_url:
            return self.rate_limit_storage_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return "memory://"


# One place for every default: the dataclass. `load` reads them from here.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}


def default_decode_processes(cores: int | None = None) -> int:
    """Decode is GIL-bound in threads (4 threads ≈ 3x one); processes scale with cores, but
    on 2 cores a pool would only fight the model for them, so threads stay there."""
    cores = cores or os.cpu_count() or 1
    return 0 if cores <= 2 else min(cores - 1, 16)


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
        decode_processes=_int(env, "DECODE_PROCESSES", default_decode_processes(), minimum=0),
        gpu_jpeg=_choice(env, "GPU_JPEG", d["gpu_jpeg"], ("auto", "on", "off")),
        policy_refresh_s=_float(env, "POLICY_REFRESH_S", d["policy_refresh_s"]),
        lease_s=_float(env, "LEASE_S", d["lease_s"]),
        stuck_after_s=_float(env, "STUCK_AFTER_S", d["stuck_after_s"]),
        sweep_every_s=_float(env, "SWEEP_EVERY_S", d["sweep_every_s"]),
        score_budget_s=_float(env, "SCORE_BUDGET_S", d["score_budget_s"]),
        broker_poll_interval_s=_float(env, "BROKER_POLL_INTERVAL_S", d["broker_poll_interval_s"]),
        log_level=(_get(env, "LOG_LEVEL") or d["log_level"]).lower(),
        secret_key=_get(env, "SECRET_KEY") or d["secret_key"],
        secure_cookies=_bool(env, "SECURE_COOKIES", d["secure_cookies"]),
        session_hours=_float(env, "SESSION_HOURS", d["session_hours"]),
        blur_at=_float(env, "BLUR_AT", d["blur_at"]),
        claim_lease_s=_float(env, "CLAIM_LEASE_S", d["claim_lease_s"]),
        login_lock_after=_int(env, "LOGIN_LOCK_AFTER", d["login_lock_after"]),
        login_lock_s=_float(env, "LOGIN_LOCK_S", d["login_lock_s"]),
        bulk_confirm_over=_int(env, "BULK_CONFIRM_OVER", d["bulk_confirm_over"], minimum=0),
        encryption_key=_get(env, "ENCRYPTION_KEY") or d["encryption_key"],
        webhook_tolerance_s=_float(env, "WEBHOOK_TOLERANCE_S", d["webhook_tolerance_s"]),
        fetch_allow=_get(env, "FETCH_ALLOW") or d["fetch_allow"],
        fetch_connect_timeout_s=_float(
            env, "FETCH_CONNECT_TIMEOUT_S", d["fetch_connect_timeout_s"]
        ),
        fetch_read_timeout_s=_float(env, "FETCH_READ_TIMEOUT_S", d["fetch_read_timeout_s"]),
        fetch_total_timeout_s=_float(env, "FETCH_TOTAL_TIMEOUT_S", d["fetch_total_timeout_s"]),
        delivery_timeout_s=_float(env, "DELIVERY_TIMEOUT_S", d["delivery_timeout_s"]),
        delivery_backoff_s=_float(env, "DELIVERY_BACKOFF_S", d["delivery_backoff_s"]),
        delivery_backoff_max_s=_float(env, "DELIVERY_BACKOFF_MAX_S", d["delivery_backoff_max_s"]),
        delivery_retry_for_s=_float(env, "DELIVERY_RETRY_FOR_S", d["delivery_retry_for_s"]),
        delivery_poll_s=_float(env, "DELIVERY_POLL_S", d["delivery_poll_s"]),
        delivery_concurrency=_int(env, "DELIVERY_CONCURRENCY", d["delivery_concurrency"]),
        retention_days=_int(env, "RETENTION_DAYS", d["retention_days"], minimum=0),
        retention_every_s=_float(env, "RETENTION_EVERY_S", d["retention_every_s"]),
        blob_sweep_every_s=_float(env, "BLOB_SWEEP_EVERY_S", d["blob_sweep_every_s"], minimum=0.0),
        blob_sweep_grace_s=_float(env, "BLOB_SWEEP_GRACE_S", d["blob_sweep_grace_s"], minimum=60.0),
        rate_limit=_get(env, "RATE_LIMIT") or d["rate_limit"],
        rate_limit_storage_url=_get(env, "RATE_LIMIT_STORAGE_URL") or d["rate_limit_storage_url"],
        log_format=_choice(env, "LOG_FORMAT", d["log_format"], ("text", "json")),
        log_flush_s=_float(env, "LOG_FLUSH_S", d["log_flush_s"], minimum=0.0),
        health_host=_get(env, "HEALTH_HOST") or d["health_host"],
        key_cache_s=_float(env, "KEY_CACHE_S", d["key_cache_s"]),
    )
