"""The SSRF policy of push endpoints: unit cases and generated IP-literal forms."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import AddressRefused, EndpointRefused
from service.settings import DEFAULT_PUSH_HOSTS
from service.webpush.endpoints import GuardedResolver, check_endpoint, is_public_address, origin

PUBLIC = list(DEFAULT_PUSH_HOSTS)
LOCAL = [*PUBLIC, "http://127.0.0.1:8089", "http://localhost"]


@pytest.mark.parametrize(
    ("url", "expected_origin"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc:def", "https://fcm.googleapis.com"),
        ("https://updates.push.services.mozilla.com/wpush/v2/gAAA", None),
        ("https://web.push.apple.com/QGz", "https://web.push.apple.com"),
        ("https://a.b.push.apple.com/x", "https://a.b.push.apple.com"),
        ("https://FCM.GoogleAPIs.com./fcm/send/x", "https://fcm.googleapis.com"),
        ("https://fcm.googleapis.com:443/x", "https://fcm.googleapis.com"),
    ],
)
def test_public_push_services_are_accepted(url: str, expected_origin: str | None) -> None:
    target = check_endpoint(url, PUBLIC)
    assert target.scheme == "https" and target.port == 443 and not target.explicit
    assert target.origin == (expected_origin or origin(url))


@pytest.mark.parametrize(
    "url",
    [
        "http://fcm.googleapis.com/fcm/send/x",  # plain http to a public service
        "https://push.apple.com/x",  # the wildcard matches subdomains only
        "https://evilpush.apple.com/x",
        "https://push.apple.com.evil.org/x",
        "https://fcm.googleapis.com:8443/x",  # patterns mean port 443
        "https://user:pw@fcm.googleapis.com/x",
        "https://fcm.googleapis.com@10.0.0.1/x",
        "https://fcm.googleapis.com/x#frag",
        "https://fcm.googleapis.com/ x",
        "https://fcm.googleapis.com\\@evil.org/",
        "ftp://fcm.googleapis.com/x",
        "javascript:alert(1)",
        "",
        "https://",
        "https://fcm.googleapis.com/" + "x" * 3000,
        "https://10.0.0.1/x",
        "https://[fd00::1]/x",
        "https://169.254.169.254/latest",
        "https://127.0.0.1/x",
        "http://127.0.0.1:9999/x",  # listed only with port 8089
        "http://[::ffff:127.0.0.1]:8089/x",
        "http://2130706433:8089/x",
        "http://0177.0.0.1:8089/x",
        "http://0x7f.0.0.1:8089/x",
        "http://0x7f000001:8089/x",
        "http://127.1:8089/x",
        "http://127.0.1:8089/x",
        "https://fcm.googleapis.com%2e/x",
    ],
)
def test_refused(url: str) -> None:
    with pytest.raises(EndpointRefused):
        check_endpoint(url, LOCAL)


def test_explicit_http_entries_allow_local_receivers() -> None:
    target = check_endpoint("http://127.0.0.1:8089/push/1", LOCAL)
    assert target.explicit and target.origin == "http://127.0.0.1:8089"
    assert target.ip == ipaddress.ip_address("127.0.0.1")
    # An entry without a port trusts the host on any port, and https to it as well.
    assert check_endpoint("http://localhost:5000/p", LOCAL).origin == "http://localhost:5000"
    assert check_endpoint("https://localhost/p", LOCAL).explicit
    assert check_endpoint("http://[::1]:80/p", ["http://[::1]"]).origin == "http://[::1]"


def test_public_ip_literals_need_an_exact_entry() -> None:
    assert check_endpoint("https://8.8.8.8/p", ["8.8.8.8"]).ip is not None
    with pytest.raises(EndpointRefused):
        check_endpoint("https://8.8.8.8/p", ["*.8.8.8", "*.8.8"])
    with pytest.raises(EndpointRefused):
        check_endpoint("https://10.0.0.1/p", ["10.0.0.1"])  # private needs http://


def test_endpoint_refused_is_a_value_error_with_a_message() -> None:
    with pytest.raises(ValueError, match="https") as info:
        check_endpoint("http://fcm.googleapis.com/x", ["http://localhost", *PUBLIC])
    assert isinstance(info.value, EndpointRefused) and info.value.message


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("17.57.144.10", True),
        ("2a00:1450:4001:82b::200a", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("169.254.169.254", False),
        ("169.254.1.1", False),
        ("224.0.0.251", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public
    assert is_public_address(ipaddress.ip_address(address)) is public


_PRIVATE_V4 = st.one_of(
    st.ip_addresses(v=4, network="127.0.0.0/8"),
    st.ip_addresses(v=4, network="10.0.0.0/8"),
    st.ip_addresses(v=4, network="192.168.0.0/16"),
    st.ip_addresses(v=4, network="169.254.0.0/16"),
    st.ip_addresses(v=4, network="100.64.0.0/10"),
)


def _spellings(address: ipaddress.IPv4Address, style: int) -> str:
    """Ways resolvers (inet_aton, WHATWG URL) accept to write an IPv4 address."""
    value = int(address)
    octets = address.packed
    return [
        str(value),
        hex(value),
        ".".join(f"0{b:o}" for b in octets),
        ".".join(hex(b) for b in octets),
        f"{octets[0]}.{value & 0xFFFFFF}",
        f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",
        f"[::ffff:{address}]",
        f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]",
    ][style]


@given(_PRIVATE_V4, st.integers(0, 7), st.sampled_from(["http", "https"]))
def test_private_addresses_are_refused_in_every_spelling(
    address: ipaddress.IPv4Address, style: int, scheme: str
) -> None:
    host = _spellings(address, style)
    with pytest.raises(EndpointRefused):
        check_endpoint(f"{scheme}://{host}/push/x", PUBLIC)
    # Non-canonical spellings stay refused even when the canonical address is listed.
    if host != str(address):
        with pytest.raises(EndpointRefused):
            check_endpoint(f"{scheme}://{host}/push/x", [f"http://{address}"])


@given(st.ip_addresses())
def test_literals_are_refused_unless_listed(address: ipaddress._BaseAddress) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    with pytest.raises(EndpointRefused):
        check_endpoint(f"https://{host}/x", PUBLIC)
    listed = check_endpoint(f"http://{host}/x", [f"http://{host}"])
    assert listed.ip == address and listed.explicit


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True))
def test_wildcard_matches_subdomains_only(label: str) -> None:
    assert check_endpoint(f"https://{label}.push.apple.com/x", PUBLIC).host.endswith(
        ".push.apple.com"
    )
    with pytest.raises(EndpointRefused):
        check_endpoint(f"https://{label}push.apple.com/x", PUBLIC)
    with pytest.raises(EndpointRefused):
        check_endpoint(f"https://push.apple.com.{label}.org/x", PUBLIC)


async def test_resolver_drops_private_addresses_unless_listed() -> None:
    guarded = GuardedResolver(PUBLIC)
    try:
        with pytest.raises(AddressRefused):
            await guarded.resolve("localhost", 443, socket.AF_UNSPEC)
    finally:
        await guarded.close()
    listed = GuardedResolver(["http://localhost"])
    try:
        results = await listed.resolve("localhost", 8080, socket.AF_INET)
        assert {r["host"] for r in results} == {"127.0.0.1"}
    finally:
        await listed.close()
