"""RFC 8291 message encryption: the aes128gcm body of one push for one subscriber.

The crypto primitives come from http-ece and cryptography; this module only decides what goes
in: a fresh sender key and salt for every message, and one record.
"""

from __future__ import annotations

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec

from service.errors import PushPayloadTooLarge
from service.vocabulary import MAX_PAYLOAD_BYTES, PUSH_RECORD_BYTES
from service.webpush.base64url import b64url_decode

# The push service's limit (vocabulary explains the arithmetic).
MAX_PLAINTEXT = MAX_PAYLOAD_BYTES
RECORD_SIZE = PUSH_RECORD_BYTES


def encrypt(plaintext: bytes, p256dh: str | bytes, auth: str | bytes) -> bytes:
    """The aes128gcm body for one subscriber: fresh ECDH key and salt, a single record."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise PushPayloadTooLarge(
            f"payload is {len(plaintext)} bytes; the limit is {MAX_PLAINTEXT}"
        )
    ua_public = b64url_decode(p256dh) if isinstance(p256dh, str) else p256dh
    auth_secret = b64url_decode(auth) if isinstance(auth, str) else auth
    # A new key per message is what makes the ciphertexts of one subscriber unlinkable.
    sender_key = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        plaintext,
        private_key=sender_key,
        dh=ua_public,
        auth_secret=auth_secret,
        version="aes128gcm",
        rs=RECORD_SIZE,
    )
    return body
