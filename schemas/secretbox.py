"""Encryption of stored secrets (a shop's Admin API access token) with AES-256-GCM.

The token is an Admin API credential for a merchant's whole shop: a leaked database dump or
backup must not hand it out, so the database holds only `seal(key, token, context)`. The key
comes from settings (`REFSTREAM_SHOPIFY_TOKEN_KEY`), never from the database.

Format: `b"v1" + 12-byte random nonce + ciphertext-and-tag`. `context` (the shop's domain) is
authenticated as associated data, so a ciphertext copied onto another shop's row fails to open
rather than lending that shop's token to the other.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"v1"
NONCE_BYTES = 12
KEY_BYTES = 32


class SecretBoxError(ValueError):
    """A key that is not 32 bytes of url-safe base64, or a ciphertext that does not open."""


def load_key(text: str) -> bytes:
    """The 32-byte key from its url-safe base64 text (padding optional)."""
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SecretBoxError("the key is not url-safe base64") from exc
    if len(key) != KEY_BYTES:
        raise SecretBoxError(f"the key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def seal(key: bytes, plaintext: str, context: str) -> bytes:
    """`plaintext` encrypted and authenticated, bound to `context`."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
    return VERSION + nonce + sealed


def open_sealed(key: bytes, blob: bytes, context: str) -> str:
    """The plaintext of `seal(key, plaintext, context)`; `SecretBoxError` for anything else
    (another key, another context, a changed byte)."""
    if len(blob) < len(VERSION) + NONCE_BYTES + 16 or not blob.startswith(VERSION):
        raise SecretBoxError("not a sealed value of this format")
    nonce = blob[len(VERSION) : len(VERSION) + NONCE_BYTES]
    try:
        plain = AESGCM(key).decrypt(nonce, blob[len(VERSION) + NONCE_BYTES :], context.encode())
    except InvalidTag as exc:
        raise SecretBoxError("the sealed value does not open with this key and context") from exc
    return plain.decode()
