"""A component that dies takes its process down with a non-zero exit, so a supervisor
restarts it, and a log line names the component."""

from __future__ import annotations

import sys

import asyncpg
import pytest

from tests.processes import start

pytestmark = pytest.mark.slow

# The real `momentcast worker` entry point, with its worker component replaced by one that
# fails (or returns) after start-up: what a bug or an unhandled error in a loop looks like.
_SCRIPT = """
import asyncio, sys
from service import worker

async def broken(ctx, stop):
    await asyncio.sleep(0.5)
    if sys.argv[1] == "raise":
        raise RuntimeError("boom")

worker.run = broken
from service.cli import main
sys.exit(main(["worker", "--no-sender"]))
"""


@pytest.mark.parametrize("how", ["raise", "return"])
def test_a_failed_component_exits_non_zero_naming_it(
    database_url: str, clean_db: asyncpg.Pool, how: str
) -> None:
    proc = start(
        [how],
        {"MOMENTCAST_DATABASE_URL": database_url, "MOMENTCAST_WORKER_POLL_INTERVAL": "1s"},
        executable=(sys.executable, "-c", _SCRIPT),
    )
    code = proc.proc.wait(timeout=60)
    err = proc.stderr()
    assert code == 1, err
    assert "component worker" in err
    assert "momentcast: error: component worker " in err
    # The operator's start and stop lines: version, components, database kind; the reason.
    assert "started: fanout, rules-watch, worker; database external" in err
    assert "momentcast stopping: component worker " in err
