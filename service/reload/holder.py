"""The active rule set, swapped atomically on a successful reload only."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from pathlib import Path

from service.errors import RuleLoadError
from service.rules.loader import load_ruleset
from service.rules.places import is_places_file
from service.rules.ruleset import Ruleset


class RulesHolder:
    """Holds the rule set in use. `reload()` loads the directory again and
    swaps only a set without errors, so a half-edited file never takes a
    working set down; the errors stay in `last_errors` for GET /v1/rules."""

    def __init__(self, path: str | Path, load_now: bool = True) -> None:
        self.path = Path(path)
        self.current: Ruleset | None = None
        self.last_errors: list[str] = []
        self.last_warnings: list[str] = []
        self.loaded_at: datetime | None = None
        self.failed_reloads = 0
        self._fingerprint = ""
        self._lock = threading.Lock()
        if load_now:
            self.reload()

    def reload(self) -> list[str]:
        """Load the directory; returns its errors (empty: swapped in)."""
        with self._lock:
            fingerprint = self.fingerprint()
            try:
                ruleset = load_ruleset(self.path)
            except Exception as exc:  # load_ruleset raises RuleLoadError only; a bug stays here
                if isinstance(exc, RuleLoadError):
                    errors, warnings = list(exc.errors), list(exc.warnings)
                else:
                    errors = [f"{self.path}:1: cannot be loaded ({type(exc).__name__}: {exc})"]
                    warnings = []
                self.last_errors = errors
                self.last_warnings = warnings
                self.failed_reloads += 1
                self._fingerprint = fingerprint
                return self.last_errors
            # One reference assignment: readers see the old or the new set.
            self.current = ruleset
            self.loaded_at = ruleset.loaded_at or datetime.now(UTC)
            self.last_errors = []
            self.last_warnings = list(ruleset.warnings)
            self._fingerprint = fingerprint
            return []

    def is_empty(self) -> bool:
        """No folder, or none of the files a rule set is made of: a fresh install."""
        return not self.path.is_dir() or not any(True for _ in self._files())

    def start_empty(self) -> None:
        """Serve with no rules (readiness holds) until files appear; the poll loads them."""
        from service.rules.models import PolicyModel

        with self._lock:
            self.current = Ruleset(
                rules=[],
                policy=PolicyModel.model_validate({}),
                places=[],
                version="empty",
                root=str(self.path),
            )
            self.loaded_at = datetime.now(UTC)
            self.last_errors = []
            self.last_warnings = []
            self._fingerprint = self.fingerprint()

    def _files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        # Any kind of file, not only regular ones: the loader refuses a pipe named x.yaml
        # (reading it would block), and the change detector must see it to report that.
        return sorted(
            p
            for p in self.path.rglob("*")
            if (p.suffix in (".yaml", ".yml") or is_places_file(p)) and not p.is_dir()
        )

    def fingerprint(self) -> str:
        """Cheap change detector for polling: names, sizes and mtimes."""
        h = hashlib.sha256()
        try:
            for p in self._files():
                try:
                    st = p.stat()
                except OSError:  # removed since the listing (an editor's swap file)
                    continue
                h.update(f"{p}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError as exc:  # the folder itself unreadable: a stable value, no crash
            h.update(f"error {exc}".encode())
        return h.hexdigest()

    def changed(self) -> bool:
        return self.fingerprint() != self._fingerprint

    def poll(self) -> list[str] | None:
        """Reload when files changed since the last attempt; None if unchanged."""
        if not self.changed():
            return None
        return self.reload()
