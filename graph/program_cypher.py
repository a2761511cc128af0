"""Every Cypher statement of the referral programme, as named constants (see `graph.cypher` for the customer graph).

The programme lives beside the customers it belongs to, so fraud rings, shared devices and cascades are graph
patterns rather than joins across systems:

    (:Campaign {id, name, status, created_at, json})              the whole `Campaign` as JSON, read back as is
    (:Customer)-[:OWNS]->(:Code {code, customer_id, campaign_id, status, vanity, created_at, expires_at,
                                 status_at, replaced_by})-[:FOR]->(:Campaign)
    (:Click {id, code, at, visitor, ip_hash, source, customer_id})-[:VIA]->(:Code)
    (:Customer)-[:CLICKED]->(:Click)                               when the visitor was a known customer
    (:Customer)-[:HAS_SIGNAL]->(:Signal {key, kind, value})        key = kind + ':' + value, so a device or a card
                                                                   shared by two accounts is one node
    (:Customer)-[:SIGNED_UP]->(:Signup {customer_id, at, code, click_id})
    (:Customer)-[:PLACED]->(:Conversion {order_id, customer_id, amount_minor, currency, at, code, click_id,
                                         signals_json, status, referrer_id, campaign_id, attributed_code,
                                         method, touched_at, verdict_json, settled_at, refunded_minor,
                                         reviewed_by, review_note, reward_ids})
    (:Conversion)-[:ATTRIBUTED_TO]->(:Customer)                    the referrer
    (:Refund {id, order_id, amount_minor, at, reason})-[:OF]->(:Conversion)
    (:Reward {id, customer_id, campaign_id, rule_id, side, kind, amount_minor, currency, description,
              conversion_id, state, created_at, updated_at, approve_after, review_deadline})
    (:Reward)-[:EARNED_BY]->(:Customer), (:Reward)-[:FOR]->(:Conversion)
    (:LedgerEntry {id, reward_id, customer_id, from_state, to_state, amount_minor, currency, at, reason})
        -[:MOVES]->(:Reward)

    (:Customer)-[:REFERRED {code, status, at, status_at}]->(:Customer)   follows the friend's journey:
        signup -> signed_up (never back), attributed or held -> converted, rejected or refunded -> reversed

Ids are copied onto nodes as properties (`customer_id`, `referrer_id`, ...) as well as drawn as relationships:
the relationships are what marketers and ring detection traverse, the properties what survives erasure as the
tombstone `erased` on records kept for the accounts (rewards, ledger entries, attributions).

Locks: a statement named `LOCK_*` writes to the node (`SET x._lock = true REMOVE x._lock`, leaving nothing
behind), which takes its write lock until the transaction ends; the state a decision depends on is read by a
later statement, so it is the state no other writer can change any more.
"""

from __future__ import annotations

from typing import Final

from graph.cypher import PERFORMED, REFERRED, _at_us, _customer_fields, _datetime, _score_fields
from graph.outreach_cypher import _template_fields

OWNS: Final = "OWNS"
FOR: Final = "FOR"
VIA: Final = "VIA"
CLICKED: Final = "CLICKED"
HAS_SIGNAL: Final = "HAS_SIGNAL"
SIGNED_UP: Final = "SIGNED_UP"
PLACED: Final = "PLACED"
ATTRIBUTED_TO: Final = "ATTRIBUTED_TO"
OF: Final = "OF"
EARNED_BY: Final = "EARNED_BY"
MOVES: Final = "MOVES"

PROGRAM_LABELS: Final[tuple[str, ...]] = (
    "Campaign",
    "Code",
    "Click",
    "Signal",
    "Signup",
    "Conversion",
    "Refund",
    "Reward",
    "LedgerEntry",
)

LIVE_CONVERSIONS: Final = "['attributed', 'held']"
"""Conversion statuses that count as a successful referral (and keep a `REFERRED` edge converted)."""

