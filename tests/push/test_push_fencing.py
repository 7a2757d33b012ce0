"""Fenced outcome records (issue 20): a sender records an outcome only for a claim that is still
its own. Two claims of one row, at the store: the first sender's lease runs out, a second sender
claims the row, and the first sender's late record changes nothing."""

from __future__ import annotations

from service.context import Context
from service.store.deliveries import DeliveryOutcome
from tests.factories import insert_delivery, insert_subscription
from tests.push.conftest import delivery


async def _lease_runs_out(ctx: Context, delivery_id: int) -> None:
    """What the clock does to a sender that stalls past its lease, minus the waiting."""
    await ctx.pool.execute(
        "UPDATE deliveries SET claimed_until = now() - interval '1 second' WHERE id = $1",
        delivery_id,
    )


async def test_a_sender_past_its_lease_cannot_release_or_overwrite_the_next_claim(
    ctx: Context,
) -> None:
    sub = await insert_subscription(ctx.pool, endpoint="https://fcm.googleapis.com/fcm/send/a")
    delivery_id = await insert_delivery(ctx.pool, sub)
    [first] = (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows
    assert (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows == []  # leased
    await _lease_runs_out(ctx, delivery_id)
    [second] = (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows
    assert second.id == first.id == delivery_id and second.lease != first.lease
    claimed = await delivery(ctx.pool, delivery_id)

    # The first sender, late: neither its release nor a final outcome takes.
    release = DeliveryOutcome(delivery_id, "pending", lease=first.lease)
    assert await ctx.store.record_outcomes([release]) == 0
    failed = DeliveryOutcome(delivery_id, "failed", 1, 400, "HTTP 400", lease=first.lease)
    assert await ctx.store.record_outcomes([failed]) == 0
    row = await delivery(ctx.pool, delivery_id)
    assert dict(row) == dict(claimed)  # still the second sender's claim, untouched
    assert (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows == []

    # The second sender's outcome takes, once.
    sent = DeliveryOutcome(delivery_id, "sent", 1, 201, lease=second.lease)
    assert await ctx.store.record_outcomes([sent]) == 1
    row = await delivery(ctx.pool, delivery_id)
    assert (row["status"], row["attempts"], row["last_status"]) == ("sent", 1, 201)
    assert row["claimed_until"] is None and row["claim_token"] is None
    assert await ctx.store.record_outcomes([sent]) == 0  # a repeated write changes nothing


async def test_fencing_holds_in_the_transaction_of_a_gone_answer(ctx: Context) -> None:
    # A 404/410 outcome (and a batch with origin pauses) is recorded in a transaction of its
    # own: the token is checked there too, row by row.
    sub = await insert_subscription(ctx.pool, endpoint="https://fcm.googleapis.com/fcm/send/b")
    stale_id = await insert_delivery(ctx.pool, sub)
    [stale] = (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows
    await _lease_runs_out(ctx, stale_id)
    [taken] = (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows
    own_id = await insert_delivery(ctx.pool, sub)
    [own] = (await ctx.store.claim_deliveries(limit=10, lease_s=60)).rows
    outcomes = [
        DeliveryOutcome(stale_id, "sent", 1, 201, lease=stale.lease),
        DeliveryOutcome(own_id, "gone", 1, 410, "HTTP 410", gone_subscription=sub, lease=own.lease),
    ]
    assert await ctx.store.record_outcomes(outcomes) == 1
    assert (await delivery(ctx.pool, own_id))["status"] == "gone"
    # The stale 'sent' did not take; the gone subscription cancels what else was pending.
    row = await delivery(ctx.pool, stale_id)
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "cancelled",
        0,
        "subscription gone",
    )
    assert taken.lease != stale.lease
