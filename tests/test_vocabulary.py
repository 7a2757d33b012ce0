"""The vocabulary agrees with the migrated schema, the push record and the rule-file schema."""

from __future__ import annotations

import os
import re

import asyncpg
import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service import vocabulary as v
from service.rules.models import json_schema

# Every CHECK of the form `column IN (...)` in the migrations, by (table, column).
EXPECTED_CHECK_LISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("signals", "moment"): v.MOMENTS,
    ("deliveries", "urgency"): v.URGENCIES,
    ("deliveries", "status"): v.DELIVERY_STATUSES,
    ("events", "type"): v.EVENT_TYPES,
    ("subscriptions", "status"): v.SUBSCRIPTION_STATUSES,
    ("campaigns", "status"): v.CAMPAIGN_STATUSES,
    ("campaigns", "late"): v.LATE_CHOICES,
    ("campaigns", "urgency"): v.URGENCIES,
    ("campaign_suppressions", "reason"): v.CAMPAIGN_SUPPRESSION_REASONS,
    ("campaign_experiments", "metric"): v.EXPERIMENT_METRICS,
    ("deployment_keys", "name"): v.DEPLOYMENT_KEYS,
}
# pg_get_constraintdef spells `x IN ('a', 'b')` as `(x = ANY (ARRAY['a'::text, 'b'::text]))`.
_ARRAY_ITEM = re.compile(r"'((?:[^']|'')*)'::text")


async def test_check_lists_equal_the_vocabulary(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        """
        SELECT c.conrelid::regclass::text AS tbl, a.attname AS col,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        JOIN pg_namespace n ON n.oid = c.connamespace AND n.nspname = current_schema()
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'c' AND cardinality(c.conkey) = 1
        """
    )
    found = {
        (row["tbl"], row["col"]): tuple(
            item.replace("''", "'") for item in _ARRAY_ITEM.findall(row["def"])
        )
        for row in rows
        if "ANY (ARRAY[" in row["def"]
    }
    assert found == EXPECTED_CHECK_LISTS


async def test_default_urgency_is_the_columns(pool: asyncpg.Pool) -> None:
    default = await pool.fetchval(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'deliveries' "
        "AND column_name = 'urgency'"
    )
    assert default == f"'{v.DEFAULT_URGENCY}'::text"


def test_payload_limit_fills_exactly_one_push_record() -> None:
    receiver = ec.generate_private_key(ec.SECP256R1())
    body = http_ece.encrypt(
        b"x" * v.MAX_PAYLOAD_BYTES,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=receiver.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
        auth_secret=os.urandom(16),
        version="aes128gcm",
        rs=v.PUSH_RECORD_BYTES,
    )
    assert len(body) == v.PUSH_RECORD_BYTES == 4096
    assert v.MAX_PAYLOAD_BYTES == 3993


def test_push_topic_pattern() -> None:
    assert v.PUSH_TOPIC.match("lunch-offer_2")
    assert v.PUSH_TOPIC.match("x" * 32)
    for bad in ("", "x" * 33, "lunch offer", "déjeuner", "a/b", "a="):
        assert not v.PUSH_TOPIC.match(bad)


def test_rule_schema_enums_come_from_the_vocabulary() -> None:
    defs = json_schema()["$defs"]
    assert tuple(json_schema()["properties"]["trigger"]["enum"]) == v.TRIGGERS
    assert tuple(defs["Message"]["properties"]["urgency"]["enum"]) == v.URGENCIES
    assert defs["Message"]["properties"]["topic"]["pattern"] == v.PUSH_TOPIC_PATTERN
    moments = defs["Who"]["properties"]["moments"]["anyOf"][0]["items"]["enum"]
    assert tuple(moments) == v.MOMENTS
    days = defs["When"]["properties"]["days"]["anyOf"][0]["items"]["enum"]
    assert tuple(days) == v.DAYS
