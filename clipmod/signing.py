"""Stripe-style HMAC signatures, for webhooks we receive and callbacks we send.

`Clipmod-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">[,v1=…]`. Signing the
timestamp with the body lets a receiver refuse old messages (the replay window) without
trusting a clock in an unsigned header. Several `v1` entries let a sender sign with every
active secret while one is being rotated, so either side can switch secrets without downtime.
Pure functions: the replay memory lives in the database (`clipmod.webhooks`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from clipmod.errors import Unauthorized

SIGNATURE_HEADER = "Clipmod-Signature"
DELIVERY_HEADER = "Clipmod-Delivery"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix that marks secrets, not a secret
SCHEME = "v1"
# Bounds the work a hostile header can cause: a real sender has at most a few secrets.
MAX_HEADER_CHARS = 1024
MAX_SIGNATURES = 8


class SignatureError(Unauthorized):
    code = "signature_invalid"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def compute(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def header(signing_secrets: list[str], timestamp: int, body: bytes) -> str:
    parts = [f"t={timestamp}"]
    parts += [f"{SCHEME}={compute(s, timestamp, body)}" for s in signing_secrets]
    return ",".join(parts)


def parse(value: str) -> tuple[int, list[str]]:
    """The timestamp and the `v1` signatures; unknown schemes are ignored (Stripe's rule)."""
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureError(
            f"{SIGNATURE_HEADER}: longer than {MAX_HEADER_CHARS} characters",
            code="signature_malformed",
        )
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        name, sep, item = part.strip().partition("=")
        if not sep:
            continue
        if name == "t" and item.isdigit() and len(item) <= 12:
            timestamp = int(item)
        elif name == SCHEME:
            signatures.append(item.strip().lower())
    if timestamp is None or not signatures or len(signatures) > MAX_SIGNATURES:
        raise SignatureError(
            f"{SIGNATURE_HEADER}: expected `t=<unix seconds>,{SCHEME}=<hex hmac>`",
            code="signature_malformed",
        )
    return timestamp, signatures


def verify(
    value: str | None, body: bytes, signing_secrets: list[str], now: float, tolerance_s: float
) -> str:
    """Check a signature header; returns the signature that matched (for replay memory).

    The timestamp is checked first (cheap), then every signature against every secret with
    `hmac.compare_digest`, never stopping at the first mismatch, so the time taken says nothing
    about which part of a guess was right.
    """
    if not value:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", code="signature_missing")
    timestamp, signatures = parse(value)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            f"signature timestamp is outside the {tolerance_s:.0f} s window; sign each attempt "
            "anew",
            code="signature_expired",
        )
    matched: str | None = None
    for secret in signing_secrets:
        expected = compute(secret, timestamp, body)
        for candidate in signatures:
            if hmac.compare_digest(expected, candidate) and matched is None:
                matched = candidate
    if matched is None:
        raise SignatureError("no signature matches an active signing secret")
    return matched