# --- schema ----------------------------------------------------------------------------------------------------
PROGRAM_SCHEMA: Final[tuple[str, ...]] = (
    "CREATE CONSTRAINT campaign_id_unique IF NOT EXISTS FOR (c:Campaign) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT code_code_unique IF NOT EXISTS FOR (k:Code) REQUIRE k.code IS UNIQUE",
    "CREATE CONSTRAINT click_id_unique IF NOT EXISTS FOR (c:Click) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT signal_key_unique IF NOT EXISTS FOR (s:Signal) REQUIRE s.key IS UNIQUE",
    "CREATE CONSTRAINT signup_customer_unique IF NOT EXISTS FOR (s:Signup) REQUIRE s.customer_id IS UNIQUE",
    "CREATE CONSTRAINT conversion_order_id_unique IF NOT EXISTS FOR (c:Conversion) REQUIRE c.order_id IS UNIQUE",
    "CREATE CONSTRAINT refund_id_unique IF NOT EXISTS FOR (r:Refund) REQUIRE r.id IS UNIQUE",
    "CREATE CONSTRAINT reward_id_unique IF NOT EXISTS FOR (r:Reward) REQUIRE r.id IS UNIQUE",
    "CREATE CONSTRAINT ledger_entry_id_unique IF NOT EXISTS FOR (e:LedgerEntry) REQUIRE e.id IS UNIQUE",
    # Lookups by owner, time window, status and tombstone-able ids (erasure rewrites them by property).
    "CREATE INDEX code_customer_id IF NOT EXISTS FOR (k:Code) ON (k.customer_id)",
    "CREATE INDEX code_campaign_id IF NOT EXISTS FOR (k:Code) ON (k.campaign_id)",
    "CREATE INDEX click_at IF NOT EXISTS FOR (c:Click) ON (c.at)",
    "CREATE INDEX click_customer_id IF NOT EXISTS FOR (c:Click) ON (c.customer_id)",
    "CREATE INDEX signup_code IF NOT EXISTS FOR (s:Signup) ON (s.code)",
    "CREATE INDEX signup_click_id IF NOT EXISTS FOR (s:Signup) ON (s.click_id)",
    "CREATE INDEX conversion_customer_id IF NOT EXISTS FOR (c:Conversion) ON (c.customer_id)",
    "CREATE INDEX conversion_referrer_id IF NOT EXISTS FOR (c:Conversion) ON (c.referrer_id)",
    "CREATE INDEX conversion_attributed_code IF NOT EXISTS FOR (c:Conversion) ON (c.attributed_code)",
    "CREATE INDEX conversion_status IF NOT EXISTS FOR (c:Conversion) ON (c.status)",
    "CREATE INDEX conversion_at IF NOT EXISTS FOR (c:Conversion) ON (c.at)",
    "CREATE INDEX reward_customer_id IF NOT EXISTS FOR (r:Reward) ON (r.customer_id)",
    "CREATE INDEX reward_conversion_id IF NOT EXISTS FOR (r:Reward) ON (r.conversion_id)",
    "CREATE INDEX reward_state IF NOT EXISTS FOR (r:Reward) ON (r.state)",
    "CREATE INDEX ledger_entry_customer_id IF NOT EXISTS FOR (e:LedgerEntry) ON (e.customer_id)",
    "CREATE INDEX ledger_entry_reward_id IF NOT EXISTS FOR (e:LedgerEntry) ON (e.reward_id)",
)
PROGRAM_SCHEMA_NAMES: Final[tuple[str, ...]] = tuple(statement.split()[2] for statement in PROGRAM_SCHEMA)


def _us(at: str) -> str:
    return _at_us.format(at=at)


# --- locks -----------------------------------------------------------------------------------------------------
_LOCK = "SET {v}._lock = true REMOVE {v}._lock"

LOCK_CONVERSION: Final = f"MATCH (c:Conversion {{order_id: $order_id}}) {_LOCK.format(v='c')} RETURN count(c) AS n"
LOCK_CUSTOMERS: Final = f"""
UNWIND $ids AS id
MATCH (c:Customer {{id: id}})
{_LOCK.format(v="c")}
RETURN c.id AS id
"""
"""`$ids` sorted, so two transactions locking the same people take them in the same order."""
LOCK_REWARDS: Final = f"""
UNWIND $ids AS id
MATCH (r:Reward {{id: id}})
{_LOCK.format(v="r")}
RETURN r.id AS id
"""
LOCK_CODE: Final = f"MATCH (k:Code {{code: $code}}) {_LOCK.format(v='k')} RETURN count(k) AS n"

# --- campaigns -------------------------------------------------------------------------------------------------
MERGE_CAMPAIGN: Final = f"""
MERGE (c:Campaign {{id: $id}})
SET c.name = $name, c.status = $status, c.created_at = {_datetime("$created_at_us")}, c.json = $json
"""
GET_CAMPAIGN: Final = "MATCH (c:Campaign {id: $id}) RETURN c.json AS json"
LIST_CAMPAIGNS: Final = "MATCH (c:Campaign) RETURN c.json AS json ORDER BY c.created_at, c.id"

# --- codes and clicks ------------------------------------------------------------------------------------------
_code_fields = (
    "{code: k.code, customer_id: k.customer_id, campaign_id: k.campaign_id, status: k.status, vanity: k.vanity, "
    f"created_at: {_us('k.created_at')}, expires_at: {_us('k.expires_at')}, status_at: {_us('k.status_at')}, "
    "replaced_by: k.replaced_by}"
)

