"""Engagement that keeps permission: pure arithmetic over interaction histories (no I/O)."""
