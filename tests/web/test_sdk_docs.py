"""The web developer's docs say what the code does: every error code the SDK gives is in
docs/clients.md (and in the package's types), and docs/api.md's signal example is accepted
by a live server as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.api.conftest import register
from tests.conftest import LiveApi

REPO = Path(__file__).resolve().parents[2]
SDK_SOURCE = REPO / "service" / "static" / "momentcast.js"
CLIENTS_MD = REPO / "docs" / "clients.md"
API_MD = REPO / "docs" / "api.md"
TYPES = REPO / "sdk" / "momentcast.d.cts"


def sdk_error_codes() -> set[str]:
    """Every code momentcast.js gives a MomentcastError of its own: the literal first
    arguments, the geolocation codes it maps to, and the `http-<status>` fallback."""
    source = SDK_SOURCE.read_text()
    codes = set(re.findall(r'MomentcastError\(\s*"([a-z][a-z-]*)"', source))
    codes |= set(re.findall(r'"(location-[a-z]+)"', source))
    if re.search(r"`http-\$\{", source):
        codes.add("http-<status>")
    return codes


def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def test_every_sdk_error_code_is_documented_and_typed() -> None:
    codes = sdk_error_codes()
    # The extraction finds the codes the SDK is known to throw (so it cannot find nothing).
    assert {
        "config",
        "unsupported",
        "permission-denied",
        "subscribe-failed",
        "not-subscribed",
        "network",
        "location-denied",
        "location-unavailable",
        "location-timeout",
        "location-error",
        "http-<status>",
    } <= codes
    errors = section(CLIENTS_MD.read_text(), "## Errors")
    documented = set(re.findall(r"^\| `([^`]+)` \|", errors, flags=re.MULTILINE))
    assert codes - documented == set(), "codes missing from docs/clients.md's Errors table"
    typed = set(re.findall(r'^\s+\| "([a-z-]+)";?$', TYPES.read_text(), flags=re.MULTILINE))
    assert typed == codes - {"http-<status>"}, "sdk/momentcast.d.cts ErrorCode differs"


async def test_api_md_signal_example_is_accepted_as_written(api: LiveApi) -> None:
    """The curl example of POST /v1/signals, its body sent as is: the answer is the one
    printed under it (a fixed `at` there is refused once it is a day old)."""
    signals = section(API_MD.read_text(), "## Signals: `POST /v1/signals`")
    block = re.search(r"```sh\n(curl -X POST \"\$API/v1/signals\".*?)```", signals, re.DOTALL)
    assert block is not None, "no curl example under 'Signals'"
    body = re.search(r"-d '(.*?)'", block.group(1), re.DOTALL)
    answer = re.search(r"^# (\d{3}) (\{.*\})$", block.group(1), re.MULTILINE)
    assert body is not None and answer is not None, block.group(1)
    device = await register(api)
    async with api.http.post(
        api.url + "/v1/signals",
        data=body.group(1),
        headers={"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"},
    ) as resp:
        assert (resp.status, await resp.json()) == (
            int(answer.group(1)),
            json.loads(answer.group(2)),
        ), body.group(1)
