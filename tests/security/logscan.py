"""Log privacy check: no device, admin or event token and no coordinate in any log line.

As a pytest plugin (``pytest_plugins = ["tests.security.logscan"]`` in tests/conftest.py) it
watches the whole suite: every token the service issues or is shown is remembered, every log
record of the test process is kept, and the session fails if a line holds one of them or
anything that looks like a coordinate. The fault suite feeds its subprocesses' stderr through
:func:`leaks` the same way.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator

import pytest

from service import tokens

# A latitude/longitude as devices send them: at least four decimals. Timings in logs are
# printed with one or two ("12.3ms", "pausing 1.5s").
COORDINATE = re.compile(r"(?<![\w.])-?\d{1,3}\.\d{4,}(?![\w.])")
MIN_SECRET = 16


class Watch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.secrets: set[str] = set()
        self._lock2 = threading.Lock()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record is not ours to judge here
            return
        with self._lock2:
            self.lines.append(text)

    def remember(self, secret: str) -> None:
        if isinstance(secret, str) and len(secret) >= MIN_SECRET:
            with self._lock2:
                self.secrets.add(secret)


def leaks(lines: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """The lines that contain a known secret or a coordinate-like number."""
    secret_list = [s for s in secrets if len(s) >= MIN_SECRET]
    found = []
    for line in lines:
        if COORDINATE.search(line) or any(s in line for s in secret_list):
            found.append(line)
    return found


@pytest.fixture(scope="session", autouse=True)
def log_privacy() -> Iterator[Watch]:
    """Collect every log line and every token for the session; fail it on a leak."""
    watch = Watch()
    root = logging.getLogger()
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    root.addHandler(watch)
    new_token, hash_token, event_token = tokens.new_token, tokens.hash_token, tokens.event_token

    def new_token_w() -> str:
        token = new_token()
        watch.remember(token)
        return token

    def hash_token_w(token: str) -> bytes:
        watch.remember(token)
        return hash_token(token)

    def event_token_w(secret_key: bytes, delivery_id: int) -> str:
        token = event_token(secret_key, delivery_id)
        watch.remember(token)
        return token

    tokens.new_token = new_token_w
    tokens.hash_token = hash_token_w
    tokens.event_token = event_token_w
    try:
        yield watch
    finally:
        tokens.new_token, tokens.hash_token = new_token, hash_token
        tokens.event_token = event_token
        root.removeHandler(watch)
        root.setLevel(old_level)
    found = leaks(watch.lines, watch.secrets)
    assert not found, f"{len(found)} log lines leak a token or coordinates:\n" + "\n".join(
        found[:20]
    )
