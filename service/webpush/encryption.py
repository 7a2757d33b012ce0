"""RFC 8291 message encryption: the aes128gcm body of one push for one subscriber.

A fresh sender key and salt for every message, one record. The steps are RFC 8291 section 3.4
and RFC 8188 written out with cryptography's primitives (ECDH, AES-GCM) and the standard
library's one-shot HMAC: each HKDF here yields one SHA-256 block, so it is two HMACs, and
http-ece's general version (key objects, backends and HKDF instances per message, the other
content codings) cost about 20 us more per push, a fifth of the encryption. The test push
service decrypts with http-ece, and tests/push/test_push_vectors.py checks RFC 8291
Appendix A byte for byte.
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.errors import PushPayloadTooLarge
from service.vocabulary import MAX_PAYLOAD_BYTES, PUSH_RECORD_BYTES
from service.webpush.base64url import b64url_decode

# The push service's limit (vocabulary explains the arithmetic).
MAX_PLAINTEXT = MAX_PAYLOAD_BYTES
RECORD_SIZE = PUSH_RECORD_BYTES

_CURVE = ec.SECP256R1()
_KEY_INFO = b"WebPush: info\x00"
# HKDF-Expand's first block: T(1) = HMAC(PRK, info || 0x01).
_CEK_INFO = b"Content-Encoding: aes128gcm\x00\x01"
_NONCE_INFO = b"Content-Encoding: nonce\x00\x01"
# The padding delimiter of the last (here: only) record (RFC 8188 section 2).
_LAST_RECORD = b"\x02"


def _hkdf_block(salt: bytes, ikm: bytes, info_and_counter: bytes) -> bytes:
    """HKDF-SHA-256 (RFC 5869) of at most 32 bytes: extract, then the first expand block."""
    prk = hmac.digest(salt, ikm, "sha256")
    return hmac.digest(prk, info_and_counter, "sha256")


def encrypt(plaintext: bytes, p256dh: str | bytes, auth: str | bytes) -> bytes:
    """The aes128gcm body for one subscriber: fresh ECDH key and salt, a single record."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise PushPayloadTooLarge(
            f"payload is {len(plaintext)} bytes; the limit is {MAX_PLAINTEXT}"
        )
    ua_public = b64url_decode(p256dh) if isinstance(p256dh, str) else p256dh
    auth_secret = b64url_decode(auth) if isinstance(auth, str) else auth
    # Raises ValueError for a point that is not on the curve: unusable subscription keys.
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, ua_public)
    # A new key per message is what makes the ciphertexts of one subscriber unlinkable.
    sender_key = ec.generate_private_key(_CURVE)
    as_public = sender_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    shared = sender_key.exchange(ec.ECDH(), ua_key)
    # RFC 8291 3.4: IKM from the ECDH secret, keyed by the auth secret, bound to both keys.
    ikm = _hkdf_block(auth_secret, shared, _KEY_INFO + ua_public + as_public + b"\x01")
    salt = os.urandom(16)
    cek = _hkdf_block(salt, ikm, _CEK_INFO)[:16]
    nonce = _hkdf_block(salt, ikm, _NONCE_INFO)[:12]
    # Header (RFC 8188 2.1): salt, record size, key id length, the sender's public key.
    header = salt + struct.pack("!LB", RECORD_SIZE, len(as_public)) + as_public
    return header + AESGCM(cek).encrypt(nonce, plaintext + _LAST_RECORD, None)
