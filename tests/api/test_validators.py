"""Hypothesis properties of the request validators (the same models the API uses)."""

from __future__ import annotations

import json
import math
import secrets
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.api.models import (
    SIGNAL_BODY,
    PushKeys,
    SignalBatchBody,
    SignalBody,
    SubscriptionCreate,
    b64url_bytes,
)
from service.ratelimit import TokenBucketLimiter
from tests.api.conftest import b64url

finite_lat = st.floats(-90, 90, allow_nan=False)
finite_lon = st.floats(-180, 180, allow_nan=False)
flat = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=256).filter(lambda s: "\x00" not in s),
)
keys = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z")


def _fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


@given(
    lat=finite_lat,
    lon=finite_lon,
    accuracy=st.none() | st.floats(0, 1e7),
    ago=st.floats(0, 23.9 * 3600),
    moment=st.sampled_from([None, "know", "go", "do", "buy"]),
    context=st.dictionaries(keys, flat, max_size=16),
)
def test_valid_signals_validate_and_round_trip(
    lat: float,
    lon: float,
    accuracy: float | None,
    ago: float,
    moment: str | None,
    context: dict[str, Any],
) -> None:
    at = datetime.now(UTC) - timedelta(seconds=ago)
    body = {
        "lat": lat,
        "lon": lon,
        "accuracy_m": accuracy,
        "at": at.isoformat(),
        "moment": moment,
        "context": context,
    }
    signal = SIGNAL_BODY.validate_json(json.dumps(body))
    assert isinstance(signal, SignalBody)
    assert (signal.lat, signal.lon, signal.accuracy_m, signal.moment) == (
        lat,
        lon,
        accuracy,
        moment,
    )
    assert signal.at == at and signal.context == context


@given(lat=st.floats().filter(lambda v: math.isnan(v) or not -90 <= v <= 90), lon=finite_lon)
def test_latitude_outside_range_or_not_finite_is_refused(lat: float, lon: float) -> None:
    with pytest.raises(ValidationError) as info:
        SignalBody.model_validate({"lat": lat, "lon": lon})
    assert _fields(info.value) == {"lat"}


@given(lon=st.floats().filter(lambda v: math.isnan(v) or not -180 <= v <= 180), lat=finite_lat)
def test_longitude_outside_range_or_not_finite_is_refused(lat: float, lon: float) -> None:
    with pytest.raises(ValidationError) as info:
        SignalBody.model_validate({"lat": lat, "lon": lon})
    assert _fields(info.value) == {"lon"}


@given(minutes=st.floats(5.1, 10_000) | st.floats(-10_000, -(24 * 60 + 1)))
def test_signal_time_outside_window_is_refused(minutes: float) -> None:
    at = datetime.now(UTC) + timedelta(minutes=minutes)
    with pytest.raises(ValidationError) as info:
        SIGNAL_BODY.validate_json(json.dumps({"lat": 0, "lon": 0, "at": at.isoformat()}))
    assert _fields(info.value) == {"single.at"}


@given(bad=st.sets(st.integers(0, 499), min_size=1, max_size=20), size=st.integers(1, 500))
@settings(max_examples=40)
def test_batch_reports_every_bad_index(bad: set[int], size: int) -> None:
    bad = {i for i in bad if i < size}
    signals = [{"lat": 95 if i in bad else 45, "lon": 0} for i in range(size)]
    if not bad:
        assert isinstance(
            SIGNAL_BODY.validate_json(json.dumps({"signals": signals})), SignalBatchBody
        )
        return
    with pytest.raises(ValidationError) as info:
        SIGNAL_BODY.validate_json(json.dumps({"signals": signals}))
    assert _fields(info.value) == {f"batch.signals.{i}.lat" for i in bad}


