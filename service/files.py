"""Secrets kept on disk under DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only, atomically, without clobbering a racer's file.

    Two processes starting at once (``serve`` and ``worker``) must end up with the same secret,
    so the file is created exclusively and the loser reads the winner's.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def read_or_create_secret(path: Path, make: bytes) -> bytes:
    """The secret stored at ``path``; ``make`` is stored first when there is none."""
    if not path.exists():
        write_secret_file(path, make)
    return path.read_bytes()
