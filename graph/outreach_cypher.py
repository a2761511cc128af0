"""Every Cypher statement of outreach (templates, plans, the outbox, suppressions), as named constants.

Outreach lives beside the programme and the customers it addresses, so "who was asked, on whose behalf, and why
not" is a graph question a marketer can ask in Cypher:

    (:Template {id, purpose, channel, segment, locale, subject, body, version, updated_at, updated_by})
    (:Outreach {id, name, campaign_id, status, created_at, started_at, json})-[:FOR]->(:Campaign)
                                                                   the whole `Outreach` as JSON, read back as is
    (:OutboxMessage {key, outreach_id, step_id, person_key, customer_id, channel, kind, variant_id, status,
                     reason, detail, not_before, attempts, lease_until, created_at, updated_at, sent_at,
                     provider_id, to_address})-[:OF]->(:Outreach)
    (:OutboxMessage)-[:TO]->(:Customer)              when the person key is `customer:<id>` of a stored customer
    (:OutboxMessage)-[:ON_BEHALF_OF]->(:Customer)    an invitation's advocate (`customer_id` names someone else)
    (:Suppression {person_key, channel_key, channel, reason, at})
                                                     `channel_key` is the channel, or `*` for every channel

A friend who is not a customer has no node of their own: their messages and suppressions carry the keyed hash
`email:<hash>` as `person_key`, which is what caps and refusals count by. Edges are drawn when both ends exist
at the time of writing; the `*_id` and `person_key` properties are what the store itself reads.

Locks: `LOCK_MESSAGE` writes to the message node (`SET m._lock = true REMOVE m._lock`, leaving nothing behind),
which takes its write lock until the transaction ends; its state is read by a later statement, so two workers
claiming one message serialise and the second sees the first's claim.
"""

from __future__ import annotations

from typing import Final

from graph.cypher import _at_us, _datetime

FOR: Final = "FOR"
OF: Final = "OF"
TO: Final = "TO"
ON_BEHALF_OF: Final = "ON_BEHALF_OF"
ALL_CHANNELS: Final = "*"
"""The `channel_key` of a suppression of every channel (a global unsubscribe)."""

OUTREACH_LABELS: Final[tuple[str, ...]] = ("Template", "Outreach", "OutboxMessage", "Suppression")

# --- schema ----------------------------------------------------------------------------------------------------
OUTREACH_SCHEMA: Final[tuple[str, ...]] = (
    "CREATE CONSTRAINT template_id_unique IF NOT EXISTS FOR (t:Template) REQUIRE t.id IS UNIQUE",
    "CREATE CONSTRAINT outreach_id_unique IF NOT EXISTS FOR (o:Outreach) REQUIRE o.id IS UNIQUE",
    "CREATE CONSTRAINT outbox_message_key_unique IF NOT EXISTS FOR (m:OutboxMessage) REQUIRE m.key IS UNIQUE",
    "CREATE CONSTRAINT suppression_person_channel_unique IF NOT EXISTS "
    "FOR (s:Suppression) REQUIRE (s.person_key, s.channel_key) IS UNIQUE",
    # Listing by purpose and age; the outbox by plan, by person (erasure), by due time per status.
    "CREATE INDEX template_purpose IF NOT EXISTS FOR (t:Template) ON (t.purpose)",
    "CREATE INDEX outreach_created_at IF NOT EXISTS FOR (o:Outreach) ON (o.created_at)",
    "CREATE INDEX outbox_message_outreach_id IF NOT EXISTS FOR (m:OutboxMessage) ON (m.outreach_id)",
    "CREATE INDEX outbox_message_person_key IF NOT EXISTS FOR (m:OutboxMessage) ON (m.person_key)",
    "CREATE INDEX outbox_message_customer_id IF NOT EXISTS FOR (m:OutboxMessage) ON (m.customer_id)",
    "CREATE INDEX outbox_message_status_not_before IF NOT EXISTS FOR (m:OutboxMessage) ON (m.status, m.not_before)",
    "CREATE INDEX outbox_message_status_lease_until IF NOT EXISTS FOR (m:OutboxMessage) ON (m.status, m.lease_until)",
    "CREATE INDEX suppression_person_key IF NOT EXISTS FOR (s:Suppression) ON (s.person_key)",
)
OUTREACH_SCHEMA_NAMES: Final[tuple[str, ...]] = tuple(statement.split()[2] for statement in OUTREACH_SCHEMA)


def _us(at: str) -> str:
    return _at_us.format(at=at)


# --- templates -------------------------------------------------------------------------------------------------
_template_fields = (
    "{id: t.id, purpose: t.purpose, channel: t.channel, segment: t.segment, locale: t.locale, subject: t.subject, "
    f"body: t.body, version: t.version, updated_at: {_us('t.updated_at')}, updated_by: t.updated_by}}"
)

