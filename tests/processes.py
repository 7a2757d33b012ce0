"""Run momentcast as a real process, the way operators do, and talk to it over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LISTEN = re.compile(r"momentcast listening on (http://\S+)")


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[str]
    stdout_lines: list[str] = field(default_factory=list)
    url: str | None = None

    def wait_banner(self, timeout: float = 60) -> None:
        """Read stdout until the banner's last line (the admin token location)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise AssertionError(f"exited with {self.proc.returncode}: {self.stderr()}")
                continue
            self.stdout_lines.append(line.rstrip("\n"))
            match = _LISTEN.search(line)
            if match:
                self.url = match.group(1)
            if line.startswith("admin token:"):
                return
        raise AssertionError("no banner within timeout: " + "\n".join(self.stdout_lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def start(
    args: Sequence[str],
    env: dict[str, str],
    *,
    executable: Sequence[str] = (sys.executable, "-m", "service"),
    cwd: Path | None = None,
) -> ServiceProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}
    full_env.update(env)
    proc = subprocess.Popen(
        [*executable, *args],
        env=full_env,
        cwd=cwd or REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return ServiceProcess(proc)
