"""Every Cypher statement `Neo4jStore` runs, as named constants.

Values always travel as `$parameters`; labels, relationship types and property names are written here (the
relationship types from `EdgeType`), never built from input. Batch writes `UNWIND $rows`; where the volume is
large (edges, events) a row is a plain list rather than a map, which is smaller on the wire.

The graph as a marketer sees it in Cypher:

    (:Customer {id, name, email, phone, locale, timezone, consent_email, consent_sms, consent_whatsapp,
                consent_push, attributes_json, created_at,
                segment, explanation, community, scored_run_id, score_<name>...})
    (:Customer)-[:REFERRED {code, status, at, status_at}]->(:Customer)
    (:Customer)-[:INFLUENCES {kind, weight, at}]->(:Customer)      one per (source, target, kind)
    (:Customer)-[:PERFORMED]->(:Event {id, kind, at, value, attributes_json})
    (:AnalysisRun {id, started_at, finished_at, status, params_json, timings_json, summary_json})
    (:ErasureCount {key, count})      anonymous tally: customers, edges.REFERRED, edges.INFLUENCES, events.<kind>
    (:StagedScores {scored_run_id, staged_for, segment, explanation, community, score_<name>...})
                                      a running analysis's scores for customer `staged_for`, until it publishes them
    (:ScoresPublishing {run_id, run_json})   a run whose scores are being published, with its final record

Times are stored as Neo4j `DATETIME`s in UTC, so they sort and compare in Cypher, but they travel as integer
microseconds since the epoch in both directions (`_datetime` builds them, `_at_us` reads them): the Python
driver converts each `datetime` in pure Python, measured here at some 100 us apiece, which would otherwise be
the largest client-side cost of both imports and exports.
"""

from __future__ import annotations

from typing import Final

from graph.model import ContactChannel, EdgeType

REFERRED: Final = EdgeType.REFERRED.value
INFLUENCES: Final = EdgeType.INFLUENCES.value
PERFORMED: Final = "PERFORMED"
SCORE_PREFIX: Final = "score_"
"""Each score `name` is the Customer property `score_<name>`, so marketers can `ORDER BY c.score_pagerank`."""

CONSENT_PROPERTIES: Final[dict[ContactChannel, str]] = {
    channel: f"consent_{channel.value}" for channel in ContactChannel
}

# --- schema (run at every open; each statement is idempotent) ------------------------------------------------
SCHEMA: Final[tuple[str, ...]] = (
    "CREATE CONSTRAINT customer_id_unique IF NOT EXISTS FOR (c:Customer) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT event_id_unique IF NOT EXISTS FOR (e:Event) REQUIRE e.id IS UNIQUE",
    "CREATE CONSTRAINT analysis_run_id_unique IF NOT EXISTS FOR (r:AnalysisRun) REQUIRE r.id IS UNIQUE",
    "CREATE CONSTRAINT erasure_count_key_unique IF NOT EXISTS FOR (t:ErasureCount) REQUIRE t.key IS UNIQUE",
    "CREATE CONSTRAINT scores_publishing_run_unique IF NOT EXISTS FOR (m:ScoresPublishing) REQUIRE m.run_id IS UNIQUE",
    # list_runs sorts by start time; marketers filter customers by segment.
    "CREATE INDEX analysis_run_started_at IF NOT EXISTS FOR (r:AnalysisRun) ON (r.started_at)",
    "CREATE INDEX customer_segment IF NOT EXISTS FOR (c:Customer) ON (c.segment)",
    # A run publishes its staged scores by run id; restaging and erasure delete them by customer id.
    "CREATE INDEX staged_scores_run IF NOT EXISTS FOR (s:StagedScores) ON (s.scored_run_id)",
    "CREATE INDEX staged_scores_customer IF NOT EXISTS FOR (s:StagedScores) ON (s.staged_for)",
)
SCHEMA_NAMES: Final[tuple[str, ...]] = tuple(statement.split()[2] for statement in SCHEMA)
ONLINE_INDEXES: Final = "SHOW INDEXES YIELD name, state WHERE name IN $names AND state = 'ONLINE' RETURN name"
AWAIT_INDEX: Final = "CALL db.awaitIndex($name, $timeout_s)"
"""Waits for our own indexes only: `db.awaitIndexes` would also wait for anyone else's in the database."""
SHOW_CONSTRAINTS: Final = (
    "SHOW CONSTRAINTS YIELD name, labelsOrTypes, properties RETURN name, labelsOrTypes, properties"
)