OWNER_AND_CAMPAIGN: Final = """
RETURN EXISTS { MATCH (:Customer {id: $customer_id}) } AS customer,
       EXISTS { MATCH (:Campaign {id: $campaign_id}) } AS campaign
"""

CREATE_CODE: Final = f"""
MATCH (owner:Customer {{id: $customer_id}})
MATCH (campaign:Campaign {{id: $campaign_id}})
MERGE (k:Code {{code: $code}})
ON CREATE SET k.customer_id = $customer_id, k.campaign_id = $campaign_id, k.status = $status, k.vanity = $vanity,
              k.created_at = {_datetime("$created_at_us")}, k.expires_at = {_datetime("$expires_at_us")},
              k.status_at = {_datetime("$status_at_us")}, k.replaced_by = $replaced_by, k._fresh = true
WITH owner, campaign, k, k._fresh IS NOT NULL AS created
CALL (owner, campaign, k, created) {{
    WITH * WHERE created
    REMOVE k._fresh
    CREATE (owner)-[:{OWNS}]->(k)-[:{FOR}]->(campaign)
}}
RETURN created
"""
"""No row when the owner or the campaign is missing; `created` is false when the code already existed. The
unique constraint makes two concurrent creations of one code meet in the `MERGE`: one creates, one matches."""

GET_CODE: Final = f"MATCH (k:Code {{code: $code}}) RETURN {_code_fields} AS row"
LIST_CODES: Final = f"MATCH (k:Code) RETURN {_code_fields} AS row ORDER BY k.created_at, k.code"
LIST_CODES_OF_CUSTOMER: Final = f"""
MATCH (k:Code {{customer_id: $customer_id}}) WHERE $campaign_id IS NULL OR k.campaign_id = $campaign_id
RETURN {_code_fields} AS row ORDER BY k.created_at, k.code
"""
KIT_READS: Final = f"""
MATCH (c:Customer {{id: $id}})
RETURN [{_customer_fields}] AS customer,
    CASE WHEN c.scored_run_id IS NULL THEN null ELSE {_score_fields} END AS scores,
    COLLECT {{
        MATCH (k:Code {{customer_id: $id}}) WHERE k.campaign_id = $campaign_id
        RETURN {_code_fields} ORDER BY k.created_at, k.code
    }} AS codes,
    COLLECT {{
        MATCH (c)-[r:{REFERRED}]->(f:Customer)
        RETURN [f.id, r.status, {_us("r.at")}] ORDER BY f.id
    }} AS referrals,
    COLLECT {{
        MATCH (c)-[:{PERFORMED}]->(e:Event) WHERE e.kind = $kind
        RETURN [e.id, e.kind, {_us("e.at")}, e.value, e.attributes_json] ORDER BY e.at DESC, e.id LIMIT $limit
    }} AS purchases,
    COLLECT {{
        MATCH (t:Template) WHERE t.purpose = $purpose
        RETURN {_template_fields} ORDER BY t.id
    }} AS templates
"""
"""`Store.kit_reads` in one statement (one round trip instead of six transactions): the same rows as
`GET_CUSTOMER`, `GET_SCORES`, `LIST_CODES_OF_CUSTOMER`, `REFERRALS_FROM`, `EVENTS_OF` and `LIST_TEMPLATES`; no
row for an unknown customer."""
LIST_CODES_IN_CAMPAIGN: Final = f"""
MATCH (k:Code {{campaign_id: $campaign_id}})
RETURN {_code_fields} AS row ORDER BY k.created_at, k.code
"""
SET_CODE_STATUS: Final = f"""
MATCH (k:Code {{code: $code}})
SET k.status = $status, k.status_at = {_datetime("$status_at_us")},
    k.replaced_by = coalesce($replaced_by, k.replaced_by)
RETURN {_code_fields} AS row
"""

_click_fields = (
    "{id: c.id, code: c.code, at: " + _us("c.at") + ", visitor: c.visitor, ip_hash: c.ip_hash, source: c.source, "
    "customer_id: c.customer_id}"
)

RECORD_CLICK: Final = f"""
OPTIONAL MATCH (k:Code {{code: $code}})
CALL (k) {{
    WITH k WHERE k IS NOT NULL
    MERGE (c:Click {{id: $id}})
    ON CREATE SET c.code = $code, c.at = {_datetime("$at_us")}, c.visitor = $visitor, c.ip_hash = $ip_hash,
                  c.source = $source, c.customer_id = $customer_id, c._fresh = true
    WITH k, c WHERE c._fresh
    REMOVE c._fresh
    CREATE (c)-[:{VIA}]->(k)
    WITH c
    MATCH (who:Customer {{id: c.customer_id}})
    CREATE (who)-[:{CLICKED}]->(c)
}}
RETURN k IS NOT NULL AS found
"""
"""A click id seen before is left as it is; a known visitor gets a `CLICKED` edge, an unknown id stays a property."""

