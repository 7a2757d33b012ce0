"""Oracles from the RFCs: RFC 8291 Appendix A byte for byte, RFC 8292 section 2.4 token."""

from __future__ import annotations

import http_ece
import pytest
from aiohttp import ClientSession
from cryptography.hazmat.primitives.asymmetric import ec

from service.testing import PushService, VapidError, verify_vapid
from service.webpush.base64url import b64url, b64url_decode
from service.webpush.encryption import encrypt

PLAINTEXT = b"When I grow up, I want to be a watermelon"
AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
SALT = "DGv6ra1nlYgDCS1FRnbzlw"
AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6T"
    "lzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4"
    "a-fN"
)

VAPID_T = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQiLCJleHAiOjE0"
    "NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDquptFOepC9GAu_HLGkMlMuCGS"
    "K2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA"
)
VAPID_K = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"


def _key(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


def _tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[10] ^= 0x01
    return f"{header}.{claims}.{b64url(bytes(raw))}"


def test_rfc8291_appendix_a_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the two sources of randomness are fixed; everything else is the production path.
    monkeypatch.setattr(ec, "generate_private_key", lambda curve: _key(AS_PRIVATE))
    real_urandom = http_ece.os.urandom
    monkeypatch.setattr(
        http_ece.os, "urandom", lambda n: b64url_decode(SALT) if n == 16 else real_urandom(n)
    )
    body = encrypt(PLAINTEXT, UA_PUBLIC, AUTH)
    expected = b64url_decode(BODY)
    assert len(body) == 144
    assert body[:86] == expected[:86], "header (salt, rs, key id) differs"
    assert body == expected


def test_encryption_uses_a_fresh_key_and_salt_each_time() -> None:
    first = encrypt(PLAINTEXT, UA_PUBLIC, AUTH)
    second = encrypt(PLAINTEXT, UA_PUBLIC, AUTH)
    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # sender public key
    for body in (first, second):
        plain = http_ece.decrypt(
            body, private_key=_key(UA_PRIVATE), auth_secret=b64url_decode(AUTH), version="aes128gcm"
        )
        assert plain == PLAINTEXT


def test_rfc8292_token_signature_checks() -> None:
    claims = verify_vapid(
        f"vapid t={VAPID_T}, k={VAPID_K}",
        audience="https://push.example.net",
        expected_key=VAPID_K,
        check_expiry=False,
    )
    assert claims == {
        "aud": "https://push.example.net",
        "exp": 1453523768,
        "sub": "mailto:push@example.com",
    }
    with pytest.raises(VapidError, match="signature"):
        verify_vapid(
            f"vapid t={_tampered(VAPID_T)}, k={VAPID_K}",
            audience="https://push.example.net",
            expected_key=VAPID_K,
            check_expiry=False,
        )
    with pytest.raises(VapidError, match="exp"):
        verify_vapid(
            f"vapid t={VAPID_T}, k={VAPID_K}",
            audience="https://push.example.net",
            expected_key=VAPID_K,
        )


async def test_rfc8292_token_over_http() -> None:
    service = await PushService(
        VAPID_K, audience="https://push.example.net", check_expiry=False
    ).start()
    try:
        sub = service.subscribe()
        async with ClientSession() as http:
            statuses = []
            for token in (VAPID_T, _tampered(VAPID_T)):
                headers = {
                    "TTL": "60",
                    "Content-Encoding": "aes128gcm",
                    "Authorization": f"vapid t={token}, k={VAPID_K}",
                }
                body = encrypt(b'{"title":"hi"}', sub.p256dh, sub.auth)
                async with http.post(sub.endpoint, data=body, headers=headers) as resp:
                    statuses.append(resp.status)
        assert statuses == [201, 403]
        assert [r.plaintext for r in sub.received] == [b'{"title":"hi"}']
    finally:
        await service.close()
