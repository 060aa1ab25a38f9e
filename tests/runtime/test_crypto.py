"""Key rings: binding, tamper detection, rotation, and no key material in errors."""

from __future__ import annotations

import base64

import pytest

from contracts.models import SealedSecret
from mailwarden_runtime.crypto import KeyRing, KeyRingError, SealError


def ring(*kids: str) -> KeyRing:
    return KeyRing.parse(",".join(KeyRing.generate_key_text(k) for k in kids))


def test_seal_and_open_with_binding() -> None:
    keys = ring("k1")
    sealed = keys.seal(b"s3cret", "mailbox:m1:incoming")
    assert sealed.kid == "k1" and b"s3cret" not in sealed.model_dump_json().encode()
    assert keys.open(sealed, "mailbox:m1:incoming") == b"s3cret"


def test_ciphertext_moved_to_another_record_does_not_open() -> None:
    keys = ring("k1")
    sealed = keys.seal(b"s3cret", "mailbox:m1:incoming")
    with pytest.raises(SealError):
        keys.open(sealed, "mailbox:m2:incoming")
    with pytest.raises(SealError):
        keys.open(sealed, "mailbox:m1:outgoing")


def test_flipped_bit_fails() -> None:
    keys = ring("k1")
    sealed = keys.seal(b"s3cret", "a")
    raw = bytearray(base64.urlsafe_b64decode(sealed.ct + "=" * (-len(sealed.ct) % 4)))
    raw[0] ^= 1
    tampered = SealedSecret(kid="k1", nonce=sealed.nonce, ct=base64.urlsafe_b64encode(bytes(raw)).decode())
    with pytest.raises(SealError):
        keys.open(tampered, "a")


def test_rotation_reseals_to_the_new_primary_and_old_keys_still_open() -> None:
    old = ring("k1")
    sealed = old.seal(b"pw", "x")
    rotated = KeyRing((("k2", b"\x01" * 32), *old.keys))
    resealed = rotated.reseal(sealed, "x")
    assert resealed.kid == "k2" and rotated.open(resealed, "x") == b"pw"
    assert rotated.reseal(resealed, "x") is resealed
    with pytest.raises(SealError, match="unknown key id"):
        old.open(resealed, "x")


@pytest.mark.parametrize("text", ["", "nokey", "k1:!!!", "k1:" + base64.b64encode(b"short").decode()])
def test_bad_ring_text_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(KeyRingError) as err:
        KeyRing.parse(text)
    assert "!!!" not in str(err.value)
