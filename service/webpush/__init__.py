"""Web Push: what momentcast sends and to where.

- :mod:`.message`: the Declarative Web Push message of one delivery, its click links and its
  RFC 8030 request headers (TTL, Urgency, Topic);
- :mod:`.encryption`: the RFC 8291 aes128gcm body for one subscriber;
- :mod:`.vapid`: the RFC 8292 key pair and the per-origin token signer;
- :mod:`.endpoints`: which push endpoints may be reached (the SSRF policy and the resolver),
  shared by registration and the sender;
- :mod:`.base64url`: the unpadded base64url that all of them (and browsers) speak.

Nothing here touches the database; the sender (:mod:`service.push`) puts the parts together.
"""
