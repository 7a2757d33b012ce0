"""Which push endpoints momentcast may POST to: the SSRF policy of registration and sending.

A push endpoint is a URL chosen by whoever registers a subscription, and the sender POSTs to
it from inside the operator's network. So an endpoint must name a host matched by
``PUSH_HOSTS`` over https, and at connect time its addresses must be public. The only way to
reach plain http, IP literals or private addresses is an explicit ``http://HOST[:PORT]``
entry in ``PUSH_HOSTS`` (that is how tests and demos point at a local push receiver).

Registration calls :func:`check_endpoint` without resolving names (it must stay fast and must
not let clients make us query DNS at will); the sender calls it again for every send, and its
connections resolve through :class:`GuardedResolver`, which drops non-public addresses, and
connect to an address it returned (never to the name, which a second lookup could answer
differently).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import TypedDict
from urllib.parse import quote, urlsplit

from service.errors import AddressRefused, EndpointRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Real endpoints are a few hundred characters; a hard cap keeps the column and logs sane.
MAX_ENDPOINT_LENGTH = 2048

DEFAULT_PORTS = {"https": 443, "http": 80}

# Addresses the stdlib flags do not all cover on every Python version.
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_METADATA = ipaddress.IPv4Address("169.254.169.254")
# NAT64 (RFC 6052) forwards to the embedded IPv4 address, which may well be private.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# WHATWG URL parsing (and inet_aton) read a host whose last label is numeric as IPv4:
# 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 all mean 127.0.0.1 to some client somewhere.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# What a request target may carry as it is (RFC 3986 pchar, "/", "?" and "%" escapes).
_PATH_SAFE = "/?%:@!$&'()*+,;=-._~"
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]|\s")


@dataclass(frozen=True)
class EndpointTarget:
    """An endpoint that passed the policy, split into what the sender needs."""

    url: str
    scheme: str
    host: str
    port: int
    origin: str
    # The request target of the POST: the path and query, as given.
    path: str
    # Listed through an ``http://`` entry: plain http, IP literals and private addresses are
    # then allowed because the operator asked for exactly this host.
    explicit: bool
    ip: IPAddress | None


@dataclass(frozen=True)
class _Entry:
    host: str
    port: int | None
    wildcard: bool
    explicit: bool

    def matches(self, host: str, port: int, *, literal: bool = False) -> bool:
        if self.wildcard:
            # A pattern names DNS subdomains; "*.0.0.1" must not admit 127.0.0.1.
            if literal or not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        if self.port is not None:
            return port == self.port
        # An http:// entry without a port trusts the whole host (tests use random ports);
        # a plain pattern means the standard https port only.
        return self.explicit or port == DEFAULT_PORTS["https"]


def is_public_address(ip: IPAddress | str) -> bool:
    """True when ``ip`` is a globally routable unicast address (safe to connect to)."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        # Tunnelled and translated forms reach the IPv4 address inside them.
        if addr.ipv4_mapped is not None:
            return is_public_address(addr.ipv4_mapped)
        if addr.sixtofour is not None:
            return is_public_address(addr.sixtofour)
        if addr.teredo is not None:
            return is_public_address(addr.teredo[1])
        if addr in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    elif addr in _CGNAT or addr == _METADATA:
        return False
    return not (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    )


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(text)
    return host, port


@lru_cache(maxsize=64)
def _compile(push_hosts: tuple[str, ...]) -> tuple[_Entry, ...]:
    entries = []
    for raw in push_hosts:
        text = raw.strip().lower()
        explicit = text.startswith("http://")
        try:
            host, port = _split_host_port(text.removeprefix("http://"))
        except ValueError:
            continue  # settings validation reports malformed entries; never match them
        wildcard = host.startswith("*.")
        entries.append(
            _Entry(host.removeprefix("*.").rstrip("."), port, wildcard, explicit and not wildcard)
        )
    return tuple(entries)


def _normalise_host(host: str) -> str:
    """Lower-case ASCII form of a DNS name, or raise EndpointRefused."""
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise EndpointRefused(f"host {host!r} is not a valid domain name") from None
    ascii_host = ascii_host.rstrip(".")
    labels = ascii_host.split(".")
    if not ascii_host or not all(_LABEL.match(label) for label in labels):
        raise EndpointRefused(f"host {host!r} is not a valid domain name")
    return ascii_host


