"""The sender over https: a push service on a private CA is reached only when
MOMENTCAST_PUSH_CA_FILE names that CA; otherwise the TLS handshake fails, and the push is
retried, counted and logged like any other connection failure, under its own class."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.context import Context
from service.errors import ConfigError
from service.push import Sender
from service.push.failures import Failure
from service.settings import load_settings
from service.testing import CertificateFiles, PushService, make_test_certificates
from tests.conftest import make_settings
from tests.factories import insert_delivery, insert_subscription
from tests.push.conftest import delivery, metric


@pytest.fixture
def certificates(tmp_path: Path) -> CertificateFiles:
    return make_test_certificates(tmp_path / "tls")


@pytest.fixture
async def tls_service(ctx: Context, certificates: CertificateFiles) -> AsyncIterator[PushService]:
    service = await PushService(
        ctx.keys.vapid_public_b64, ssl_context=certificates.server_context()
    ).start()
    yield service
    await service.close()


def _with_ca(ctx: Context, ca_file: Path | None) -> Context:
    settings = make_settings(
        ctx.settings.data_dir,
        ctx.settings.database_url,
        push_ca_file=ca_file,
        sender_max_attempts=3,
        public_url="https://momentcast.example.com",
    )
    return Context(settings=settings, store=ctx.store, keys=ctx.keys, rules=ctx.rules)


async def test_sender_delivers_over_tls_when_the_ca_is_configured(
    ctx: Context, tls_service: PushService, certificates: CertificateFiles
) -> None:
    assert tls_service.origin.startswith("https://127.0.0.1:")
    subs = [tls_service.subscribe() for _ in range(3)]
    ids = [await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, s)) for s in subs]

    async with Sender(_with_ca(ctx, certificates.ca_file)) as sender:
        assert await sender.run_once() == 3

    for delivery_id, sub in zip(ids, subs, strict=True):
        row = await delivery(ctx.pool, delivery_id)
        assert (row["status"], row["last_status"]) == ("sent", 201)
        [message] = sub.messages()  # decrypted by the service with the browser's key
        assert message["notification"]["data"]["delivery_id"] == delivery_id
    assert not tls_service.rejections


async def test_sender_refuses_an_untrusted_certificate_without_the_setting(
    ctx: Context, tls_service: PushService, caplog: pytest.LogCaptureFixture
) -> None:
    sub = tls_service.subscribe()
    delivery_id = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))
    origin = tls_service.origin
    before = metric("momentcast_push_failures_total", origin=origin, failure=Failure.TLS.value)
    requests = metric("momentcast_push_requests_total", origin=origin, status="connection_error")

    with caplog.at_level(logging.WARNING, logger="service.push"):
        async with Sender(_with_ca(ctx, None)) as sender:
            assert await sender.run_once() == 1

    row = await delivery(ctx.pool, delivery_id)
    # Retried later like any connection failure: a certificate can be fixed.
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"].startswith("TLS error: 127.0.0.1:")
    assert "CERTIFICATE_VERIFY_FAILED" in row["last_error"]
    assert not sub.received and not sub.request_times  # no request reached the handler
    assert metric("momentcast_push_failures_total", origin=origin, failure="tls_error") == (
        before + 1
    )
    assert metric("momentcast_push_requests_total", origin=origin, status="connection_error") == (
        requests + 1
    )
    [line] = [r for r in caplog.records if "[tls_error]" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert origin in line.getMessage() and "MOMENTCAST_PUSH_CA_FILE" in line.getMessage()
    assert "/push/" not in line.getMessage()  # the origin, never the endpoint's path


async def test_a_ca_file_trusts_only_what_it_holds(
    ctx: Context, tls_service: PushService, tmp_path: Path
) -> None:
    # Another test CA: trusting it does not make the service's certificate trusted.
    other = make_test_certificates(tmp_path / "other")
    sub = tls_service.subscribe()
    delivery_id = await insert_delivery(ctx.pool, await insert_subscription(ctx.pool, sub))

    async with Sender(_with_ca(ctx, other.ca_file)) as sender:
        assert await sender.run_once() == 1

    row = await delivery(ctx.pool, delivery_id)
    assert row["status"] == "pending" and row["last_error"].startswith("TLS error")
    assert not sub.received


def test_push_ca_file_must_be_a_pem_bundle(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="MOMENTCAST_PUSH_CA_FILE"):
        load_settings(_env_file=None, data_dir=tmp_path, push_ca_file=missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="MOMENTCAST_PUSH_CA_FILE"):
        load_settings(_env_file=None, data_dir=tmp_path, push_ca_file=junk)
    good = make_test_certificates(tmp_path / "tls").ca_file
    settings = load_settings(_env_file=None, data_dir=tmp_path, push_ca_file=str(good))
    assert settings.push_ca_file == good
    assert load_settings(_env_file=None, data_dir=tmp_path, push_ca_file="").push_ca_file is None