MERGE_TEMPLATE: Final = f"""
MERGE (t:Template {{id: $id}})
SET t.purpose = $purpose, t.channel = $channel, t.segment = $segment, t.locale = $locale, t.subject = $subject,
    t.body = $body, t.version = $version, t.updated_at = {_datetime("$updated_at_us")}, t.updated_by = $updated_by
"""
GET_TEMPLATE: Final = f"MATCH (t:Template {{id: $id}}) RETURN {_template_fields} AS row"
LIST_TEMPLATES: Final = f"""
MATCH (t:Template) WHERE $purpose IS NULL OR t.purpose = $purpose
RETURN {_template_fields} AS row ORDER BY t.id
"""
DELETE_TEMPLATE: Final = "MATCH (t:Template {id: $id}) DETACH DELETE t RETURN count(*) AS n"

# --- outreach plans --------------------------------------------------------------------------------------------
MERGE_OUTREACH: Final = f"""
MATCH (c:Campaign {{id: $campaign_id}})
MERGE (o:Outreach {{id: $id}})
SET o.name = $name, o.campaign_id = $campaign_id, o.status = $status, o.created_at = {_datetime("$created_at_us")},
    o.started_at = {_datetime("$started_at_us")}, o.json = $json
WITH o, c
CALL (o, c) {{
    MATCH (o)-[old:{FOR}]->(other:Campaign) WHERE other <> c
    DELETE old
}}
MERGE (o)-[:{FOR}]->(c)
RETURN o.id AS id
"""
"""No row when the referral campaign is unknown; a plan moved to another campaign is drawn to it alone."""

GET_OUTREACH: Final = "MATCH (o:Outreach {id: $id}) RETURN o.json AS json"
OUTREACH_MENTIONING: Final = "MATCH (o:Outreach) WHERE o.json CONTAINS $id RETURN o.id AS id, o.json AS json"
"""Erasure: plans whose explicit audience may list the person (a scan; erasure is rare)."""
SET_OUTREACH_JSON: Final = "MATCH (o:Outreach {id: $id}) SET o.json = $json"
LIST_OUTREACH: Final = "MATCH (o:Outreach) RETURN o.json AS json ORDER BY o.created_at, o.id"

# --- the outbox ------------------------------------------------------------------------------------------------
_message_fields = (
    "{key: m.key, outreach_id: m.outreach_id, step_id: m.step_id, person_key: m.person_key, "
    "customer_id: m.customer_id, channel: m.channel, kind: m.kind, variant_id: m.variant_id, status: m.status, "
    f"reason: m.reason, detail: m.detail, not_before: {_us('m.not_before')}, attempts: m.attempts, "
    f"lease_until: {_us('m.lease_until')}, created_at: {_us('m.created_at')}, updated_at: {_us('m.updated_at')}, "
    f"sent_at: {_us('m.sent_at')}, provider_id: m.provider_id, to_address: m.to_address}}"
)

ENQUEUE_MESSAGES: Final = f"""
UNWIND $rows AS row
MERGE (m:OutboxMessage {{key: row.key}})
ON CREATE SET m.outreach_id = row.outreach_id, m.step_id = row.step_id, m.person_key = row.person_key,
              m.customer_id = row.customer_id, m.channel = row.channel, m.kind = row.kind,
              m.variant_id = row.variant_id, m.status = row.status, m.reason = row.reason, m.detail = row.detail,
              m.not_before = {_datetime("row.not_before_us")}, m.attempts = row.attempts,
              m.lease_until = {_datetime("row.lease_until_us")}, m.created_at = {_datetime("row.created_at_us")},
              m.updated_at = {_datetime("row.updated_at_us")}, m.sent_at = {_datetime("row.sent_at_us")},
              m.provider_id = row.provider_id, m.to_address = row.to_address, m._fresh = true
WITH m WHERE m._fresh
REMOVE m._fresh
WITH m
CALL (m) {{
    MATCH (o:Outreach {{id: m.outreach_id}})
    CREATE (m)-[:{OF}]->(o)
}}
CALL (m) {{
    MATCH (c:Customer {{id: CASE WHEN m.person_key STARTS WITH 'customer:' THEN substring(m.person_key, 9) END}})
    CREATE (m)-[:{TO}]->(c)
}}
CALL (m) {{
    MATCH (c:Customer {{id: m.customer_id}}) WHERE m.person_key <> 'customer:' + m.customer_id
    CREATE (m)-[:{ON_BEHALF_OF}]->(c)
}}
RETURN count(m) AS created
"""
"""A key already stored is left as it is (`ON CREATE` only). `$rows` hold distinct keys: a key repeated within one
statement would be matched while still marked `_fresh` and counted twice. Two transactions enqueueing one key
meet in the `MERGE` on the unique constraint: one creates, the other matches."""

