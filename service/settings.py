"""Runtime settings: environment variables with the ``MOMENTCAST_`` prefix, or a ``.env`` file.

Every field here is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.durations import parse_setting_duration
from service.errors import ConfigError

ENV_PREFIX = "MOMENTCAST_"

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


SettingDuration = Annotated[timedelta, BeforeValidator(parse_setting_duration)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
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
    rules_poll_interval: SettingDuration = timedelta(seconds=2)
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:push-admin@momentcast.example.com"
    admin_token: str | None = Field(default=None, min_length=16)
    secret_key: str | None = Field(default=None, min_length=32)
    push_hosts: CsvList = Field(default_factory=lambda: list(DEFAULT_PUSH_HOSTS))
    cors_origins: CsvList = Field(default_factory=list)
    signal_retention: SettingDuration = timedelta(hours=24)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    body_read_timeout: SettingDuration = timedelta(seconds=30)
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    workers: int = Field(default=1, ge=0, le=64)
    worker_batch_size: int = Field(default=500, ge=1, le=100_000)
    worker_poll_interval: SettingDuration = timedelta(seconds=1)
    worker_lease: SettingDuration = timedelta(seconds=60)
    sender_concurrency: int = Field(default=64, ge=1, le=10_000)
    sender_max_attempts: int = Field(default=8, ge=1, le=100)
    push_connect_timeout: SettingDuration = timedelta(seconds=5)
    push_read_timeout: SettingDuration = timedelta(seconds=15)
    shutdown_grace: SettingDuration = timedelta(seconds=10)
    signal_rate_burst: int = Field(default=60, ge=1)
    signal_rate_per_second: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"

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
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"


def check_vapid_subject(value: str) -> None:
    """Reject subjects Apple's push service refuses (it answers 403 BadJwtToken to them)."""
    if value.startswith("mailto:"):
        address = value.removeprefix("mailto:")
        if "@" not in address:
            raise ValueError("a mailto: subject needs an address, e.g. mailto:ops@example.com")
        host = address.rsplit("@", 1)[1]
    elif value.startswith("https://"):
        host = urlsplit(value).hostname or ""
    else:
        raise ValueError("must start with mailto: or https:// (RFC 8292)")
    host = host.lower().rstrip(".")
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


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation failures into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None
