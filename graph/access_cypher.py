"""Every Cypher statement of access control (API keys, used token ids, idempotency records), as named constants.

    (:ApiKey {id, name, scopes, secret_hash, created_at, revoked_at})
    (:UsedToken {jti, expires_at})
    (:IdempotencyRecord {key, fingerprint, state, status, body, content_type, created_at, expires_at})

The nodes stand alone: no edges, and nothing keyed by a customer. Each has a uniqueness constraint on its key,
which is what makes the deciding writes atomic: a `MERGE` on a uniquely constrained property takes a lock on
that value, so of two transactions merging one key the second waits for the first to commit and then matches its
node. `_fresh` (set on create, removed in the same statement, like `graph.outreach_cypher.ENQUEUE_MESSAGES`)
tells the creator apart. `LOCK_*` statements write to the node (`SET x._lock = true REMOVE x._lock`) before a
later statement reads what the decision depends on, as in `graph.program_cypher`.
"""

from __future__ import annotations

from typing import Final

from graph.cypher import _at_us, _datetime

ACCESS_LABELS: Final[tuple[str, ...]] = ("ApiKey", "UsedToken", "IdempotencyRecord")

# --- schema ----------------------------------------------------------------------------------------------------
ACCESS_SCHEMA: Final[tuple[str, ...]] = (
    "CREATE CONSTRAINT api_key_id_unique IF NOT EXISTS FOR (k:ApiKey) REQUIRE k.id IS UNIQUE",
    "CREATE CONSTRAINT used_token_jti_unique IF NOT EXISTS FOR (t:UsedToken) REQUIRE t.jti IS UNIQUE",
    "CREATE CONSTRAINT idempotency_record_key_unique IF NOT EXISTS FOR (r:IdempotencyRecord) REQUIRE r.key IS UNIQUE",
    # Listing keys by age; sweeping expired token ids and records.
    "CREATE INDEX api_key_created_at IF NOT EXISTS FOR (k:ApiKey) ON (k.created_at)",
    "CREATE INDEX used_token_expires_at IF NOT EXISTS FOR (t:UsedToken) ON (t.expires_at)",
    "CREATE INDEX idempotency_record_expires_at IF NOT EXISTS FOR (r:IdempotencyRecord) ON (r.expires_at)",
)
ACCESS_SCHEMA_NAMES: Final[tuple[str, ...]] = tuple(statement.split()[2] for statement in ACCESS_SCHEMA)


def _us(at: str) -> str:
    return _at_us.format(at=at)


_LOCK = "SET {v}._lock = true REMOVE {v}._lock"

# --- API keys --------------------------------------------------------------------------------------------------
_key_fields = (
    "{id: k.id, name: k.name, scopes: k.scopes, secret_hash: k.secret_hash, "
    f"created_at: {_us('k.created_at')}, revoked_at: {_us('k.revoked_at')}}}"
)

CREATE_API_KEY: Final = f"""
MERGE (k:ApiKey {{id: $id}})
ON CREATE SET k.name = $name, k.scopes = $scopes, k.secret_hash = $secret_hash,
              k.created_at = {_datetime("$created_at_us")}, k.revoked_at = {_datetime("$revoked_at_us")},
              k._fresh = true
WITH k, k._fresh IS NOT NULL AS created
REMOVE k._fresh
RETURN created
"""
"""`created` is false when a key with this id exists: it is left as it was."""
GET_API_KEY: Final = f"MATCH (k:ApiKey {{id: $id}}) RETURN {_key_fields} AS row"
LIST_API_KEYS: Final = f"MATCH (k:ApiKey) RETURN {_key_fields} AS row ORDER BY k.created_at, k.id"
LOCK_API_KEY: Final = f"MATCH (k:ApiKey {{id: $id}}) {_LOCK.format(v='k')} RETURN count(k) AS n"
REVOKE_API_KEY: Final = f"""
MATCH (k:ApiKey {{id: $id}})
SET k.revoked_at = coalesce(k.revoked_at, {_datetime("$at_us")})
RETURN {_key_fields} AS row
"""
"""Run after `LOCK_API_KEY`, so of two revocations the second sees the first's time and keeps it."""

