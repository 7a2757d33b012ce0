"""The words momentcast's parts share, written once.

The API's models, the rule-file models and their JSON Schemas, the engine, the push layer and
the statistics take them from here; the CHECK constraints of the migrations list the same
values (tests/test_vocabulary.py compares them with the migrated schema). Each list is a
``Literal`` type, for the type checker and pydantic, and a tuple of the same values in the
order that code relies on. Pure data: importing this module loads nothing else.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

# A signal's declared intent; the order is the engine's bit order for moment conditions.
Moment = Literal["know", "go", "do", "buy"]
MOMENTS: Final[tuple[Moment, ...]] = get_args(Moment)

# Local weekdays of a rule's `when.days`, in the order of datetime.weekday().
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: Final[tuple[Day, ...]] = get_args(Day)

# When a matching rule fires: on entering a place, once after dwelling there, on every signal
# inside it, or on every matching signal (the trigger of location-free rules).
Trigger = Literal["enter", "dwell", "inside", "signal"]
TRIGGERS: Final[tuple[Trigger, ...]] = get_args(Trigger)
PLACE_TRIGGERS: Final[tuple[Trigger, ...]] = ("enter", "dwell", "inside")

# A rule's mode: live rules send; shadow rules are evaluated on live traffic and their
# would-be sends are only counted (`shadow_sent`), never sent and never counted toward caps.
RuleMode = Literal["live", "shadow"]
RULE_MODES: Final[tuple[RuleMode, ...]] = get_args(RuleMode)

# How a rule with variants picks each push's variant: by the weights, the same for a subscriber
# every time (fixed), or by Thompson sampling over the last 30 days' interactions (adaptive).
Allocation = Literal["fixed", "adaptive"]
ALLOCATIONS: Final[tuple[Allocation, ...]] = get_args(Allocation)
# How far back adaptive allocation (and /v1/stats' share and prob_best) counts interactions
# per sent push.
ADAPTIVE_WINDOW_DAYS: Final = 30

# Operators of `who.attributes` and `who.context` conditions; a plain value means eq.
Operator = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists"]
OPERATORS: Final[tuple[Operator, ...]] = get_args(Operator)

# RFC 8030 section 5.3 Urgency header values.
Urgency = Literal["very-low", "low", "normal", "high"]
URGENCIES: Final[tuple[Urgency, ...]] = get_args(Urgency)
DEFAULT_URGENCY: Final[Urgency] = "normal"

# RFC 8030 section 5.4: a Topic is at most 32 characters of the URL-safe base64 alphabet.
PUSH_TOPIC_PATTERN: Final = r"^[A-Za-z0-9_-]{1,32}$"
PUSH_TOPIC: Final = re.compile(PUSH_TOPIC_PATTERN)

# RFC 8291: a push message body is one 4096-byte aes128gcm record. Its header takes 86 bytes
# (salt 16, record size 4, key id length 1, a 65-byte key id) and the record a padding
# delimiter and a 16-byte tag, which leaves 4096 - 86 - 17 = 3993 bytes of plaintext.
PUSH_RECORD_BYTES: Final = 4096
MAX_PAYLOAD_BYTES: Final = PUSH_RECORD_BYTES - 86 - 17

# Engagement a service worker or page reports for a delivery.
EventType = Literal["shown", "clicked", "dismissed", "converted"]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)

# A delivery in the outbox: 'pending' until the sender settles it.
DeliveryStatus = Literal["pending", "sent", "failed", "gone", "expired", "cancelled"]
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)

# A subscription is 'gone' once its push service answered 404 or 410.
SubscriptionStatus = Literal["active", "gone"]
SUBSCRIPTION_STATUSES: Final[tuple[SubscriptionStatus, ...]] = get_args(SubscriptionStatus)

# Why a rule did not match a signal. The conditions are checked in this order, with the
# attribute conditions after `topics` and the context conditions after `speed`, and the first
# that fails is reported; those two name their key (`attributes.tier`, `context.weather`).
# The place reasons come from the distance and the fix's accuracy, or from a signal without a
# location meeting a rule with places.
ConditionReason = Literal["campaign", "day", "daypart", "topics", "moment", "speed"]
CONDITION_REASONS: Final[tuple[ConditionReason, ...]] = get_args(ConditionReason)
ATTRIBUTES_REASON_PREFIX: Final = "attributes."
CONTEXT_REASON_PREFIX: Final = "context."
PlaceReason = Literal["no_place", "accuracy", "no_location"]
PLACE_REASONS: Final[tuple[PlaceReason, ...]] = get_args(PlaceReason)

# Why a fired match was not sent, in the order the engine checks them. `fatigued`: the
# subscriber rests after the policy's `fatigue.after` sent pushes in a row without an
# interaction (rules/policy.yaml `fatigue`; docs/rules.md, Fatigue guard).
SuppressionReason = Literal[
    "gone",
    "paused",
    "fatigued",
    "quiet_hours",
    "global_cap",
    "min_gap",
    "rule_cap",
    "place_cooldown",
]
SUPPRESSION_REASONS: Final[tuple[SuppressionReason, ...]] = get_args(SuppressionReason)
FATIGUED: Final[SuppressionReason] = "fatigued"
# What counts as an interaction with a push (the fatigue guard's reset, the health's rate).
INTERACTIONS: Final[tuple[EventType, ...]] = ("clicked", "converted")

# What the simulator says about a rule that matched but did not send: a suppression reason, or
# one of these (the signal was stale, a dwell or enter did not fire, another rule won, or a
# shadow rule would have sent).
UnsentReason = Literal[
    SuppressionReason, "stale", "dwell_pending", "not_triggered", "outranked", "shadow"
]
UNSENT_REASONS: Final[tuple[UnsentReason, ...]] = get_args(UnsentReason)

# A campaign: waiting for its moment, fanning out or sending, done, or cancelled.
CampaignStatus = Literal["scheduled", "sending", "done", "cancelled"]
CAMPAIGN_STATUSES: Final[tuple[CampaignStatus, ...]] = get_args(CampaignStatus)

# Why an audience member got no push of a campaign: the local moment had passed when the
# campaign was created (late: skip) - for the rest of an experiment's audience, when its
# winner was decided -, the fatigue guard, or the policy's caps (as for rules).
CampaignSuppressionReason = Literal["missed_local_time", "fatigued", "global_cap", "min_gap"]
CAMPAIGN_SUPPRESSION_REASONS: Final[tuple[CampaignSuppressionReason, ...]] = get_args(
    CampaignSuppressionReason
)
# What a campaign does where its local moment had passed when it was created.
Late = Literal["skip", "send"]
LATE_CHOICES: Final[tuple[Late, ...]] = get_args(Late)
# What a campaign experiment's winner is chosen on: sent pushes with a click (a click link
# counts), or sent pushes with a conversion.
ExperimentMetric = Literal["clicked", "converted"]
EXPERIMENT_METRICS: Final[tuple[ExperimentMetric, ...]] = get_args(ExperimentMetric)
# The phases of a campaign experiment: the test share gets the variants, then the rest the
# winner.
ExperimentPhase = Literal["testing", "decided"]

# Names of the per (rule, variant) counters the worker bumps and the statistics read: matches,
# and suppressions as the prefix followed by the reason.
MATCHED_COUNTER: Final = "matched"
SUPPRESSED_COUNTER_PREFIX: Final = "suppressed:"
# What a shadow rule would have sent (it sends nothing), and the signals within reach of a
# rule that did not match it, as the prefix followed by the first failed condition (variant "").
SHADOW_SENT_COUNTER: Final = "shadow_sent"
NOT_MATCHED_COUNTER_PREFIX: Final = "not_matched:"
# A rule matched a signal and stayed silent: "silent:not_triggered" (an enter rule, already
# inside) or "silent:stale"; per rule (variant ""), like not_matched.
SILENT_COUNTER_PREFIX: Final = "silent:"

# The keys whose fingerprints the database keeps for the deployment (migration 0014): every
# process of one deployment must use the same VAPID key pair and SECRET_KEY.
DeploymentKey = Literal["vapid_public_key", "secret_key"]
DEPLOYMENT_KEYS: Final[tuple[DeploymentKey, ...]] = get_args(DeploymentKey)
