"""Encryption at rest for signing secrets.

An HMAC secret has to be read back to sign or verify, so unlike an API key it cannot be kept as
a one-way hash: it is stored encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from
`cryptography`), under a key that never enters the database. A stolen database dump alone then
reveals no secret.

The key comes from `CLIPMOD_ENCRYPTION_KEY` (a comma-separated list: the first encrypts, all
decrypt, so the key itself can be rotated). When that is empty, as on the embedded default, a
key is generated once into `$CLIPMOD_DATA_DIR/encryption.key` with mode 0600; that file lives in
the data dir, which is never committed. Production sets the variable from its secret store.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from clipmod.errors import ClipmodError
from clipmod.settings import Settings

KEY_FILE = "encryption.key"


class SecretBox:
    def __init__(self, keys: list[bytes]):
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            # The message must not help anyone: no key material, no ciphertext.
            raise ClipmodError(
                "a stored signing secret cannot be decrypted with CLIPMOD_ENCRYPTION_KEY; was the "
                "key changed without keeping the old one in the list?",
                code="encryption_key_mismatch",
                status=500,
            ) from None


def _key_file(path: Path) -> bytes:
    """Read the generated key, creating it first if needed; safe when processes race.

    `O_EXCL` makes exactly one process create the file; the others read what it wrote (they
    retry briefly while the winner is between create and write).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
    for _ in range(50):
        key = path.read_bytes().strip()
        if key:
            return key
        time.sleep(0.01)
    raise ClipmodError(f"{path} is empty", code="encryption_key_missing", status=500)


def load(settings: Settings) -> SecretBox:
    if settings.encryption_key:
        keys = [k.strip().encode() for k in settings.encryption_key.split(",") if k.strip()]
        try:
            return SecretBox(keys)
        except ValueError:
            raise ClipmodError(
                "CLIPMOD_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes each), "
                "comma-separated",
                code="encryption_key_invalid",
                status=500,
            ) from None
    return SecretBox([_key_file(settings.data_dir / KEY_FILE)])