PING: Final = "RETURN 1 AS ok"


# --- writes --------------------------------------------------------------------------------------------------
def _datetime(us: str) -> str:
    """Cypher for the UTC DATETIME `us` microseconds after the epoch (null stays null).

    Times travel as integers because the driver converts a Python `datetime` in pure Python at some 100 us
    apiece, which made it the largest client-side cost of an import. Cypher's `/` and `%` truncate towards
    zero, hence the correction for times before 1970.
    """
    return (
        f"CASE WHEN {us} IS NULL THEN null ELSE datetime({{"
        f"epochSeconds: {us} / 1000000 - CASE WHEN {us} % 1000000 < 0 THEN 1 ELSE 0 END, "
        f"nanosecond: (({us} % 1000000 + 1000000) % 1000000) * 1000}}) END"
    )


_consent_set = ",\n    ".join(f"c.{prop} = row.{prop}" for prop in CONSENT_PROPERTIES.values())

MERGE_CUSTOMERS: Final = f"""
UNWIND $rows AS row
MERGE (c:Customer {{id: row.id}})
SET c.name = row.name, c.email = row.email, c.phone = row.phone, c.locale = row.locale,
    c.timezone = row.timezone, c.attributes_json = row.attributes_json, c.created_at = {_datetime("row.created_at_us")},
    {_consent_set}
"""
"""Replaces the personal fields only: scores written by analysis stay until the next `write_scores`."""

MISSING_CUSTOMERS: Final = """
UNWIND $ids AS id
OPTIONAL MATCH (c:Customer {id: id})
WITH id, c WHERE c IS NULL
RETURN id ORDER BY id
"""

EXISTING_CUSTOMERS: Final = """
UNWIND $ids AS id
MATCH (c:Customer {id: id})
RETURN c.id AS id
"""

MERGE_INFLUENCES: Final = f"""
UNWIND $rows AS row
MATCH (s:Customer {{id: row[0]}})
MATCH (t:Customer {{id: row[1]}})
MERGE (s)-[r:{INFLUENCES} {{kind: row[2]}}]->(t)
SET r.weight = row[3], r.at = {_datetime("row[4]")}
"""
"""Rows are `[source, target, kind, weight, at_us]`; the edge's identity is (source, target, kind)."""

MERGE_REFERRALS: Final = f"""
UNWIND $rows AS row
MATCH (a:Customer {{id: row[0]}})
MATCH (b:Customer {{id: row[1]}})
MERGE (a)-[r:{REFERRED}]->(b)
SET r.code = row[2], r.status = row[3], r.at = {_datetime("row[4]")}, r.status_at = {_datetime("row[5]")}
"""
"""Rows are `[referrer, friend, code, status, at_us, status_at_us]`; one edge per (referrer, friend)."""

CREATE_EVENTS: Final = f"""
UNWIND $rows AS row
MATCH (c:Customer {{id: row[0]}})
MERGE (e:Event {{id: row[1]}})
ON CREATE SET e.kind = row[2], e.at = {_datetime("row[3]")}, e.value = row[4], e.attributes_json = row[5],
              e.fresh = true
WITH c, e WHERE e.fresh
REMOVE e.fresh
CREATE (c)-[:{PERFORMED}]->(e)
"""
"""Rows are `[customer, event id, kind, at_us, value, attributes_json]`. An event id already stored is left as it is,
including whom it belongs to: `fresh` marks the ones this statement created, so only they get linked."""