RECORD_CLICKS: Final = f"""
UNWIND $rows AS row
MATCH (k:Code {{code: row.code}})
MERGE (c:Click {{id: row.id}})
ON CREATE SET c.code = row.code, c.at = {_datetime("row.at_us")}, c.visitor = row.visitor, c.ip_hash = row.ip_hash,
              c.source = row.source, c.customer_id = row.customer_id, c._fresh = true
WITH k, c WHERE c._fresh
REMOVE c._fresh
CREATE (c)-[:{VIA}]->(k)
WITH c
OPTIONAL MATCH (who:Customer {{id: c.customer_id}})
FOREACH (_ IN CASE WHEN who IS NULL THEN [] ELSE [1] END | CREATE (who)-[:{CLICKED}]->(c))
"""
"""`RECORD_CLICK` for a batch; a click whose code has gone (erased since the redirect) is dropped."""

GET_CLICK: Final = f"MATCH (c:Click {{id: $id}}) RETURN {_click_fields} AS row"

# --- signups, signals and touches ------------------------------------------------------------------------------
MERGE_SIGNALS: Final = f"""
MATCH (c:Customer {{id: $customer_id}})
UNWIND $signals AS signal
MERGE (s:Signal {{key: signal.kind + ':' + signal.value}})
ON CREATE SET s.kind = signal.kind, s.value = signal.value
MERGE (c)-[:{HAS_SIGNAL}]->(s)
"""
"""Run with the customer locked, so two deliveries cannot both create the same `HAS_SIGNAL` edge."""

MERGE_SIGNUP: Final = f"""
MATCH (c:Customer {{id: $customer_id}})
MERGE (s:Signup {{customer_id: $customer_id}})
ON CREATE SET s.at = {_datetime("$at_us")}, s.code = $code, s.click_id = $click_id, s._fresh = true
WITH c, s WHERE s._fresh
REMOVE s._fresh
CREATE (c)-[:{SIGNED_UP}]->(s)
"""

SIGN_UP_REFERRAL: Final = f"""
MATCH (a:Customer {{id: $referrer_id}})
MATCH (b:Customer {{id: $friend_id}})
MERGE (a)-[r:{REFERRED}]->(b)
ON CREATE SET r.code = $code, r.at = {_datetime("$at_us")}, r.status = 'signed_up',
              r.status_at = {_datetime("$status_at_us")}
ON MATCH SET r.status_at = CASE WHEN r.status = 'clicked' THEN {_datetime("$status_at_us")} ELSE r.status_at END,
             r.status = CASE WHEN r.status = 'clicked' THEN 'signed_up' ELSE r.status END
"""
"""Forward only: clicked -> signed_up; an edge already signed up, converted or reversed keeps its status."""

TOUCH_CLICKS: Final = f"""
CALL () {{
    UNWIND $click_ids AS id
    MATCH (c:Click {{id: id}})
    RETURN c
  UNION
    MATCH (c:Click {{customer_id: $customer_id}})
    RETURN c
  UNION
    MATCH (s:Signup {{customer_id: $customer_id}})
    MATCH (c:Click {{id: s.click_id}})
    RETURN c
}}
WITH c WHERE c.at >= {_datetime("$since_us")}
MATCH (c)-[:{VIA}]->(k:Code)
RETURN {_click_fields} AS click, {_code_fields} AS code
"""

SIGNUP_CODE: Final = f"""
MATCH (s:Signup {{customer_id: $customer_id}}) WHERE s.at >= {_datetime("$since_us")}
MATCH (k:Code {{code: s.code}})
RETURN {_us("s.at")} AS at, {_code_fields} AS code
"""
"""The code typed at signup, as a touch at the signup time (its click, if any, is one of `TOUCH_CLICKS`)."""

# --- orders and conversions ------------------------------------------------------------------------------------
_conversion_fields = (
    "{order_id: c.order_id, customer_id: c.customer_id, amount_minor: c.amount_minor, currency: c.currency, "
    f"at: {_us('c.at')}, code: c.code, click_id: c.click_id, signals_json: c.signals_json, status: c.status, "
    "referrer_id: c.referrer_id, campaign_id: c.campaign_id, attributed_code: c.attributed_code, "
    f"method: c.method, touched_at: {_us('c.touched_at')}, verdict_json: c.verdict_json, "
    f"settled_at: {_us('c.settled_at')}, refunded_minor: c.refunded_minor, reviewed_by: c.reviewed_by, "
    "review_note: c.review_note, reward_ids: c.reward_ids, notes: c.notes}"
)

