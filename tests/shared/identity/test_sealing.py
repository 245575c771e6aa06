import base64
import os

import pytest

from shared.identity.errors import Unsealable
from shared.identity.sealing import Keyring, key_id


def key() -> bytes:
    return os.urandom(32)


def test_a_sealed_value_opens_under_its_storage_key_only() -> None:
    ring = Keyring([key()])
    sealed = ring.seal(b"an id token", b"muster:oauth:upstream:a")
    assert b"an id token" not in sealed
    assert ring.open(sealed, b"muster:oauth:upstream:a") == b"an id token"
    with pytest.raises(Unsealable):
        ring.open(sealed, b"muster:oauth:upstream:b")


def test_the_first_key_seals_and_every_configured_key_opens() -> None:
    old, new = key(), key()
    before = Keyring([old]).seal(b"v", b"k")
    rotated = Keyring([new, old])
    assert rotated.open(before, b"k") == b"v"
    after = rotated.seal(b"v", b"k")
    assert after[1:5] == key_id(new)
    assert Keyring([new]).open(after, b"k") == b"v"
    with pytest.raises(Unsealable, match="not configured"):
        Keyring([new]).open(before, b"k")


def test_a_tampered_value_does_not_open() -> None:
    ring = Keyring([key()])
    sealed = bytearray(ring.seal(b"value", b"k"))
    sealed[-1] ^= 1
    with pytest.raises(Unsealable):
        ring.open(bytes(sealed), b"k")
    with pytest.raises(Unsealable):
        ring.open(b"short", b"k")


def test_keys_come_as_comma_separated_base64_of_32_bytes() -> None:
    a, b = key(), key()
    ring = Keyring.from_base64(f"{base64.b64encode(a).decode()}, {base64.b64encode(b).decode()}")
    assert Keyring([a]).open(ring.seal(b"x", b"k"), b"k") == b"x"
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring.from_base64(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        Keyring.from_base64("not base64!")
    with pytest.raises(ValueError, match="same"):
        Keyring([a, a])
