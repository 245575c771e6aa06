"""AES-256-GCM for every secret muster keeps in Valkey (`cryptography`'s AESGCM; no crypto of our own).

A sealed value is `version (1) | key id (4) | nonce (12) | ciphertext and tag`. The key id lets several keys be
configured at once (the first seals, every one opens), so that a key rotates without logging anyone out. The
storage key is the associated data: a value copied to another key does not open.
"""

import base64
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.identity.errors import Unsealable

VERSION = b"\x01"
KEY_BYTES = 32
NONCE_BYTES = 12
_HEADER = 1 + 4 + NONCE_BYTES


def key_id(key: bytes) -> bytes:
    """Four bytes that name a key without revealing it."""
    return hashlib.sha256(b"muster-key-id:" + key).digest()[:4]


class Keyring:
    """The configured keys; the first seals, each opens what it sealed."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"an encryption key must be {KEY_BYTES} bytes, one is {len(key)}")
            kid = key_id(key)
            if kid in self._ciphers:
                raise ValueError("two configured encryption keys are the same")
            self._ciphers[kid] = AESGCM(key)
        self._kid = key_id(keys[0])
        self._seal = self._ciphers[self._kid]

    @classmethod
    def from_base64(cls, value: str) -> "Keyring":
        """Comma-separated base64 keys, as MUSTER_ENCRYPTION_KEY holds them."""
        try:
            keys = [base64.b64decode(part.strip(), validate=True) for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise ValueError("an encryption key is not valid base64") from exc
        return cls(keys)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + self._kid + nonce + self._seal.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < _HEADER + 16 or sealed[:1] != VERSION:
            raise Unsealable("not a sealed value")
        cipher = self._ciphers.get(sealed[1:5])
        if cipher is None:
            raise Unsealable("sealed with a key that is not configured")
        try:
            return cipher.decrypt(sealed[5:_HEADER], sealed[_HEADER:], context)
        except InvalidTag:
            raise Unsealable("does not open under its key and storage key") from None