GET_CONVERSION: Final = f"MATCH (c:Conversion {{order_id: $order_id}}) RETURN {_conversion_fields} AS row"

CREATE_CONVERSION: Final = f"""
MATCH (b:Customer {{id: $customer_id}})
MERGE (c:Conversion {{order_id: $order_id}})
ON CREATE SET c.customer_id = $customer_id, c.amount_minor = $amount_minor, c.currency = $currency,
              c.at = {_datetime("$at_us")}, c.code = $code, c.click_id = $click_id, c.signals_json = $signals_json,
              c.status = 'pending', c.refunded_minor = 0, c.reward_ids = [], c._fresh = true
WITH b, c, c._fresh IS NOT NULL AS created
CALL (b, c, created) {{
    WITH * WHERE created
    REMOVE c._fresh
    CREATE (b)-[:{PLACED}]->(c)
}}
RETURN created, {_conversion_fields} AS row
"""
"""No row when the buyer is unknown; `created` is false when another delivery of the order got there first."""

LIST_CONVERSIONS: Final = f"""
MATCH (c:Conversion)
WHERE c.order_id > $after
  AND ($status IS NULL OR c.status = $status)
  AND ($campaign_id IS NULL OR c.campaign_id = $campaign_id)
  AND ($customer_id IS NULL OR c.customer_id = $customer_id OR c.referrer_id = $customer_id)
RETURN {_conversion_fields} AS row
ORDER BY c.order_id
LIMIT $limit
"""

ITER_CONVERSIONS: Final = f"""
MATCH (c:Conversion) WHERE $campaign_id IS NULL OR c.campaign_id = $campaign_id
RETURN {_conversion_fields} AS row
ORDER BY c.at, c.order_id
"""

SETTLE_CONVERSION: Final = f"""
MATCH (c:Conversion {{order_id: $order_id}})
SET c.status = $status, c.referrer_id = $referrer_id, c.campaign_id = $campaign_id,
    c.attributed_code = $attributed_code, c.method = $method, c.touched_at = {_datetime("$touched_at_us")},
    c.verdict_json = $verdict_json, c.settled_at = {_datetime("$settled_at_us")}, c.reward_ids = $reward_ids,
    c.notes = $notes
WITH c
CALL (c) {{
    MATCH (referrer:Customer {{id: c.referrer_id}})
    CREATE (c)-[:{ATTRIBUTED_TO}]->(referrer)
}}
"""

SET_CONVERSION_STATUS: Final = """
MATCH (c:Conversion {order_id: $order_id})
SET c.status = $status, c.reviewed_by = coalesce($reviewed_by, c.reviewed_by),
    c.review_note = coalesce($review_note, c.review_note)
"""

REFUND_SEEN: Final = "RETURN EXISTS { MATCH (:Refund {id: $id}) } AS seen"

RECORD_REFUND: Final = f"""
MATCH (c:Conversion {{order_id: $order_id}})
CREATE (r:Refund {{id: $id, order_id: $order_id, amount_minor: $amount_minor, at: {_datetime("$at_us")},
                   reason: $reason}})-[:{OF}]->(c)
SET c.refunded_minor = c.refunded_minor + $amount_minor
"""
"""Run under the conversion's lock after `REFUND_SEEN` said no; the unique constraint guards the rest."""

CONVERT_REFERRAL: Final = f"""
MATCH (a:Customer {{id: $referrer_id}})
MATCH (b:Customer {{id: $friend_id}})
MERGE (a)-[r:{REFERRED}]->(b)
ON CREATE SET r.code = $code, r.at = {_datetime("$at_us")}, r.status = 'converted',
              r.status_at = {_datetime("$status_at_us")}
ON MATCH SET r.status_at = CASE WHEN r.status = 'converted' THEN r.status_at ELSE {_datetime("$status_at_us")} END,
             r.status = 'converted'
"""

REVERSE_REFERRAL: Final = f"""
MATCH (a:Customer {{id: $referrer_id}})-[r:{REFERRED}]->(b:Customer {{id: $friend_id}})
WHERE r.status <> 'reversed'
  AND NOT EXISTS {{
      MATCH (b)-[:{PLACED}]->(other:Conversion)-[:{ATTRIBUTED_TO}]->(a)
      WHERE other.status IN {LIVE_CONVERSIONS} AND other.order_id <> $order_id
  }}
SET r.status = 'reversed', r.status_at = {_datetime("$status_at_us")}
"""
"""The edge stays converted while the friend has another live conversion through the same referrer."""

