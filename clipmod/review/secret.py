"""The key that signs dashboard session cookies and CSRF tokens.

`CLIPMOD_SECRET_KEY` wins. Without it (the embedded default) a random key is generated once
into the data dir with mode 0600 and reused, so sessions survive restarts and every API
replica sharing the data dir signs with the same key. It is never in the repository.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_NAME = "secret-key"


def load_or_create(configured: str, data_dir: Path) -> str:
    if configured:
        return configured
    path = data_dir / FILE_NAME
    if not path.exists():
        # Written whole under a temporary name, then linked into place: a replica starting at
        # the same moment either wins the link or reads the winner's complete key.
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{FILE_NAME}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to have a new key made")
    return key