def _literal_address(host: str) -> IPAddress | None:
    """The address an IP-literal host denotes (None for a DNS name).

    Raises EndpointRefused for the numeric forms that are not canonical dotted quads, since
    clients disagree about what they mean and no push service uses them.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    if _NUMERIC_LABEL.match(last):
        raise EndpointRefused(f"host {host!r} is a numeric IP address form, which is not allowed")
    return None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default port omitted (the VAPID aud)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def check_endpoint(url: str, push_hosts: list[str]) -> EndpointTarget:
    """Accept ``url`` as a push endpoint under ``push_hosts``, or raise EndpointRefused."""
    if not isinstance(url, str) or not url:
        raise EndpointRefused("endpoint must be a non-empty URL")
    # The sender checks every send again; a subscriber's endpoint rarely changes, so cache
    # the verdicts (refusals are exceptions and are not cached).
    return _check_cached(url, tuple(push_hosts))


@lru_cache(maxsize=65536)
def _check_cached(url: str, push_hosts: tuple[str, ...]) -> EndpointTarget:
    if not url:
        raise EndpointRefused("endpoint must be a non-empty URL")
    if len(url) > MAX_ENDPOINT_LENGTH:
        raise EndpointRefused(f"endpoint is longer than {MAX_ENDPOINT_LENGTH} characters")
    # urlsplit silently strips some of these; a client and we could then disagree on the host.
    if _UNSAFE_CHARS.search(url):
        raise EndpointRefused("endpoint contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port_given = parts.port
    except ValueError:
        raise EndpointRefused("endpoint is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise EndpointRefused("endpoint must be an https:// URL")
    if "@" in parts.netloc:
        raise EndpointRefused("endpoint must not contain user information")
    if parts.fragment:
        raise EndpointRefused("endpoint must not contain a fragment")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise EndpointRefused("endpoint has no host")
    if "%" in raw_host:
        raise EndpointRefused("endpoint host must not be percent-encoded or scoped")
    port = port_given if port_given is not None else DEFAULT_PORTS[scheme]

    ip = _literal_address(raw_host)
    host = ip.compressed if ip is not None else _normalise_host(raw_host)
    entries = _compile(push_hosts)
    matched = [e for e in entries if e.matches(host, port, literal=ip is not None)]
    explicit = any(entry.explicit for entry in matched)
    if scheme != "https" and not explicit:
        raise EndpointRefused("endpoint must be an https:// URL")
    if not matched:
        raise EndpointRefused(f"host {host!r} (port {port}) is not an allowed push service")
    if ip is not None and not explicit and not is_public_address(ip):
        raise EndpointRefused(
            f"host {host!r} is a non-public address; only an http://{host} entry allows it"
        )
    return EndpointTarget(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        origin=origin(url),
        # Non-ASCII characters percent-encoded (as a browser would); the rest as given.
        path=quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _PATH_SAFE),
        explicit=explicit,
        ip=ip,
    )


def host_is_explicit(host: str, port: int, push_hosts: list[str]) -> bool:
    """True when an ``http://`` entry names ``host``: its private addresses may be used."""
    name = host.lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return any(
        entry.explicit and entry.matches(name, port, literal=":" in name or name[-1:].isdigit())
        for entry in _compile(tuple(push_hosts))
    )


class ResolveResult(TypedDict):
    """One address a host name resolved to (the fields of aiohttp's resolver results)."""

    hostname: str
    host: str
    port: int
    family: int
    proto: int
    flags: int


class GuardedResolver:
    """Resolves a host name (``getaddrinfo`` in the loop's thread pool) and drops non-public
    addresses.

    The check runs at connect time, after DNS, so an endpoint accepted at registration
    cannot later be pointed at an internal address by changing its DNS records; the sender's
    client connects to one of the addresses returned here, never to the name again. Hosts
    named by an ``http://`` entry of PUSH_HOSTS are exempt: the operator asked for them.
    """

    def __init__(self, push_hosts: list[str]) -> None:
        self._push_hosts = list(push_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=family, flags=socket.AI_ADDRCONFIG
        )
        results = [
            ResolveResult(
                hostname=host,
                host=str(address[0]),
                port=int(address[1]),
                family=fam,
                proto=proto,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for fam, _, proto, _, address in infos
            if fam in (socket.AF_INET, socket.AF_INET6)
        ]
        if host_is_explicit(host, port, self._push_hosts):
            return results
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise AddressRefused(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        """Nothing to release (the lookups run in the loop's default executor)."""