# --- fraud context ---------------------------------------------------------------------------------------------
SIGNALS_OF: Final = f"""
MATCH (:Customer {{id: $customer_id}})-[:{HAS_SIGNAL}]->(s:Signal)
RETURN s.kind AS kind, s.value AS value ORDER BY kind, value
"""

SHARED_SIGNALS: Final = f"""
UNWIND $keys AS key
MATCH (s:Signal {{key: key}})<-[:{HAS_SIGNAL}]-(other:Customer)
WHERE other.id <> $customer_id
RETURN s.kind AS kind, collect(DISTINCT other.id) AS ids
"""

CREATED_AT: Final = f"""
UNWIND $ids AS id
MATCH (c:Customer {{id: id}})
RETURN c.id AS id, {_us("c.created_at")} AS created_at
"""

CODE_CONVERSIONS_IN_WINDOW: Final = f"""
MATCH (c:Conversion {{attributed_code: $code}})
WHERE c.status <> 'pending' AND c.order_id <> $order_id
  AND c.at >= {_datetime("$from_us")} AND c.at <= {_datetime("$to_us")}
RETURN count(c) AS n
"""
"""Other orders placed within the window up to this one and settled through the same code."""

LIVE_REFERRALS_AROUND: Final = f"""
UNWIND $ids AS id
MATCH (c:Customer {{id: id}})-[r:{REFERRED}]-(:Customer)
WHERE r.status <> 'reversed'
WITH DISTINCT r LIMIT $limit
RETURN startNode(r).id AS referrer_id, endNode(r).id AS friend_id, {_us("r.at")} AS at
"""
"""One step of the breadth-first walk over live `REFERRED` edges: those touching the frontier. The walk is done
step by step because a variable-length pattern cannot take its length as a parameter, and `$limit` keeps a hub's
network from flooding a check that is about small rings."""

# --- rewards and the ledger ------------------------------------------------------------------------------------
_reward_fields = (
    "{id: r.id, customer_id: r.customer_id, campaign_id: r.campaign_id, rule_id: r.rule_id, side: r.side, "
    "kind: r.kind, amount_minor: r.amount_minor, currency: r.currency, description: r.description, "
    f"conversion_id: r.conversion_id, state: r.state, created_at: {_us('r.created_at')}, "
    f"updated_at: {_us('r.updated_at')}, approve_after: {_us('r.approve_after')}, "
    f"review_deadline: {_us('r.review_deadline')}}}"
)
_entry_fields = (
    "{id: e.id, reward_id: e.reward_id, customer_id: e.customer_id, from_state: e.from_state, "
    f"to_state: e.to_state, amount_minor: e.amount_minor, currency: e.currency, at: {_us('e.at')}, "
    "reason: e.reason}"
)

SUCCESSFUL_REFERRALS: Final = f"""
MATCH (c:Conversion {{referrer_id: $referrer_id}})
WHERE c.campaign_id = $campaign_id AND c.status IN {LIVE_CONVERSIONS} AND c.customer_id <> $friend_id
RETURN count(DISTINCT c.customer_id) AS n
"""

REWARDS_OF_SIDE: Final = f"""
MATCH (r:Reward {{customer_id: $customer_id}})
WHERE r.campaign_id = $campaign_id AND r.side = $side
RETURN {_reward_fields} AS row ORDER BY r.created_at, r.id
"""

ISSUE_REWARDS: Final = f"""
UNWIND $rows AS row
MERGE (r:Reward {{id: row.id}})
ON CREATE SET r.customer_id = row.customer_id, r.campaign_id = row.campaign_id, r.rule_id = row.rule_id,
              r.side = row.side, r.kind = row.kind, r.amount_minor = row.amount_minor, r.currency = row.currency,
              r.description = row.description, r.conversion_id = row.conversion_id, r.state = row.state,
              r.created_at = {_datetime("row.at_us")}, r.updated_at = {_datetime("row.at_us")},
              r.approve_after = {_datetime("row.approve_after_us")},
              r.review_deadline = {_datetime("row.review_deadline_us")}, r._fresh = true
WITH r, row WHERE r._fresh
REMOVE r._fresh
MERGE (e:LedgerEntry {{id: row.entry_id}})
ON CREATE SET e.reward_id = row.id, e.customer_id = row.customer_id, e.from_state = null, e.to_state = row.state,
              e.amount_minor = row.amount_minor, e.currency = row.currency, e.at = {_datetime("row.at_us")},
              e.reason = row.reason
CREATE (e)-[:{MOVES}]->(r)
WITH r
CALL (r) {{
    MATCH (who:Customer {{id: r.customer_id}})
    CREATE (r)-[:{EARNED_BY}]->(who)
}}
CALL (r) {{
    MATCH (c:Conversion {{order_id: r.conversion_id}})
    CREATE (r)-[:{FOR}]->(c)
}}
RETURN r.id AS id
"""
"""A grant whose reward exists is left alone (`ON CREATE` only); a new reward gets its first entry."""

