"""The signature scheme and the encryption of secrets at rest (pure functions and files)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clipmod import secretbox, signing
from clipmod.errors import ClipmodError
from tests.conftest import make_settings

BODY = b'{"text": "hello"}'


def code_of(header: str | None, secrets: list[str], now: float | None = None) -> str:
    with pytest.raises(signing.SignatureError) as caught:
        signing.verify(header, BODY, secrets, now or time.time(), 300)
    assert caught.value.status == 401
    return caught.value.code


def test_a_signature_verifies_and_names_what_matched() -> None:
    secret = signing.new_secret()
    header = signing.header([secret], int(time.time()), BODY)
    assert header.startswith("t=") and ",v1=" in header
    assert signing.verify(header, BODY, [secret], time.time(), 300) == header.split("v1=")[1]


def test_either_of_two_active_secrets_verifies_and_a_sender_may_sign_with_both() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    now = int(time.time())
    for signed_with in ([old], [new], [new, old]):
        signing.verify(signing.header(signed_with, now, BODY), BODY, [new, old], now, 300)


def test_what_is_refused_and_with_which_code() -> None:
    secret, now = signing.new_secret(), int(time.time())
    good = signing.header([secret], now, BODY)
    assert code_of(None, [secret]) == "signature_missing"
    assert code_of("", [secret]) == "signature_missing"
    assert code_of("v1=abc", [secret]) == "signature_malformed"
    assert code_of(f"t={now}", [secret]) == "signature_malformed"
    assert code_of("t=" + "1" * 2000, [secret]) == "signature_malformed"
    assert code_of(good, [signing.new_secret()]) == "signature_invalid"
    assert code_of(good.replace("v1=", "v1=0"), [secret]) == "signature_invalid"
    with pytest.raises(signing.SignatureError):  # another body, same header
        signing.verify(good, BODY + b" ", [secret], now, 300)
    stale = signing.header([secret], now - 301, BODY)
    future = signing.header([secret], now + 301, BODY)
    assert code_of(stale, [secret], now) == "signature_expired"
    assert code_of(future, [secret], now) == "signature_expired"


def test_the_timestamp_is_signed() -> None:
    secret, now = signing.new_secret(), int(time.time())
    header = signing.header([secret], now - 1000, BODY)
    moved = header.replace(f"t={now - 1000}", f"t={now}")
    assert code_of(moved, [secret], now) == "signature_invalid"


def test_a_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    box = secretbox.load(settings)
    key_file = tmp_path / secretbox.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = box.encrypt("whsec_plain")
    assert b"whsec_plain" not in token
    assert secretbox.load(settings).decrypt(token) == "whsec_plain"


def test_the_key_setting_rotates_and_a_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = secretbox.load(make_settings(tmp_path, encryption_key=old)).encrypt("s")
    assert (
        secretbox.load(make_settings(tmp_path, encryption_key=f"{new},{old}")).decrypt(token) == "s"
    )
    with pytest.raises(ClipmodError) as caught:
        secretbox.load(make_settings(tmp_path, encryption_key=new)).decrypt(token)
    assert caught.value.code == "encryption_key_mismatch" and old not in caught.value.message
    assert not (tmp_path / secretbox.KEY_FILE).exists()  # a configured key writes no file
    with pytest.raises(ClipmodError):
        secretbox.load(make_settings(tmp_path, encryption_key="not-a-key"))