@given(
    value=st.one_of(
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.none(),
        st.text(min_size=257, max_size=300),
    )
)
def test_context_values_must_be_flat_and_bounded(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        SignalBody.model_validate({"lat": 0, "lon": 0, "context": {"k": value}})
    assert _fields(info.value) == {"context.k"}


def _point() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


@given(padded=st.booleans())
@settings(max_examples=10)
def test_real_browser_keys_are_accepted(padded: bool) -> None:
    point, auth = _point(), secrets.token_bytes(16)
    enc = b64url(point) + ("=" if padded else "")
    parsed = PushKeys.model_validate({"p256dh": enc, "auth": b64url(auth)})
    assert b64url_bytes(parsed.p256dh) == point and b64url_bytes(parsed.auth) == auth


@given(raw=st.binary(min_size=0, max_size=80))
def test_random_bytes_are_not_a_p256_point(raw: bytes) -> None:
    # Only a real curve point passes; random 65-byte strings starting 0x04 almost never are.
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        on_curve = len(raw) == 65
    except ValueError:
        on_curve = False
    body = {"p256dh": b64url(raw), "auth": b64url(b"a" * 16)}
    if on_curve:
        PushKeys.model_validate(body)
    else:
        with pytest.raises(ValidationError) as info:
            PushKeys.model_validate(body)
        assert _fields(info.value) == {"p256dh"}


@given(size=st.integers(0, 40).filter(lambda n: n != 16))
def test_auth_must_be_16_bytes(size: int) -> None:
    with pytest.raises(ValidationError) as info:
        PushKeys.model_validate({"p256dh": b64url(_point()), "auth": b64url(b"x" * size)})
    assert _fields(info.value) == {"auth"}


ZONES = sorted(zoneinfo.available_timezones())


@given(zone=st.sampled_from(ZONES) | st.text(max_size=30))
def test_timezone_is_an_iana_name(zone: str) -> None:
    body = {
        "subscription": {
            "endpoint": "http://127.0.0.1/x",
            "keys": {"p256dh": b64url(_point()), "auth": b64url(b"a" * 16)},
        },
        "timezone": zone,
    }
    if zone in ZONES:
        assert SubscriptionCreate.model_validate(body).timezone == zone
    else:
        with pytest.raises(ValidationError) as info:
            SubscriptionCreate.model_validate(body)
        assert _fields(info.value) == {"timezone"}


@given(tag=st.from_regex(r"\A[a-z]{2,3}(-[A-Z][a-z]{3})?(-[A-Z]{2})?\Z"))
def test_simple_bcp47_tags_are_accepted(tag: str) -> None:
    body = {
        "subscription": {
            "endpoint": "http://127.0.0.1/x",
            "keys": {"p256dh": b64url(_point()), "auth": b64url(b"a" * 16)},
        },
        "locale": tag,
    }
    assert SubscriptionCreate.model_validate(body).locale == tag


@given(
    burst=st.integers(1, 50),
    rate=st.floats(0.1, 100),
    calls=st.integers(1, 200),
    spacing=st.floats(0, 2),
)
def test_token_bucket_never_exceeds_burst_plus_refill(
    burst: int, rate: float, calls: int, spacing: float
) -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(burst, rate, clock=lambda: now[0])
    allowed = 0
    for _ in range(calls):
        wait = limiter.acquire(b"device")
        if wait == 0:
            allowed += 1
        else:
            assert wait > 0 and wait <= 1 / rate + 1e-9
        now[0] += spacing
    elapsed = spacing * (calls - 1)
    assert allowed <= burst + math.floor(elapsed * rate) + 1
    assert allowed >= min(calls, burst)


def test_token_bucket_bounds_its_memory() -> None:
    limiter = TokenBucketLimiter(1, 1, max_keys=100, clock=lambda: 0.0)
    for i in range(1000):
        limiter.acquire(i.to_bytes(4, "big"))
    assert len(limiter) == 100
    assert TokenBucketLimiter.retry_after(0.01) == "1"
    assert TokenBucketLimiter.retry_after(2.5) == "3"