GET_REWARDS: Final = f"""
UNWIND $ids AS id
MATCH (r:Reward {{id: id}})
RETURN {_reward_fields} AS row
"""

REWARD_IDS_OF_CONVERSION: Final = "MATCH (r:Reward {conversion_id: $conversion_id}) RETURN r.id AS id ORDER BY id"

MOVE_REWARDS: Final = f"""
UNWIND $rows AS row
MATCH (r:Reward {{id: row.id}})
SET r.state = row.to_state, r.updated_at = {_datetime("row.at_us")},
    r.approve_after = CASE WHEN row.approve_after_us IS NULL THEN r.approve_after
                           ELSE {_datetime("row.approve_after_us")} END
MERGE (e:LedgerEntry {{id: row.entry_id}})
ON CREATE SET e.reward_id = r.id, e.customer_id = r.customer_id, e.from_state = row.from_state,
              e.to_state = row.to_state, e.amount_minor = r.amount_minor, e.currency = r.currency,
              e.at = {_datetime("row.at_us")}, e.reason = row.reason
MERGE (e)-[:{MOVES}]->(r)
RETURN {_reward_fields} AS row
"""
"""Rows were decided in Python from states read under the rewards' locks (`check_transition`)."""

LIST_REWARDS: Final = f"""
MATCH (r:Reward)
WHERE ($customer_id IS NULL OR r.customer_id = $customer_id)
  AND ($campaign_id IS NULL OR r.campaign_id = $campaign_id)
  AND ($state IS NULL OR r.state = $state)
  AND ($conversion_id IS NULL OR r.conversion_id = $conversion_id)
RETURN {_reward_fields} AS row
ORDER BY r.created_at, r.id
LIMIT $limit
"""

DUE_APPROVALS: Final = f"""
MATCH (r:Reward {{state: 'pending'}}) WHERE r.approve_after <= {_datetime("$now_us")}
RETURN r.id AS id ORDER BY r.created_at, r.id LIMIT $limit
"""
DUE_REJECTIONS: Final = f"""
MATCH (r:Reward {{state: 'held'}}) WHERE r.review_deadline <= {_datetime("$now_us")}
RETURN r.id AS id, r.conversion_id AS conversion_id ORDER BY r.created_at, r.id LIMIT $limit
"""
"""Both read candidates only, without locks: each is locked and checked again before it moves."""

LEDGER_ENTRIES: Final = f"""
MATCH (e:LedgerEntry)
WHERE ($customer_id IS NULL OR e.customer_id = $customer_id) AND ($reward_id IS NULL OR e.reward_id = $reward_id)
RETURN {_entry_fields} AS row
ORDER BY e.at, e.id
"""
"""Sorted again in Python by state position (see `ProgramStore.ledger_entries`)."""

# --- fraud scanning and metrics --------------------------------------------------------------------------------
CODES_WITH_CLICKS: Final = f"""
MATCH (c:Click) WHERE c.at >= {_datetime("$since_us")}
WITH c.code AS code, count(*) AS clicks WHERE clicks >= $min_clicks
RETURN code ORDER BY code
"""
ALL_CODES: Final = "MATCH (k:Code) RETURN k.code AS code ORDER BY code"

CODE_ACTIVITY: Final = f"""
UNWIND $codes AS wanted
MATCH (k:Code {{code: wanted}})
CALL (k) {{
    OPTIONAL MATCH (c:Click)-[:{VIA}]->(k) WHERE c.at >= {_datetime("$since_us")}
    RETURN count(c) AS clicks, count(DISTINCT c.visitor) AS visitors, count(DISTINCT c.ip_hash) AS ips,
           collect(CASE WHEN c IS NULL THEN null ELSE coalesce(c.source, '') END) AS sources
}}
CALL (k) {{
    CALL (k) {{
        MATCH (s:Signup {{code: k.code}})
        RETURN s
      UNION
        MATCH (c:Click)-[:{VIA}]->(k)
        MATCH (s:Signup {{click_id: c.id}})
        RETURN s
    }}
    WITH s WHERE s.at >= {_datetime("$since_us")}
    RETURN count(DISTINCT s) AS signups
}}
CALL (k) {{
    OPTIONAL MATCH (v:Conversion {{attributed_code: k.code}}) WHERE v.at >= {_datetime("$since_us")}
    RETURN count(v) AS conversions
}}
RETURN {{code: k.code, customer_id: k.customer_id, campaign_id: k.campaign_id, status: k.status, clicks: clicks,
        distinct_visitors: visitors, distinct_ips: ips, sources: sources, signups: signups,
        conversions: conversions}} AS row
ORDER BY k.code
"""
"""Signups through the code count whether it was typed or its click set the cookie; conversions are those
attributed through it, whatever became of them."""

