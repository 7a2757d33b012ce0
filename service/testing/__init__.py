"""What tests, the demo and client developers use to test against momentcast without a browser.

:mod:`service.testing.pushservice` is a strict stand-in for a browser push service on loopback:
it checks RFC 8030 headers and the RFC 8292 VAPID token, decrypts every push with the
subscriber's private key (RFC 8291) and can misbehave on purpose (:class:`Fault`).
:mod:`service.testing.cli` runs it as a local push sink (``momentcast testing push-service``).
"""

from __future__ import annotations

from service.testing.pushservice import (
    MAX_BODY,
    SAMPLE_PAYLOAD,
    BrowserSubscription,
    Fault,
    PushService,
    Received,
    VapidError,
    make_keys,
    verify_vapid,
)
from service.testing.tls import CertificateFiles, make_test_certificates

__all__ = [
    "MAX_BODY",
    "SAMPLE_PAYLOAD",
    "BrowserSubscription",
    "CertificateFiles",
    "Fault",
    "PushService",
    "Received",
    "VapidError",
    "make_keys",
    "make_test_certificates",
    "verify_vapid",
]
