"""AEAD key rings: AES-256-GCM with a key id in every ciphertext and additional data binding.

The additional data names what a ciphertext belongs to (e.g. ``mailbox:mbx_1:incoming``), so a
ciphertext copied onto another record does not decrypt. The first key of a ring seals; every key
opens, which is what makes online rotation possible.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.models import SealedSecret


class KeyRingError(ValueError):
    """The key ring text is malformed; the message never contains key material."""


class SealError(ValueError):
    """A ciphertext could not be opened (unknown key id, tampered, or bound to another record)."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class KeyRing:
    """Ordered keys: ``keys[0]`` seals; any opens."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse ``kid:base64key,kid2:base64key`` (32-byte keys, base64 or base64url)."""
        keys: list[tuple[str, bytes]] = []
        for n, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
            kid, sep, encoded = part.partition(":")
            if not sep or not kid:
                raise KeyRingError(f"key #{n + 1}: expected 'kid:base64key'")
            try:
                key = base64.b64decode(
                    encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4)
                )
            except ValueError:
                raise KeyRingError(f"key {kid!r}: not base64") from None
            if len(key) != 32:
                raise KeyRingError(f"key {kid!r}: must be 32 bytes, got {len(key)}")
            if any(k == kid for k, _ in keys):
                raise KeyRingError(f"key {kid!r}: duplicate key id")
            keys.append((kid, key))
        if not keys:
            raise KeyRingError("the key ring is empty")
        return cls(tuple(keys))

    @classmethod
    def for_development(cls, purpose: str) -> KeyRing:
        """A fixed, well-known key for dev mode only: data sealed with it is not protected."""
        return cls(((f"dev-{purpose}", hashlib.sha256(f"mailwarden-dev-{purpose}".encode()).digest()),))

    @staticmethod
    def generate_key_text(kid: str) -> str:
        return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"

    @property
    def primary_kid(self) -> str:
        return self.keys[0][0]

    @property
    def kids(self) -> list[str]:
        return [kid for kid, _ in self.keys]

    def seal(self, plaintext: bytes, aad: str) -> SealedSecret:
        kid, key = self.keys[0]
        nonce = os.urandom(12)
        ct = AESGCM(key).encrypt(nonce, plaintext, f"{kid}|{aad}".encode())
        return SealedSecret(kid=kid, nonce=_b64e(nonce), ct=_b64e(ct))

    def open(self, sealed: SealedSecret, aad: str) -> bytes:
        key = dict(self.keys).get(sealed.kid)
        if key is None:
            raise SealError(f"unknown key id {sealed.kid!r}")
        try:
            return AESGCM(key).decrypt(_b64d(sealed.nonce), _b64d(sealed.ct), f"{sealed.kid}|{aad}".encode())
        except (InvalidTag, ValueError):
            raise SealError("ciphertext does not open with this key and binding") from None

    def reseal(self, sealed: SealedSecret, aad: str) -> SealedSecret:
        """Re-encrypt under the primary key (rotation); a no-op copy when already on it."""
        if sealed.kid == self.primary_kid:
            return sealed
        return self.seal(self.open(sealed, aad), aad)
