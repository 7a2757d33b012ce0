"""`momentcast rules preview`: every variant's notification, rendered like a decision."""

from __future__ import annotations

import io
import json
from pathlib import Path

from service.cli.rules import main
from tests.rules.rulekit import POLICY, write_dir

REPO = Path(__file__).resolve().parents[2]

OFFER = """\
priority: 2
where: {places: places/spots.geojson, filter: {category: cafe}, radius_m: 100}
message:
  title: "Coffee at {place.name}"
  body: "{attributes.tier} members: {distance_m} m to go"
  url: "https://example.com/{place.id}"
  locales:
    de: {title: "Kaffee im {place.name}"}
  actions:
    - {action: map, title: "Show the way", url: "https://maps.example.com/{place.id}"}
    - {action: menu, title: "Menu"}
variants:
  - {name: plain, weight: 3}
  - {name: bold, weight: 1, message: {title: "{place.name}: coffee now!"}}
"""

CONTEXT = """\
priority: 1
who: {context: {page: {exists: true}}}
message: {title: "Read about {context.page}", body: "For {attributes.tier}"}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["preview", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_preview_prints_every_variant_as_the_phone_shows_it(tmp_path: Path) -> None:
    rules = write_dir(tmp_path / "rules", {"offer.yaml": OFFER}, POLICY)
    profile = tmp_path / "me.yaml"
    profile.write_text("topics: [food]\nattributes: {tier: gold}\n")
    code, text, err = run("offer", "--rules", str(rules), "--profile", str(profile))
    assert code == 0, err
    assert text == (
        "offer @ berlin (Berlin), profile replay, locale none\n"
        "variant plain (weight 3):\n"
        "  title:   Coffee at Berlin\n"
        "  body:    gold members: 0 m to go\n"
        "  url:     https://example.com/berlin\n"
        "  action:  [map] Show the way -> https://maps.example.com/berlin\n"
        "  action:  [menu] Menu -> https://example.com/berlin\n"
        "  locale:  default\n"
        "variant bold (weight 1):\n"
        "  title:   Berlin: coffee now!\n"
        "  body:    gold members: 0 m to go\n"
        "  url:     https://example.com/berlin\n"
        "  action:  [map] Show the way -> https://maps.example.com/berlin\n"
        "  action:  [menu] Menu -> https://example.com/berlin\n"
        "  locale:  default\n"
    )


def test_preview_json_with_a_place_and_a_locale(tmp_path: Path) -> None:
    rules = write_dir(tmp_path / "rules", {"offer.yaml": OFFER}, POLICY)
    code, text, err = run(
        str(rules / "offer.yaml"), "--place", "tokyo", "--locale", "de-AT", "--json"
    )
    assert code == 0, err
    doc = json.loads(text)
    assert doc["rule"] == "offer" and doc["place"] == "tokyo" and doc["locale"] == "de-AT"
    plain, bold = doc["variants"]
    assert plain["variant"] == "plain" and plain["weight"] == 3
    assert plain["notification"] == {
        "title": "Kaffee im Tokyo",
        "body": " members: 0 m to go",  # no profile: the attribute renders empty
        "url": "https://example.com/tokyo",
        "actions": [
            {"action": "map", "title": "Show the way", "url": "https://maps.example.com/tokyo"},
            {"action": "menu", "title": "Menu", "url": "https://example.com/tokyo"},
        ],
        "locale": "de",
    }
    # The variant's own title wins over the message's German one (variant > message+locale).
    assert bold["notification"]["title"] == "Tokyo: coffee now!"


def test_preview_of_a_location_free_rule_and_the_errors(tmp_path: Path) -> None:
    rules = write_dir(tmp_path / "rules", {"offer.yaml": OFFER, "read.yaml": CONTEXT}, POLICY)
    code, text, _ = run("read", "--rules", str(rules))
    assert code == 0
    assert text.splitlines()[:3] == [
        "read no places, profile preview, locale none",
        "variant default (weight 1):",
        "  title:   Read about ",  # no signal, no context
    ]
    code, _, err = run("read", "--rules", str(rules), "--place", "berlin")
    assert code == 1 and "rule read has no places" in err
    code, _, err = run("offer", "--rules", str(rules), "--place", "nowhere")
    assert code == 1 and "rule offer has no place 'nowhere'; its places: berlin" in err
    code, _, err = run("lunch", "--rules", str(rules))
    assert code == 1 and "no rule 'lunch'" in err and "offer, read" in err


def test_preview_of_the_shipped_rules() -> None:
    code, text, err = run("lunch-nearby", "--rules", str(REPO / "rules"), "--place", "rest-02")
    assert code == 0, err
    assert "variant a (weight 50):\n  title:   Lunch at Curry am Hackeschen Markt?" in text
    assert "variant b (weight 50):\n  title:   Hungry? Curry am Hackeschen Markt" in text
