"""Settings: defaults, .env, and one clear line per bad value."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import DEFAULT_PUSH_HOSTS, load_settings, unknown_settings, usable_cores


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MOMENTCAST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_documented_values() -> None:
    s = load_settings()
    assert s.database_url is None
    assert s.data_dir == Path(".momentcast")
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.signal_retention == timedelta(hours=24)
    assert s.push_hosts == list(DEFAULT_PUSH_HOSTS)
    assert s.vapid_subject.startswith("mailto:")


def test_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MOMENTCAST_PORT=9090\nMOMENTCAST_SIGNAL_RETENTION=2h\n")
    monkeypatch.setenv("MOMENTCAST_PUSH_HOSTS", "fcm.googleapis.com, http://127.0.0.1:9000")
    s = load_settings()
    assert s.port == 9090
    assert s.signal_retention == timedelta(hours=2)
    assert s.push_hosts == ["fcm.googleapis.com", "http://127.0.0.1:9000"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "eighty", "MOMENTCAST_PORT"),
        ("PORT", "70000", "MOMENTCAST_PORT: Input should be less than or equal to 65535"),
        ("SIGNAL_RETENTION", "forever", "MOMENTCAST_SIGNAL_RETENTION: expected a duration"),
        ("VAPID_SUBJECT", "mailto:ops@localhost", "Apple rejects"),
        ("VAPID_SUBJECT", "https://push.local", "Apple rejects"),
        ("VAPID_SUBJECT", "ops@example.com", "must start with mailto: or https://"),
        ("DATABASE_URL", "mysql://x", "MOMENTCAST_DATABASE_URL: must be a postgresql:// URL"),
        ("ADMIN_TOKEN", "short", "MOMENTCAST_ADMIN_TOKEN"),
        ("SECRET_KEY", "x" * 31, "MOMENTCAST_SECRET_KEY: String should have at least 32"),
        ("PUSH_HOSTS", "https://fcm.googleapis.com/x", "MOMENTCAST_PUSH_HOSTS"),
        ("LOG_LEVEL", "loud", "MOMENTCAST_LOG_LEVEL: must be one of"),
        ("LOG_FORMAT", "xml", "MOMENTCAST_LOG_FORMAT"),
        ("METRICS_PORT", "8080", "MOMENTCAST_METRICS_PORT: must differ from MOMENTCAST_PORT"),
        ("METRICS_PORT", "70000", "MOMENTCAST_METRICS_PORT"),
        ("WORKER_BATCH_SIZE", "0", "MOMENTCAST_WORKER_BATCH_SIZE"),
        ("PUBLIC_URL", "push.example.com", "MOMENTCAST_PUBLIC_URL: must be http(s)://host"),
        ("PUBLIC_URL", "ftp://push.example.com", "MOMENTCAST_PUBLIC_URL: must be http(s)://host"),
        ("PUBLIC_URL", "https://", "MOMENTCAST_PUBLIC_URL: must be http(s)://host"),
        ("PUBLIC_URL", "https://push.example.com/api", "MOMENTCAST_PUBLIC_URL: no path"),
        ("PUBLIC_URL", "https://push.example.com?x=1", "MOMENTCAST_PUBLIC_URL: no path"),
        ("PUBLIC_URL", "https://push.example.com:99999", "MOMENTCAST_PUBLIC_URL"),
        ("CORS_ORIGINS", "shop.example.com", "MOMENTCAST_CORS_ORIGINS: 'shop.example.com'"),
        ("CORS_ORIGINS", "https://a.example, b.example", "MOMENTCAST_CORS_ORIGINS: 'b.example'"),
        ("CORS_ORIGINS", "https://shop.example.com/app", "MOMENTCAST_CORS_ORIGINS"),
        ("RULES_POLL_INTERVAL", "0", "MOMENTCAST_RULES_POLL_INTERVAL: must be more than 0"),
        ("WORKER_POLL_INTERVAL", "0s", "MOMENTCAST_WORKER_POLL_INTERVAL: must be more than 0"),
        ("WORKER_LEASE", "0", "MOMENTCAST_WORKER_LEASE: must be more than 0"),
        ("PUSH_CONNECT_TIMEOUT", "0", "MOMENTCAST_PUSH_CONNECT_TIMEOUT: must be more than 0"),
        ("PUSH_READ_TIMEOUT", "0", "MOMENTCAST_PUSH_READ_TIMEOUT: must be more than 0"),
        ("BODY_READ_TIMEOUT", "0", "MOMENTCAST_BODY_READ_TIMEOUT: must be more than 0"),
        ("MAP_TILES", "tile.example.org/{z}/{x}/{y}.png", "MOMENTCAST_MAP_TILES: must be an"),
        ("MAP_TILES", "ftp://tile.example.org/{z}/{x}/{y}", "MOMENTCAST_MAP_TILES: must be an"),
        ("MAP_TILES", "https://tile.example.org/{z}/{x}.png", "lacks {y}"),
        ("MAP_TILES", "https://tile.example.org/{z}/{x}/{y}?key={key}", "unknown placeholder"),
        ("MAP_TILES", "https://a{s}.example.org/{z}/{x}/{y}", "only {s} as the host's first"),
        ("MAP_TILES", "https://a.example.org;img-src */{z}/{x}/{y}", "no user, spaces or quotes"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("MOMENTCAST_" + name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_pool_min_above_max_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTCAST_DB_POOL_MIN", "5")
    monkeypatch.setenv("MOMENTCAST_DB_POOL_MAX", "2")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "MOMENTCAST_DB_POOL_MAX: must be at least MOMENTCAST_DB_POOL_MIN (5)"
    )


def test_log_format_and_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.log_format, s.metrics_port) == ("text", None)
    monkeypatch.setenv("MOMENTCAST_LOG_FORMAT", "JSON")
    monkeypatch.setenv("MOMENTCAST_METRICS_PORT", "9100")
    s = load_settings()
    assert (s.log_format, s.metrics_port) == ("json", 9100)
    monkeypatch.setenv("MOMENTCAST_METRICS_PORT", "")  # an empty value means unset
    assert load_settings().metrics_port is None


def test_durations_that_may_be_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deleting processed signals at once is legitimate.
    monkeypatch.setenv("MOMENTCAST_SIGNAL_RETENTION", "0")
    assert load_settings().signal_retention == timedelta(0)


def test_the_shutdown_grace_covers_a_send_and_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    # The default covers the default send (5 s connect + 15 s read) and the outcome's write.
    assert s.shutdown_grace >= s.push_connect_timeout + s.push_read_timeout + timedelta(seconds=5)
    monkeypatch.setenv("MOMENTCAST_PUSH_READ_TIMEOUT", "2s")
    monkeypatch.setenv("MOMENTCAST_PUSH_CONNECT_TIMEOUT", "1s")
    monkeypatch.setenv("MOMENTCAST_SHUTDOWN_GRACE", "8s")
    assert load_settings().shutdown_grace == timedelta(seconds=8)
    monkeypatch.setenv("MOMENTCAST_SHUTDOWN_GRACE", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(
        "MOMENTCAST_SHUTDOWN_GRACE: 0s is shorter than one push send and its outcome's write"
    )
    assert str(info.value).endswith("set at least 8s")


def test_map_tiles_and_their_csp_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import tile_source

    assert load_settings().map_tiles is None
    monkeypatch.setenv("MOMENTCAST_MAP_TILES", " ")  # an empty value means unset
    assert load_settings().map_tiles is None
    template = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    monkeypatch.setenv("MOMENTCAST_MAP_TILES", template)
    assert load_settings().map_tiles == template
    assert tile_source(template) == "https://tile.openstreetmap.org"
    assert tile_source("https://{s}.Tiles.example.org/{z}/{x}/{y}{r}.png") == (
        "https://*.tiles.example.org"
    )
    assert tile_source("http://127.0.0.1:8081/{z}/{x}/{y}.png") == "http://127.0.0.1:8081"


def test_public_url_and_cors_origins_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTCAST_PUBLIC_URL", "HTTPS://Push.Example.com:8443/")
    monkeypatch.setenv(
        "MOMENTCAST_CORS_ORIGINS", "https://Shop.example.com/, http://localhost:3000"
    )
    s = load_settings()
    assert s.base_url == "https://push.example.com:8443"
    assert s.cors_origins == ["https://shop.example.com", "http://localhost:3000"]
    monkeypatch.setenv("MOMENTCAST_CORS_ORIGINS", "*")
    assert load_settings().cors_origins == ["*"]


def test_unknown_names_are_warned_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "MOMENTCAST_SECRETKEY=x\nMOMENTCAST_PORT=9090\nOTHER_APP_SETTING=1\n"
        "momentcast_log_level=DEBUG\nMOMENTCAST_PORTT=1\n"
    )
    monkeypatch.setenv("MOMENTCAST_PORTT", "1")
    monkeypatch.setenv("MOMENTCAST_WORKER_LEASES", "5s")
    monkeypatch.setenv("MOMENTCAST_QWERTY", "1")
    monkeypatch.setenv("MOMENTCAST_TEST_DATABASE_URL", "postgresql://x/y")  # the test suite's
    assert unknown_settings() == [
        "MOMENTCAST_PORTT is not a setting; did you mean MOMENTCAST_PORT?",
        "MOMENTCAST_QWERTY is not a setting (docs/configuration.md lists them all)",
        "MOMENTCAST_WORKER_LEASES is not a setting; did you mean MOMENTCAST_WORKER_LEASE?",
        "MOMENTCAST_SECRETKEY (in .env) is not a setting; did you mean MOMENTCAST_SECRET_KEY?",
    ]


def test_no_warning_for_known_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MOMENTCAST_PORT=9090\n")
    monkeypatch.setenv("MOMENTCAST_MIGRATIONS_DIR", str(tmp_path))
    monkeypatch.setenv("momentcast_data_dir", str(tmp_path))
    assert unknown_settings() == []


@pytest.mark.parametrize(
    ("subject", "hosts", "warned"),
    [
        (None, None, True),
        ("mailto:ops@example.org", None, True),
        ("https://www.example.net/contact", None, True),
        ("mailto:ops@shop.example.de", None, False),
        # Only the local test push service: nobody refuses the example subject.
        (None, "http://127.0.0.1", False),
    ],
)
def test_example_vapid_subject_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, subject: str | None, hosts: str | None, warned: bool
) -> None:
    if subject is not None:
        monkeypatch.setenv("MOMENTCAST_VAPID_SUBJECT", subject)
    if hosts is not None:
        monkeypatch.setenv("MOMENTCAST_PUSH_HOSTS", hosts)
    warning = load_settings().vapid_subject_warning()
    if warned:
        assert warning is not None
        assert "MOMENTCAST_VAPID_SUBJECT" in warning and "Apple" in warning
    else:
        assert warning is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        (" 20 m ", timedelta(minutes=20)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("90", timedelta(seconds=90)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
    ],
)
def test_durations_take_units_or_plain_seconds(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: timedelta
) -> None:
    monkeypatch.setenv("MOMENTCAST_SIGNAL_RETENTION", value)
    assert load_settings().signal_retention == expected


@pytest.mark.parametrize("value", ["1.5", "-5", "5 minutes", "2x", "h", "²"])
def test_durations_refuse_other_text(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MOMENTCAST_SIGNAL_RETENTION", value)
    with pytest.raises(ConfigError, match="MOMENTCAST_SIGNAL_RETENTION: expected a duration"):
        load_settings()


def test_cli_reports_one_line_without_traceback(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MOMENTCAST_PORT": "eighty",
        "MOMENTCAST_DATA_DIR": str(tmp_path / "d"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("momentcast: configuration error: MOMENTCAST_PORT:")
    assert "Traceback" not in proc.stderr


def test_every_setting_is_documented_with_its_default() -> None:
    from service.settings import Settings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`MOMENTCAST_{name.upper()}`" in doc, name


def test_processes_is_a_number_or_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().processes == 1
    for value, expected in (("4", 4), (" AUTO ", "auto"), ("", 1), ("1024", 1024)):
        monkeypatch.setenv("MOMENTCAST_PROCESSES", value)
        assert load_settings().processes == expected, value
    monkeypatch.setenv("MOMENTCAST_PROCESSES", "auto")
    assert load_settings().process_count == usable_cores() >= 1
    for bad in ("0", "1025", "2.5", "many"):
        monkeypatch.setenv("MOMENTCAST_PROCESSES", bad)
        with pytest.raises(ConfigError, match=r"^MOMENTCAST_PROCESSES: must be a whole number"):
            load_settings()


def test_each_child_has_its_own_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.supervisor import metrics_ports

    assert metrics_ports(load_settings(), 3) is None
    monkeypatch.setenv("MOMENTCAST_METRICS_PORT", "9101")
    assert metrics_ports(load_settings(), 3) == [9101, 9102, 9103]
    monkeypatch.setenv("MOMENTCAST_METRICS_PORT", "0")
    assert metrics_ports(load_settings(), 2) == [0, 0]
    monkeypatch.setenv("MOMENTCAST_METRICS_PORT", "8079")
    with pytest.raises(ConfigError, match=r"^MOMENTCAST_METRICS_PORT: .* holds MOMENTCAST_PORT"):
        metrics_ports(load_settings(), 2)
    monkeypatch.setenv("MOMENTCAST_METRICS_PORT", "65535")
    with pytest.raises(ConfigError, match=r"beyond 65535"):
        metrics_ports(load_settings(), 2)