WRITE_SCORES: Final = f"""
UNWIND $rows AS row
MATCH (c:Customer {{id: row.customer_id}})
FOREACH (k IN [k IN keys(c) WHERE k STARTS WITH '{SCORE_PREFIX}'] | REMOVE c[k])
SET c.scored_run_id = row.run_id, c.segment = row.segment, c.explanation = row.explanation,
    c.community = row.community, c += row.scores
RETURN count(c) AS written
"""
"""`row.scores` maps `score_<name>` to a float; earlier `score_*` properties are removed first (dynamic property
names are values here, not query text). Rows for customers that no longer exist (erased while the analysis ran)
are dropped rather than bringing the id back."""

UNSTAGE_SCORES: Final = """
UNWIND $keys AS key
MATCH (s:StagedScores {staged_for: key[0]}) WHERE s.scored_run_id = key[1]
DELETE s
"""
STAGE_SCORES: Final = """
UNWIND $rows AS row
CREATE (s:StagedScores {staged_for: row.customer_id, scored_run_id: row.run_id})
SET s += row.scores, s.segment = row.segment, s.explanation = row.explanation, s.community = row.community
RETURN count(s) AS written
"""
"""The staged node holds exactly what publishing copies onto the customer, plus `staged_for` (removed there).
Staging again replaces: `UNSTAGE_SCORES` first deletes the (customer, run) pairs about to be created, all of them
before any `CREATE` (a `MERGE` here seeks among the transaction's own new nodes, which grew quadratic: 220 s for
20,000 rows in one transaction, against 0.6 s for delete-then-create)."""

MARK_PUBLISHING: Final = """
MERGE (m:ScoresPublishing {run_id: $run_id})
ON CREATE SET m.run_json = $run_json
"""
"""Publishing moves the scores in slices; the marker holds the final record, so a publish cut off half way is
finished (not undone) by whoever calls `publish_scores` for the run again."""

PUBLISH_SLICE: Final = f"""
MATCH (s:StagedScores {{scored_run_id: $run_id}})
WITH s LIMIT $limit
OPTIONAL MATCH (c:Customer {{id: s.staged_for}})
FOREACH (_ IN CASE WHEN c IS NULL THEN [] ELSE [1] END |
    FOREACH (k IN [k IN keys(c) WHERE k STARTS WITH '{SCORE_PREFIX}'] | REMOVE c[k])
    SET c += properties(s), c.community = s.community
    REMOVE c.staged_for
)
DELETE s
RETURN count(s) AS moved, count(c) AS published
"""
"""`SET c += ...` leaves a property the staged node lacks alone, so `community` (absent when null) is set itself.
A customer erased since their scores were staged has no node: the staged one just goes."""

FINISH_PUBLISHING: Final = "MATCH (m:ScoresPublishing {run_id: $run_id}) DELETE m"
UNFINISHED_PUBLISHING: Final = "MATCH (m:ScoresPublishing) RETURN m.run_json AS json ORDER BY m.run_id"

STAGED_RUNS: Final = """
MATCH (s:StagedScores) WHERE s.scored_run_id IS NOT NULL
RETURN DISTINCT s.scored_run_id AS run_id ORDER BY run_id
"""
DISCARD_STAGED: Final = """
MATCH (s:StagedScores) WHERE s.scored_run_id IN $run_ids
DELETE s
RETURN count(*) AS discarded
"""
ERASE_STAGED_SCORES: Final = "MATCH (s:StagedScores {staged_for: $id}) DELETE s"

MERGE_RUN: Final = f"""
MERGE (r:AnalysisRun {{id: $id}})
SET r.started_at = {_datetime("$started_at_us")}, r.finished_at = {_datetime("$finished_at_us")}, r.status = $status,
    r.params_json = $params_json, r.timings_json = $timings_json, r.summary_json = $summary_json
"""

