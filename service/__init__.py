"""momentcast: self-hosted, location- and context-aware Web Push for micro-moments."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("momentcast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