# --- one-time customer tokens ----------------------------------------------------------------------------------
SWEEP_USED_TOKENS: Final = f"""
MATCH (t:UsedToken) WHERE t.expires_at < {_datetime("$now_us")}
WITH t ORDER BY t.expires_at, t.jti LIMIT $limit
DETACH DELETE t
"""
"""In one order, so two sweepers lock the same nodes in the same order."""
USE_TOKEN: Final = f"""
MERGE (t:UsedToken {{jti: $jti}})
ON CREATE SET t.expires_at = {_datetime("$expires_at_us")}, t._fresh = true
WITH t, t._fresh IS NOT NULL AS created
REMOVE t._fresh
RETURN created
"""

# --- idempotency -----------------------------------------------------------------------------------------------
_record_fields = (
    "{key: r.key, fingerprint: r.fingerprint, state: r.state, status: r.status, body: r.body, "
    f"content_type: r.content_type, created_at: {_us('r.created_at')}, expires_at: {_us('r.expires_at')}}}"
)
_claim_set = f"""r.fingerprint = $fingerprint, r.state = $state, r.status = null, r.body = $body,
    r.content_type = $content_type, r.created_at = {_datetime("$created_at_us")},
    r.expires_at = {_datetime("$expires_at_us")}"""

LOCK_EXPIRED_IDEMPOTENCY: Final = f"""
MATCH (r:IdempotencyRecord) WHERE r.expires_at <= {_datetime("$now_us")} AND r.key <> $key
WITH r ORDER BY r.expires_at, r.key LIMIT $limit
SET r._lock = true REMOVE r._lock
RETURN r.key AS key
"""
"""Other keys' expired records, locked in one order; the claimed key's own is renewed by `RENEW_IDEMPOTENCY`."""
DELETE_EXPIRED_IDEMPOTENCY: Final = f"""
UNWIND $keys AS key
MATCH (r:IdempotencyRecord {{key: key}}) WHERE r.expires_at <= {_datetime("$now_us")}
DETACH DELETE r
"""
"""Checks expiry again under the lock: another transaction may have renewed a record since it was found."""
CLAIM_IDEMPOTENCY: Final = f"""
MERGE (r:IdempotencyRecord {{key: $key}})
ON CREATE SET {_claim_set}, r._fresh = true
ON MATCH SET r._lock = true
WITH r, r._fresh IS NOT NULL AS created
REMOVE r._fresh, r._lock
RETURN created
"""
"""Creates the record, or locks the existing one for the statements that follow in the same transaction."""
GET_IDEMPOTENCY: Final = f"MATCH (r:IdempotencyRecord {{key: $key}}) RETURN {_record_fields} AS row"
RENEW_IDEMPOTENCY: Final = f"MATCH (r:IdempotencyRecord {{key: $key}}) SET {_claim_set}"
"""Replaces an expired record as if it had been absent."""
FINISH_IDEMPOTENCY: Final = """
MATCH (r:IdempotencyRecord {key: $key})
SET r.state = $state, r.status = $status, r.body = $body, r.content_type = $content_type
"""
ABANDON_IDEMPOTENCY: Final = """
MATCH (r:IdempotencyRecord {key: $key}) WHERE r.state = $state
DETACH DELETE r
"""

# --- tests and demos -------------------------------------------------------------------------------------------
DELETE_ACCESS: Final = f"""
MATCH (n) WHERE {" OR ".join(f"n:{label}" for label in ACCESS_LABELS)}
CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 10000 ROWS
"""
"""Auto-commit only, in slices, like `graph.cypher.DELETE_ALL`."""