ERASURE_FOOTPRINT: Final = f"""
MATCH (c:Customer {{id: $id}})
RETURN COUNT {{ (c)-[:{REFERRED}]-() }} AS referred,
       COUNT {{ (c)-[:{INFLUENCES}]-() }} AS influences,
       COLLECT {{ MATCH (c)-[:{PERFORMED}]->(e:Event) RETURN e.kind }} AS event_kinds
"""

ERASE_CUSTOMER: Final = f"""
MATCH (c:Customer {{id: $id}})
OPTIONAL MATCH (c)-[:{PERFORMED}]->(e:Event)
DETACH DELETE e, c
"""

TALLY_ERASURE: Final = """
UNWIND $rows AS row
MERGE (t:ErasureCount {key: row.key})
ON CREATE SET t.count = 0
SET t.count = t.count + row.n
"""

DELETE_ALL: Final = """
MATCH (n) WHERE n:Customer OR n:Event OR n:AnalysisRun OR n:ErasureCount OR n:StagedScores
    OR n:ScoresPublishing
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS
"""
"""Auto-commit only (`CALL ... IN TRANSACTIONS`), in slices so a million edges don't fill one transaction."""

# --- reads ---------------------------------------------------------------------------------------------------
_at_us = "{at}.epochMillis * 1000 + {at}.microsecond % 1000"
"""A DATETIME as integer microseconds since the epoch (null stays null). Not `epochSeconds * 1000000 +
microsecond`: `epochSeconds` rounds towards zero, which is one second off for a fraction of a second before 1970."""

_customer_fields = ", ".join(
    ["c.id", "c.name", "c.email", "c.phone", "c.locale", "c.timezone", "c.attributes_json"]
    + [_at_us.format(at="c.created_at")]
    + [f"c.{prop}" for prop in CONSENT_PROPERTIES.values()]
)
CUSTOMER_FIELD_COUNT: Final = 8 + len(CONSENT_PROPERTIES)

GET_CUSTOMER: Final = f"MATCH (c:Customer {{id: $id}}) RETURN [{_customer_fields}] AS row"
GET_CUSTOMERS: Final = f"UNWIND $ids AS id MATCH (c:Customer {{id: id}}) RETURN [{_customer_fields}] AS row"

_page = """
MATCH (c:Customer) WHERE c.id > $after{also}
WITH c ORDER BY c.id LIMIT $limit
"""
"""The head of every export: the next `$limit` customers after `$after`, read in the order of the unique index
on `Customer.id` (no sort). Each export returns one record per page, `last` (the page's last id, null when
there are no more) and `rows`: the Python driver spends some 15 us of framing and bookkeeping per record, which
made it the largest cost of streaming a million edges row by row."""

ITER_CUSTOMERS: Final = (
    _page.format(also="") + f"RETURN last(collect(c.id)) AS last, collect([{_customer_fields}]) AS rows"
)

_score_fields = (
    "[c.id, c.scored_run_id, c.segment, c.explanation, c.community, "
    f"[k IN keys(c) WHERE k STARTS WITH '{SCORE_PREFIX}' | [substring(k, {len(SCORE_PREFIX)}), c[k]]]]"
)

GET_SCORES: Final = f"""
MATCH (c:Customer {{id: $id}}) WHERE c.scored_run_id IS NOT NULL
RETURN {_score_fields} AS row
"""

ITER_SCORES: Final = (
    _page.format(also=" AND c.scored_run_id IS NOT NULL")
    + f"RETURN last(collect(c.id)) AS last, collect({_score_fields}) AS rows"
)

_run_fields = (
    f"[r.id, {_at_us.format(at='r.started_at')}, {_at_us.format(at='r.finished_at')}, r.status, "
    "r.params_json, r.timings_json, r.summary_json] AS row"
)
GET_RUN: Final = f"MATCH (r:AnalysisRun {{id: $id}}) RETURN {_run_fields}"
LIST_RUNS: Final = f"MATCH (r:AnalysisRun) RETURN {_run_fields} ORDER BY r.started_at DESC, r.id DESC LIMIT $limit"

