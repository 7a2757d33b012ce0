"""The outbox's consumer: sends due deliveries to the browsers' push services.

- :mod:`service.push.sender`: the send loop (lanes, leases, recording outcomes);
- :mod:`service.push.client`: its HTTP/1.1 client (keep-alive pools per origin, the SSRF
  guard at connect time, timeouts);
- :mod:`service.push.retry`: what a push service's answer means, how long to wait, and an
  origin's 429 pause as every sender shares it (pure);
- :mod:`service.push.failures`: one log line per origin and failure class a minute;
- :mod:`service.push.metrics`: the push metrics.

The message, its encryption (RFC 8291), VAPID (RFC 8292) and the endpoint guard (the SSRF
policy and the resolver, shared with registration) are in :mod:`service.webpush`.
"""

from __future__ import annotations

from service.push.sender import Sender, run

__all__ = ["Sender", "run"]
