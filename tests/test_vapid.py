"""VAPID keys: generated once into DATA_DIR, reused, configurable, and printed by the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service.errors import ConfigError
from service.webpush import vapid
from service.webpush.base64url import b64url_decode


def test_generated_once_and_reused(tmp_path: Path) -> None:
    first = vapid.load_or_create(tmp_path, None)
    second = vapid.load_or_create(tmp_path, None)
    assert vapid.public_key_b64url(first) == vapid.public_key_b64url(second)
    mode = stat.S_IMODE(os.stat(tmp_path / vapid.KEY_FILE).st_mode)
    assert mode == 0o600


def test_configured_key_wins_and_round_trips(tmp_path: Path) -> None:
    key = vapid.generate_private_key()
    raw = vapid.private_key_to_b64url(key)
    loaded = vapid.load_or_create(tmp_path, raw)
    assert vapid.public_key_b64url(loaded) == vapid.public_key_b64url(key)
    assert not (tmp_path / vapid.KEY_FILE).exists()
    pem = vapid.private_key_to_pem(key).decode()
    assert vapid.public_key_b64url(vapid.parse_private_key(pem)) == vapid.public_key_b64url(key)


def test_wrong_curve_and_garbage_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="MOMENTCAST_VAPID_PRIVATE_KEY"):
        vapid.parse_private_key("not-a-key")
    other = ec.generate_private_key(ec.SECP384R1())
    pem = vapid.private_key_to_pem(other).decode()
    with pytest.raises(ConfigError, match="P-256"):
        vapid.parse_private_key(pem)


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "MOMENTCAST_DATA_DIR": str(tmp_path / "data"), **extra}
    return subprocess.run(
        [sys.executable, "-m", "service", "vapid", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_cli_prints_the_same_key_until_regenerated(tmp_path: Path) -> None:
    first = _cli(tmp_path)
    assert first.returncode == 0, first.stderr
    public = first.stdout.strip()
    assert len(b64url_decode(public)) == 65
    assert _cli(tmp_path).stdout.strip() == public
    regenerated = _cli(tmp_path, "--generate")
    assert regenerated.returncode == 0, regenerated.stderr
    assert regenerated.stdout.strip() != public
    assert _cli(tmp_path).stdout.strip() == regenerated.stdout.strip()


def test_private_prints_one_line_that_works_as_the_setting(tmp_path: Path) -> None:
    # The docs' recipe: MOMENTCAST_VAPID_PRIVATE_KEY=$(momentcast vapid --private).
    public = _cli(tmp_path).stdout.strip()
    printed = _cli(tmp_path, "--private")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 1, printed.stdout
    other_host = tmp_path / "other"
    other_host.mkdir()
    again = _cli(other_host, MOMENTCAST_VAPID_PRIVATE_KEY=lines[0])
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == public
    assert not (other_host / "data" / vapid.KEY_FILE).exists()


def test_event_tokens_are_bound_to_their_delivery_and_survive_any_input() -> None:
    from service.tokens import check_event_token, event_token

    key = b"k" * 32
    token = event_token(key, 7)
    assert check_event_token(key, 7, token)
    assert not check_event_token(key, 8, token)
    assert not check_event_token(b"other" * 8, 7, token)
    assert not check_event_token(key, 7, "é" * len(token))
    assert not check_event_token(key, 7, "\udcff")
