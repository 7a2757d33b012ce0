"""momentcast: self-hosted, location- and context-aware Web Push for micro-moments."""
