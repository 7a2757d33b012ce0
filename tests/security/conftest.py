"""Fixtures of the security suite.

The log-privacy watch of :mod:`tests.security.logscan` covers this directory; listed in
tests/conftest.py as a plugin it covers the whole suite.
"""

from __future__ import annotations

from tests.api.conftest import api_with
from tests.security.logscan import log_privacy

__all__ = ["api_with", "log_privacy"]