CLICK_COUNTS: Final = f"""
MATCH (c:Click)-[:{VIA}]->(k:Code) WHERE $campaign_id IS NULL OR k.campaign_id = $campaign_id
RETURN count(c) AS clicks, count(DISTINCT c.visitor) AS visitors, count(DISTINCT k.customer_id) AS sharing
"""
ADVOCATES_WITH_CODE: Final = """
MATCH (k:Code) WHERE $campaign_id IS NULL OR k.campaign_id = $campaign_id
RETURN count(DISTINCT k.customer_id) AS n
"""
SIGNUP_COUNT: Final = f"""
CALL () {{
    MATCH (s:Signup) WHERE $campaign_id IS NULL
    RETURN s
  UNION
    MATCH (k:Code {{campaign_id: $campaign_id}})
    MATCH (s:Signup {{code: k.code}})
    RETURN s
  UNION
    MATCH (k:Code {{campaign_id: $campaign_id}})<-[:{VIA}]-(c:Click)
    MATCH (s:Signup {{click_id: c.id}})
    RETURN s
}}
RETURN count(s) AS n
"""
CONVERSION_COUNTS: Final = """
MATCH (c:Conversion) WHERE $campaign_id IS NULL OR c.campaign_id = $campaign_id
RETURN c.status AS status, count(*) AS n
"""
REWARD_COSTS: Final = """
MATCH (r:Reward) WHERE $campaign_id IS NULL OR r.campaign_id = $campaign_id
RETURN r.currency AS currency, r.state AS state, sum(r.amount_minor) AS total
"""

CONVERSIONS_MENTIONING: Final = """
MATCH (c:Conversion)
WHERE c.verdict_json CONTAINS $id OR c.review_note CONTAINS $id OR any(note IN c.notes WHERE note CONTAINS $id)
RETURN c.order_id AS order_id, c.verdict_json AS verdict_json, c.review_note AS review_note, c.notes AS notes
"""
"""A scan, but erasure is rare: fraud details and review notes of other people's conversions may name the person."""
REWRITE_CONVERSION_TEXT: Final = """
UNWIND $rows AS row
MATCH (c:Conversion {order_id: row.order_id})
SET c.verdict_json = row.verdict_json, c.review_note = row.review_note, c.notes = row.notes
"""

# --- erasure and deletion --------------------------------------------------------------------------------------
ERASE_PROGRAM: Final = f"""
MATCH (person:Customer {{id: $id}})
CALL (person) {{
    MATCH (k:Code {{customer_id: person.id}})
    OPTIONAL MATCH (c:Click)-[:{VIA}]->(k)
    DETACH DELETE c, k
}}
CALL (person) {{
    MATCH (c:Click {{customer_id: person.id}})
    SET c.customer_id = null
}}
CALL (person) {{
    MATCH (person)-[:{HAS_SIGNAL}]->(s:Signal)
    WITH s WHERE COUNT {{ (s)<-[:{HAS_SIGNAL}]-() }} = 1
    DETACH DELETE s
}}
CALL (person) {{
    MATCH (s:Signup {{customer_id: person.id}})
    DETACH DELETE s
}}
CALL (person) {{
    MATCH (c:Conversion {{customer_id: person.id}})
    OPTIONAL MATCH (r:Refund)-[:{OF}]->(c)
    DETACH DELETE r, c
}}
CALL (person) {{
    MATCH (c:Conversion {{referrer_id: person.id}})
    SET c.referrer_id = $erased
}}
CALL (person) {{
    MATCH (r:Reward {{customer_id: person.id}})
    SET r.customer_id = $erased
}}
CALL (person) {{
    MATCH (e:LedgerEntry {{customer_id: person.id}})
    SET e.customer_id = $erased
}}
"""
"""Before the customer's node goes: what only identifies the person goes with them, what the accounts need stays
under the tombstone. A signal another customer also holds stays (it is theirs too); the person's edge to it goes
with their node."""

DELETE_PROGRAM: Final = f"""
MATCH (n) WHERE {" OR ".join(f"n:{label}" for label in PROGRAM_LABELS)}
CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 10000 ROWS
"""
"""Auto-commit only, in slices, like `graph.cypher.DELETE_ALL`."""
