"""Runtime settings: environment variables with the ``MOMENTCAST_`` prefix, or a ``.env`` file.

Every field here is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.durations import parse_setting_duration
from service.errors import ConfigError

ENV_PREFIX = "MOMENTCAST_"
ENV_FILE = ".env"
# MOMENTCAST_* names read by the test suite and the benchmarks, not by the service.
OTHER_NAMES = ("TEST_DATABASE_URL", "BENCH_DATABASE_URL")
# RFC 2606 example domains: push services may refuse a VAPID subject there (Apple does).
EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# What SHUTDOWN_GRACE must leave, after the longest send (connect + read timeout), for
# recording its outcome: a stop that cuts a POST could send that push twice.
OUTCOME_WRITE_BUDGET = timedelta(seconds=5)

DEFAULT_PUSH_HOSTS = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
)


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _more_than_zero(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be more than 0 (0 would make a loop spin or every wait time out)")
    return value


SettingDuration = Annotated[timedelta, BeforeValidator(parse_setting_duration)]
# Poll intervals, leases and timeouts: zero would make a loop spin or every wait fail.
PositiveDuration = Annotated[
    timedelta, BeforeValidator(parse_setting_duration), AfterValidator(_more_than_zero)
]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]

# `serve --processes`: more children than this is a typo, not a host.
MAX_PROCESSES = 1024
AUTO: Literal["auto"] = "auto"


def parse_processes(value: Any) -> int | Literal["auto"]:
    """PROCESSES (or `serve --processes`): a whole number from 1 to MAX_PROCESSES, or
    ``auto`` (one per usable core, see :func:`usable_cores`); ValueError says what is wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip().lower()
        if text == AUTO:
            return AUTO
        if text == "":  # MOMENTCAST_PROCESSES= (compose's unset ${VAR}): the default
            return 1
        try:
            number = int(text)
        except ValueError:
            number = 0
    if not 1 <= number <= MAX_PROCESSES:
        raise ValueError(f"must be a whole number from 1 to {MAX_PROCESSES} or auto, not {value!r}")
    return number


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's cpuset, taskset),
    which ``auto`` starts one process for; a CPU quota (docker's --cpus) is not counted."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    database_url: str | None = None
    data_dir: Path = Path(".momentcast")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    rules_dir: Path = Path("rules")
    rules_poll_interval: PositiveDuration = timedelta(seconds=2)
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:push-admin@momentcast.example.com"
    admin_token: str | None = Field(default=None, min_length=16)
    # Signs event tokens; every process of one deployment needs the same (tokens.py).
    secret_key: str | None = Field(default=None, min_length=32)
    push_hosts: CsvList = Field(default_factory=lambda: list(DEFAULT_PUSH_HOSTS))
    cors_origins: CsvList = Field(default_factory=list)
    signal_retention: SettingDuration = timedelta(hours=24)
    # Deliveries, events and suppressions older than this are rolled up into daily counts.
    delivery_retention: SettingDuration = timedelta(days=90)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    body_read_timeout: PositiveDuration = timedelta(seconds=30)
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    # A statement, a connection attempt or the wait for a pooled connection that takes longer
    # fails (the connection is dropped, the work retried): a half-open connection is noticed.
    db_timeout: PositiveDuration = timedelta(seconds=20)
    workers: int = Field(default=1, ge=0, le=64)
    # `serve` only: children that each run the API, a worker and a sender (service/supervisor).
    processes: Annotated[int | Literal["auto"], BeforeValidator(parse_processes)] = 1
    worker_batch_size: int = Field(default=500, ge=1, le=100_000)
    worker_poll_interval: PositiveDuration = timedelta(seconds=1)
    worker_lease: PositiveDuration = timedelta(seconds=60)
    # After a claim that did not fill its batch, the worker and the sender wait until this
    # long after it began before they claim again, so that what arrives meanwhile shares one
    # batch (docs/performance.md, Coalescing). 0: claim on every wake-up.
    batch_linger_ms: int = Field(default=20, ge=0, le=1000)
    # The same for the group commit of signals: every 202 waits for its commit.
    ingest_linger_ms: int = Field(default=5, ge=0, le=1000)
    sender_concurrency: int = Field(default=64, ge=1, le=10_000)
    sender_max_attempts: int = Field(default=8, ge=1, le=100)
    push_connect_timeout: PositiveDuration = timedelta(seconds=5)
    push_read_timeout: PositiveDuration = timedelta(seconds=15)
    # TEST AND STAGING ONLY: a PEM bundle of CA certificates the sender trusts for push
    # endpoints besides the system store, so that a push service on a self-signed certificate
    # (the test push service, a staging receiver) can be reached over https. Real push
    # services have publicly trusted certificates and never need it.
    push_ca_file: Path | None = None
    # Covers one whole send and its outcome's write (see _check_shutdown_grace).
    shutdown_grace: SettingDuration = timedelta(seconds=30)
    signal_rate_burst: int = Field(default=60, ge=1)
    signal_rate_per_second: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    migrations_dir: Path | None = None
    # The dashboard's basemap: a tile URL template; unset, no basemap and nothing fetched.
    map_tiles: str | None = None

    @field_validator("vapid_subject")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        check_vapid_subject(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        parts = urlsplit(value.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be http(s)://host[:port], e.g. https://push.example.com, not {value!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"no path, query or fragment in {value!r}: momentcast's routes start at the "
                "host's root (https://push.example.com)"
            )
        return _origin(parts, value)

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for entry in value:
            if entry == "*":
                origins.append(entry)
                continue
            if not _SCHEME.match(entry):
                raise ValueError(
                    f"{entry!r} has no scheme; an origin is scheme://host[:port], "
                    "e.g. https://shop.example.com"
                )
            parts = urlsplit(entry)
            if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(
                    f"{entry!r} is not an origin: scheme://host[:port] without a path, "
                    "e.g. https://shop.example.com"
                )
            origins.append(_origin(parts, entry))
        return origins

    @field_validator("db_pool_max")
    @classmethod
    def _check_pool(cls, value: int, info: ValidationInfo) -> int:
        smallest = info.data.get("db_pool_min")
        if smallest is not None and value < smallest:
            raise ValueError(f"must be at least {ENV_PREFIX}DB_POOL_MIN ({smallest})")
        return value

    @field_validator("shutdown_grace")
    @classmethod
    def _check_shutdown_grace(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        connect = info.data.get("push_connect_timeout")
        read = info.data.get("push_read_timeout")
        if connect is None or read is None:  # those are wrong themselves, and said so
            return value
        needed = connect + read + OUTCOME_WRITE_BUDGET
        if value < needed:
            raise ValueError(
                f"{_seconds(value)} is shorter than one push send and its outcome's write "
                f"({ENV_PREFIX}PUSH_CONNECT_TIMEOUT {_seconds(connect)} + "
                f"{ENV_PREFIX}PUSH_READ_TIMEOUT {_seconds(read)} + "
                f"{_seconds(OUTCOME_WRITE_BUDGET)}), so a stop could cut a push in flight and "
                f"send it twice; set at least {_seconds(needed)}"
            )
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_metrics_port(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("metrics_port")
    @classmethod
    def _check_metrics_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        port = info.data.get("port")
        if value is not None and value != 0 and value == port:
            raise ValueError(f"must differ from {ENV_PREFIX}PORT ({port})")
        return value

    @field_validator("migrations_dir")
    @classmethod
    def _check_migrations_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "0001_init.sql").is_file():
            raise ValueError(f"{value} holds no 0001_init.sql")
        return value

    @field_validator("push_ca_file", mode="before")
    @classmethod
    def _empty_push_ca_file(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("push_ca_file")
    @classmethod
    def _check_push_ca_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            ssl.create_default_context(cafile=str(value))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"{value} is not a readable PEM file of CA certificates: {exc}"
            ) from None
        return value

    @field_validator("map_tiles")
    @classmethod
    def _check_map_tiles(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        tile_source(value.strip())
        return value.strip()

    @field_validator("push_hosts")
    @classmethod
    def _check_push_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            host = entry.removeprefix("http://")
            if not host or "/" in host or " " in host:
                raise ValueError(f"{entry!r} is not a host pattern (example: *.push.apple.com)")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @property
    def base_url(self) -> str:
        """Where clients reach this service (events_url in push payloads)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):  # noqa: S104 - formatting, not binding
            host = "localhost"
        return f"http://{host}:{self.port}"

    @property
    def process_count(self) -> int:
        """PROCESSES as a number: ``auto`` is :func:`usable_cores`."""
        return usable_cores() if self.processes == AUTO else int(self.processes)

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    def vapid_subject_warning(self) -> str | None:
        """A warning when the VAPID subject is an example address and public push services
        may be reached: Apple refuses such subjects (the default is one, to be replaced)."""
        host = _subject_host(self.vapid_subject)
        example = any(host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS)
        public = any(not entry.startswith("http://") for entry in self.push_hosts)
        if not (example and public):
            return None
        return (
            f"{ENV_PREFIX}VAPID_SUBJECT is {self.vapid_subject!r}, an example address: "
            "Apple's push service refuses it (403 BadJwtToken); set a mailto: or https: "
            "contact you read"
        )


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _origin(parts: SplitResult, value: str) -> str:
    """scheme://host[:port], lower-cased, without a default port: how browsers spell it."""
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


_TILE_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TILE_NEEDED = ("z", "x", "y")
_TILE_KNOWN = (*_TILE_NEEDED, "s", "r")


def tile_source(template: str) -> str:
    """The CSP source of a tile URL template (https://{s}.tile.example.org/{z}/{x}/{y}.png ->
    https://*.tile.example.org), or ValueError saying what is wrong with it."""
    example = "e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    parts = urlsplit(template)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s):// tile URL template, {example}, not {template!r}")
    found = _TILE_PLACEHOLDER.findall(template)
    missing = [name for name in _TILE_NEEDED if name not in found]
    if missing:
        names = ", ".join("{" + name + "}" for name in missing)
        raise ValueError(f"{template!r} lacks {names}; {example}")
    unknown = sorted({name for name in found if name not in _TILE_KNOWN})
    if unknown:
        names = ", ".join("{" + name + "}" for name in unknown)
        raise ValueError(
            f"{template!r}: unknown placeholder {names} (known: {{z}} {{x}} {{y}} {{s}} {{r}})"
        )
    host = parts.netloc
    if "@" in host or any(c in host for c in " ;,'\""):
        raise ValueError(f"{template!r}: the host may hold no user, spaces or quotes")
    if "{" in host:
        # {s}: Leaflet's subdomains (a, b, c), as the first label of the host only.
        first, _, rest = host.partition(".")
        if first != "{s}" or "{" in rest or not rest:
            raise ValueError(
                f"{template!r}: only {{s}} as the host's first label, "
                "e.g. https://{s}.tile.example.org/{z}/{x}/{y}.png"
            )
        host = "*." + rest
    return f"{parts.scheme.lower()}://{host.lower()}"


def _subject_host(value: str) -> str:
    if value.startswith("mailto:"):
        host = value.removeprefix("mailto:").rsplit("@", 1)[-1]
    else:
        host = urlsplit(value).hostname or ""
    return host.lower().rstrip(".")


def check_vapid_subject(value: str) -> None:
    """Reject subjects Apple's push service refuses (it answers 403 BadJwtToken to them)."""
    if value.startswith("mailto:"):
        if "@" not in value:
            raise ValueError("a mailto: subject needs an address, e.g. mailto:ops@example.com")
    elif not value.startswith("https://"):
        raise ValueError("must start with mailto: or https:// (RFC 8292)")
    host = _subject_host(value)
    if (
        not host
        or host == "localhost"
        or host.endswith((".localhost", ".local", ".invalid", ".test"))
        or "." not in host
    ):
        raise ValueError(f"host {host!r} is not a public domain; Apple rejects such VAPID subjects")


def _describe(error: ErrorDetails) -> str:
    loc = error.get("loc") or ()
    name = ENV_PREFIX + str(loc[0]).upper() if loc else ENV_PREFIX + "?"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{name}: {message}"


def unknown_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(ENV_FILE)
) -> list[str]:
    """A warning for each ``MOMENTCAST_*`` name in the environment or ``.env`` that is no
    setting (a typo is otherwise silently ignored), with the closest setting's name."""
    fields = [name.upper() for name in Settings.model_fields]
    known = set(fields) | set(OTHER_NAMES)
    env = os.environ if environ is None else environ
    seen: set[str] = set()
    warnings = []
    candidates = [(name, "") for name in sorted(env)]
    if env_file is not None and env_file.is_file():
        candidates += [(name, " (in .env)") for name in dotenv_values(env_file)]
    for name, where in candidates:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in seen:
            continue
        seen.add(upper)
        rest = upper.removeprefix(ENV_PREFIX)
        if rest in known:
            continue
        close = difflib.get_close_matches(rest, fields, n=1)
        hint = (
            f"; did you mean {ENV_PREFIX}{close[0]}?"
            if close
            else " (docs/configuration.md lists them all)"
        )
        warnings.append(f"{upper}{where} is not a setting{hint}")
    return warnings


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation failures into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