COUNT_CUSTOMERS: Final = "MATCH (c:Customer) RETURN count(c) AS n"
COUNT_EDGES: Final[dict[EdgeType, str]] = {
    edge_type: f"MATCH ()-[r:{edge_type.value}]->() RETURN count(r) AS n" for edge_type in EdgeType
}
"""Answered from Neo4j's count store, without reading a single relationship."""
COUNT_EVENTS_BY_KIND: Final = "MATCH (e:Event) RETURN e.kind AS kind, count(*) AS n ORDER BY kind"
ERASURE_COUNTS: Final = "MATCH (t:ErasureCount) RETURN t.key AS key, t.count AS n ORDER BY key"

EXPORT_EDGES: Final[dict[EdgeType, str]] = {
    EdgeType.INFLUENCES: _page.format(also="")
    + f"""RETURN last(collect(c.id)) AS last, collect([c.id, [(c)-[r:{INFLUENCES}]->(t)
        | [t.id, r.kind, r.weight, {_at_us.format(at="r.at")}]]]) AS rows""",
    EdgeType.REFERRED: _page.format(also="")
    + f"""RETURN last(collect(c.id)) AS last, collect([c.id, [(c)-[r:{REFERRED}]->(t)
        | [t.id, r.status, 1.0, {_at_us.format(at="r.at")}]]]) AS rows""",
}
"""Rows are `[source, [[target, label, weight, at_us], ...]]` per customer of the page; the label is the influence
kind or the referral status. Both types only ever join two customers, so `t` needs no label check."""

EDGES_PER_CUSTOMER: Final = 10
"""For sizing pages: `batch_size` edges are about `batch_size / 10` customers."""

EVENT_SUMMARIES: Final = (
    _page.format(also="")
    + f"""CALL (c) {{
    MATCH (c)-[:{PERFORMED}]->(e:Event)
    WITH e.kind AS kind, count(*) AS n, sum(coalesce(e.value, 0.0)) AS total, max(e.at) AS at
    ORDER BY kind
    RETURN collect([kind, n, total, {_at_us.format(at="at")}]) AS summaries
}}
RETURN last(collect(c.id)) AS last, collect([c.id, summaries]) AS rows
"""
)
"""Rows are `[customer, [[kind, count, total, last_at_us], ...]]`, aggregated per customer in the page."""

REFERRALS_FROM: Final = f"""
MATCH (:Customer {{id: $id}})-[r:{REFERRED}]->(f:Customer)
RETURN [f.id, r.status, {_at_us.format(at="r.at")}] AS row ORDER BY f.id
"""
EDGES_OF: Final = f"""
MATCH (:Customer {{id: $id}})-[r:{REFERRED}|{INFLUENCES}]-()
WHERE type(r) IN $types
RETURN [startNode(r).id, endNode(r).id, type(r), CASE type(r) WHEN '{REFERRED}' THEN r.status ELSE r.kind END,
        CASE type(r) WHEN '{REFERRED}' THEN 1.0 ELSE r.weight END, {_at_us.format(at="r.at")}] AS row
"""
"""Rows are `[source, target, type, label, weight, at_us]`, each edge once in the direction it was stored; `$types`
are `EdgeType` values. The label is the referral status or the influence kind, as `EXPORT_EDGES` gives it."""
EVENTS_OF: Final = f"""
MATCH (:Customer {{id: $id}})-[:{PERFORMED}]->(e:Event) WHERE $kind IS NULL OR e.kind = $kind
RETURN [e.id, e.kind, {_at_us.format(at="e.at")}, e.value, e.attributes_json] AS row
ORDER BY e.at DESC, e.id LIMIT $limit
"""
GET_EVENT: Final = f"""
MATCH (c:Customer)-[:{PERFORMED}]->(e:Event {{id: $id}})
RETURN [c.id, e.kind, {_at_us.format(at="e.at")}, e.value, e.attributes_json] AS row
"""
