"""Run momentcast as a real process, the way operators do, and talk to it over HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


def run_benchmark(
    script: str, *args: str, database_url: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<script>`` run as a user runs it, with none of this session's MOMENTCAST_
    settings but MOMENTCAST_BENCH_DATABASE_URL; it must exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTCAST_")}
    env["MOMENTCAST_BENCH_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_ready(url: str, timeout: float = 60) -> str:
    """Poll /readyz until it answers 200 (a slow machine gets the whole timeout)."""
    deadline = time.monotonic() + timeout
    status, body = 0, ""
    while time.monotonic() < deadline:
        status, body = http_get(url + "/readyz")
        if status == 200:
            return body
        time.sleep(0.2)
    raise AssertionError(f"/readyz never answered 200: {status} {body}")
