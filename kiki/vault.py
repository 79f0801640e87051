"""Stored credentials encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256): SyncEngage's
CRM credentials and the signing secrets of billing's webhook endpoints.

The key is KIKI_SECRET_KEY, or else one generated once into $KIKI_HOME/secret.key (mode
0600) and reused, so a restart reads what it wrote. Every process that reads them (the engage
and billing replicas, the automation actor, `kiki engage crm sync`) must see the same key: on
a cluster of several machines set KIKI_SECRET_KEY.

The key also yields derived keys for other uses (`derive`): the GDPR suppression hashes
(kiki.gdpr), which every app and `kiki ingest` check, so they too must see the same key, and
a changed key forgets who was erased.

A stored value that is not a Fernet token is a credential stored before encryption: it is
read as plain text and sealed by its owner (the next CRM sync of the source; the billing
replica's start for webhook endpoints).
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiki.config import Settings
from kiki.errors import ConfigError

KEY_FILE = "secret.key"
NEW_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)
TOKEN = re.compile(r"^gA[A-Za-z0-9_-]+={0,2}$")  # url-safe base64 of version byte 0x80 ...
_TOKEN_OVERHEAD = 1 + 8 + 16 + 32  # ... then timestamp, IV, AES blocks, HMAC


def is_token(value: str) -> bool:
    """Whether `value` has the shape of a Fernet token (whatever key sealed it)."""
    if len(value) % 4 or not TOKEN.match(value):
        return False
    blocks = len(base64.urlsafe_b64decode(value)) - _TOKEN_OVERHEAD
    return blocks > 0 and blocks % 16 == 0


def _key_file(home: Path) -> bytes:
    """The key in home/secret.key, written first if missing; two processes starting at once
    both end up reading the one that was linked into place first."""
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        draft = home / f".{KEY_FILE}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes().strip()


class Vault:
    def __init__(self, key: bytes | str, origin: str) -> None:
        try:
            self._fernet = Fernet(key)
            self._key = base64.urlsafe_b64decode(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{origin} is not a Fernet key (32 url-safe base64-encoded bytes); make one "
                f"with {NEW_KEY}"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value(), "KIKI_SECRET_KEY")
        home = Path(settings.home).resolve()
        return cls(_key_file(home), f"{home / KEY_FILE}")

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for `purpose` (HKDF-SHA256 of the vault's key): another use of the
        secret gets its own key, and no derived key gives the vault's own away."""
        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return kdf.derive(self._key)

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def open(self, value: str, what: str) -> str:
        """The plain text of a sealed value (a plain one as it is); `what` names it in the
        error a token sealed under another key raises."""
        if not is_token(value):
            return value
        try:
            return self._fernet.decrypt(value.encode("ascii")).decode()
        except InvalidToken:
            raise ConfigError(
                f"{what} cannot be decrypted: it was stored under another key. Set "
                "KIKI_SECRET_KEY (or $KIKI_HOME/secret.key) back to the key it was stored "
                "with, or configure the source again"
            ) from None
