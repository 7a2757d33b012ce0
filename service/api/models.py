"""Request and response models of the subscriptions and signals API.

The same classes validate requests and generate /openapi.json, so the two cannot drift.
Numbers and booleans are strict (JSON ``"1.5"`` is not a number here) and every object
forbids unknown keys: a typo in a client is a 422 naming the field, not silently ignored data.
Request bodies are validated straight from the raw bytes (``model_validate_json``), which is
also what keeps strict RFC 3339 timestamps possible: in JSON mode a strict datetime accepts a
string and refuses a bare number.
"""

from __future__ import annotations

import math
import re
import time
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.vocabulary import Moment, SubscriptionStatus
from service.webpush.base64url import b64url_decode

MAX_BATCH = 500
MAX_TOPICS = 32
MAX_ATTRIBUTES = 32
MAX_CONTEXT = 16
MAX_STRING = 256
MAX_ENDPOINT = 2048
SIGNAL_MAX_AHEAD = timedelta(minutes=5)
SIGNAL_MAX_AGE = timedelta(hours=24)
P256_POINT_BYTES = 65
AUTH_SECRET_BYTES = 16

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# RFC 5646 language tags, without the rarely used extension and grandfathered forms.
_BCP47_RE = re.compile(
    r"^[A-Za-z]{2,3}(-[A-Za-z]{3}){0,3}"
    r"(-[A-Za-z]{4})?"
    r"(-([A-Za-z]{2}|[0-9]{3}))?"
    r"(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
    r"(-x(-[A-Za-z0-9]{1,8})+)?$"
)


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000; refusing it here keeps it a 422, not a 500.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, Field(max_length=MAX_STRING), AfterValidator(_no_nul)]
Key = Annotated[str, Field(pattern=_KEY_RE.pattern)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Bool = Annotated[bool, Field(strict=True)]


def _flat_value(value: Any) -> bool | int | float | str:
    # One check with one message: a union of strict types would report a failure per member.
    if isinstance(value, bool):  # before int: a JSON true must stay a bool, never become 1
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError("integer out of the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"must be at most {MAX_STRING} characters")
        return _no_nul(value)
    raise ValueError("must be a string, number or boolean (no objects, arrays or null)")


FlatValue = Annotated[
    bool | int | float | str,
    PlainValidator(_flat_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_STRING},
                {"type": "number"},
                {"type": "boolean"},
            ]
        }
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def b64url_bytes(value: str) -> bytes:
    """Decode base64url with or without padding (browsers send it unpadded)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", value):
        raise ValueError("must be base64url")
    try:
        return b64url_decode(value)
    except ValueError:  # binascii.Error included
        raise ValueError("must be base64url") from None


def _check_p256dh(value: str) -> str:
    raw = b64url_bytes(value)
    if len(raw) != P256_POINT_BYTES or raw[0] != 0x04:
        raise ValueError("must be a 65-byte uncompressed P-256 point, base64url")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("is not a point on the P-256 curve") from None
    return value


def _check_auth(value: str) -> str:
    if len(b64url_bytes(value)) != AUTH_SECRET_BYTES:
        raise ValueError("must be 16 bytes, base64url")
    return value


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/Paris)")
    return value


def _check_locale(value: str) -> str:
    if not _BCP47_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a BCP 47 language tag (e.g. en-GB)")
    return value


def _check_topics(value: list[str]) -> list[str]:
    # Order and duplicates carry no meaning; a canonical form keeps comparisons simple.
    return sorted(set(value))


Timezone = Annotated[str, Field(max_length=64), AfterValidator(_check_timezone)]
Locale = Annotated[str, Field(max_length=35), AfterValidator(_check_locale)]
Topic = Annotated[str, Field(pattern=_KEY_RE.pattern)]
Topics = Annotated[list[Topic], Field(max_length=MAX_TOPICS), AfterValidator(_check_topics)]
Attributes = Annotated[dict[Key, FlatValue], Field(max_length=MAX_ATTRIBUTES)]
SignalContext = Annotated[dict[Key, FlatValue], Field(max_length=MAX_CONTEXT)]


class PushKeys(Strict):
    p256dh: Annotated[str, Field(max_length=128), AfterValidator(_check_p256dh)]
    auth: Annotated[str, Field(max_length=64), AfterValidator(_check_auth)]


class PushSubscriptionJSON(Strict):
    """What ``PushSubscription.toJSON()`` gives in browsers."""

    endpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT)]
    expirationTime: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = None
    keys: PushKeys

    @field_validator("endpoint")
    @classmethod
    def _ascii_url(cls, value: str) -> str:
        # Push services hand out ASCII URLs; anything else is not from a browser.
        if not value.isascii() or any(c.isspace() or ord(c) < 0x20 for c in value):
            raise ValueError("must be an ASCII URL without spaces or control characters")
        return value


class SubscriptionCreate(Strict):
    subscription: PushSubscriptionJSON
    timezone: Timezone | None = None
    locale: Locale | None = None
    topics: Topics | None = None
    attributes: Attributes | None = None
    location_consent: Bool | None = Field(
        default=None,
        description="true records now as the time the user consented to location use; "
        "false withdraws it",
    )


class ProfilePatch(Strict):
    """Only the fields present change; ``null`` clears timezone or locale."""

    timezone: Timezone | None = None
    locale: Locale | None = None
    topics: Topics = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=dict)
    paused: Bool = False
    location_consent: Bool | None = None


class SubscriptionCreated(Strict):
    id: uuid.UUID
    token: str = Field(description="the device token; shown once, store it on the device")


class SubscriptionProfile(Strict):
    id: uuid.UUID
    timezone: str | None
    locale: str | None
    topics: list[str]
    attributes: dict[str, bool | int | float | str]
    paused: bool
    consent_at: datetime | None
    status: SubscriptionStatus
    created_at: datetime
    updated_at: datetime


def _check_signal_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    now = datetime.fromtimestamp(time.time(), UTC)
    if value > now + SIGNAL_MAX_AHEAD:
        raise ValueError("is more than 5 minutes in the future")
    if value < now - SIGNAL_MAX_AGE:
        raise ValueError("is more than 24 hours old")
    return value


SignalId = Annotated[
    str,
    Field(
        pattern=_KEY_RE.pattern,
        description="Chosen by the client, unique per subscription (1-64 characters of "
        "A-Z a-z 0-9 . _ : -): a signal whose id is already stored is not stored or decided "
        "again, so a retry with the same id is safe. Kept as long as the signal "
        "(SIGNAL_RETENTION)",
    ),
]


class SignalBody(Strict):
    id: SignalId | None = None
    lat: Annotated[Finite, Field(ge=-90, le=90)] | None = Field(
        None, description="With lon, or neither: a signal without them is a context signal"
    )
    lon: Annotated[Finite, Field(ge=-180, le=180)] | None = None
    accuracy_m: Annotated[Finite, Field(ge=0, le=1e7)] | None = None
    at: Annotated[
        Annotated[AwareDatetime, Field(strict=True)] | None,
        AfterValidator(_check_signal_time),
        Field(description="RFC 3339 with an offset; default: the time it arrives"),
    ] = None
    speed_mps: Annotated[Finite, Field(ge=0, le=1e4)] | None = None
    moment: Moment | None = None
    context: SignalContext = Field(default_factory=dict)

    @model_validator(mode="after")
    def _location_pair(self) -> SignalBody:
        if (self.lat is None) != (self.lon is None):
            missing = "lon" if self.lon is None else "lat"
            raise PydanticCustomError(
                "location_pair",
                "lat and lon come together or not at all ({field} is missing)",
                {"field": missing},
            )
        return self


class SignalBatchBody(Strict):
    signals: Annotated[list[SignalBody], Field(min_length=1, max_length=MAX_BATCH)]


class Accepted(Strict):
    accepted: int = Field(description="signals stored by this request")
    duplicates: int = Field(
        description="signals not stored again: their id was already stored for this "
        "subscription, or came earlier in the same request"
    )


def _signal_shape(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "signals" in value else "single"


OneOrManySignals = Annotated[
    Annotated[SignalBody, Tag("single")] | Annotated[SignalBatchBody, Tag("batch")],
    Discriminator(_signal_shape),
]
SIGNAL_BODY: TypeAdapter[SignalBody | SignalBatchBody] = TypeAdapter(OneOrManySignals)
_SINGLE_SIGNAL: TypeAdapter[SignalBody] = TypeAdapter(SignalBody)
_SIGNAL_BATCH: TypeAdapter[SignalBatchBody] = TypeAdapter(SignalBatchBody)


def parse_signals(raw: bytes) -> SignalBody | SignalBatchBody:
    """The body of ``POST /v1/signals``, exactly as ``SIGNAL_BODY.validate_json`` gives it.

    The discriminator is a Python function, so validating through ``SIGNAL_BODY`` first turns
    the whole JSON body into Python objects for it to look at (500 dicts for a full batch), then
    validates the JSON again. Here the raw bytes pick one model to try straight away: a batch
    must spell the key ``"signals"``, a single signal forbids that key. Whatever succeeds is what
    the discriminator would have chosen (a SignalBody has no "signals" key; a SignalBatchBody
    does), and a body that fails (or spells the key with escapes) is validated again through
    ``SIGNAL_BODY``, so errors are the same as ever. Measured: 2.4 -> 1.7 us for one signal,
    930 -> 690 us for 500.
    """
    adapter: TypeAdapter[Any] = _SIGNAL_BATCH if b'"signals"' in raw else _SINGLE_SIGNAL
    try:
        body: SignalBody | SignalBatchBody = adapter.validate_json(raw)
    except ValidationError:
        return SIGNAL_BODY.validate_json(raw)
    return body