LOCK_MESSAGE: Final = "MATCH (m:OutboxMessage {key: $key}) SET m._lock = true REMOVE m._lock RETURN count(m) AS n"
GET_MESSAGE: Final = f"MATCH (m:OutboxMessage {{key: $key}}) RETURN {_message_fields} AS row"

SET_MESSAGE_STATE: Final = f"""
MATCH (m:OutboxMessage {{key: $key}})
SET m.status = $status, m.reason = $reason, m.detail = $detail, m.not_before = {_datetime("$not_before_us")},
    m.attempts = $attempts, m.lease_until = {_datetime("$lease_until_us")},
    m.updated_at = {_datetime("$updated_at_us")}, m.sent_at = {_datetime("$sent_at_us")},
    m.provider_id = $provider_id, m.to_address = $to_address
RETURN {_message_fields} AS row
"""
"""Run under `LOCK_MESSAGE`, with the state decided in Python from what was read after the lock."""

DUE_MESSAGES: Final = f"""
CALL () {{
    MATCH (m:OutboxMessage {{status: 'queued'}}) WHERE m.not_before <= {_datetime("$now_us")}
    RETURN m
  UNION
    MATCH (m:OutboxMessage {{status: 'sending'}}) WHERE m.lease_until <= {_datetime("$now_us")}
    RETURN m
}}
WITH m WHERE $outreach_id IS NULL OR m.outreach_id = $outreach_id
RETURN {_message_fields} AS row
ORDER BY m.not_before, m.key
LIMIT $limit
"""
"""Candidates only, read without locks: `claim_message` locks and checks each again."""

LIST_MESSAGES: Final = f"""
MATCH (m:OutboxMessage {{outreach_id: $outreach_id}})
WHERE m.key > $after AND ($status IS NULL OR m.status = $status) AND ($reason IS NULL OR m.reason = $reason)
RETURN {_message_fields} AS row
ORDER BY m.key
LIMIT $limit
"""

OUTBOX_COUNTS: Final = """
MATCH (m:OutboxMessage {outreach_id: $outreach_id})
RETURN m.status AS status, m.reason AS reason, m.variant_id AS variant, count(*) AS n
"""

# --- suppressions ----------------------------------------------------------------------------------------------
_suppression_fields = f"{{person_key: s.person_key, reason: s.reason, at: {_us('s.at')}, channel: s.channel}}"

SUPPRESS: Final = f"""
MERGE (s:Suppression {{person_key: $person_key, channel_key: $channel_key}})
ON CREATE SET s.channel = $channel, s.reason = $reason, s.at = {_datetime("$at_us")}
WITH s, {_datetime("$at_us")} < s.at AS earlier
SET s.reason = CASE WHEN earlier THEN $reason ELSE s.reason END,
    s.at = CASE WHEN earlier THEN {_datetime("$at_us")} ELSE s.at END
"""
"""One node per (person key, channel key), kept by the unique constraint; of two records the earlier stays."""

SUPPRESSIONS: Final = f"""
UNWIND $keys AS key
MATCH (s:Suppression {{person_key: key}})
RETURN {_suppression_fields} AS row
ORDER BY s.person_key, s.at, s.channel_key
"""

LIFT_SUPPRESSIONS: Final = f"""
OPTIONAL MATCH (s:Suppression {{person_key: $person_key}})
WHERE ($channels IS NULL OR s.channel IN $channels) AND s.at <= {_datetime("$at_us")}
DETACH DELETE s
RETURN count(s) AS n
"""
"""`$channels` null lifts every suppression of the person, that of all channels (`channel` null) included; a list
names channels, which never matches the suppression of all channels. Later records than `$at_us` stay."""

# --- erasure and deletion --------------------------------------------------------------------------------------
ERASE_OUTREACH: Final = """
CALL () {
    MATCH (m:OutboxMessage {person_key: $person_key})
    DETACH DELETE m
}
CALL () {
    MATCH (m:OutboxMessage {customer_id: $id})
    SET m.customer_id = null
}
CALL () {
    MATCH (s:Suppression {person_key: $person_key})
    DETACH DELETE s
}
"""
"""Before the customer's node goes (taking the `ON_BEHALF_OF` edges with it). Suppressions of `email:<hash>` keys
stay: they honour a refusal, and the hash names nobody without the key."""

DELETE_OUTREACH: Final = f"""
MATCH (n) WHERE {" OR ".join(f"n:{label}" for label in OUTREACH_LABELS)}
CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 10000 ROWS
"""
"""Auto-commit only, in slices, like `graph.cypher.DELETE_ALL`."""
