"""Contact caps and back-off, counted atomically per person, so no interleaving of workers can exceed a cap.

The semantics, shared by both limiters (and by the reference model in `tests/integration/test_limits.py`):

- A reservation is an entry (token -> time) in the person's scopes: a marketing message or an invitation in
  `overall` and in its channel's scope, a transactional message in `transactional`. A cap of `limit` in
  `window_days` counts the scope's entries later than `at - window`: a sliding window, so a contact stops
  counting exactly one window after it was made. Each reservation first forgets the person's entries (in every
  scope) at or before `at - keep`, `keep` being the policy's longest window (at least a day).
- Back-off: each marketing or invitation reservation stays unanswered until an engagement at or after it. With
  `n` unanswered and `n >= backoff_after_ignored`, the next needs `backoff_base_days * backoff_factor ** (n -
  backoff_after_ignored)` days (at most ten years) since the last one. Unanswered reservations are forgotten
  when `backoff_memory_days` have passed since the next one was allowed.
- A refusal names its binding check, the one that allows latest (a cap of 0 never does; on ties the first of
  overall caps, channel caps, back-off), and `retry_at` is when it would allow if nothing else were sent.
- `token` (the outbox key) makes `reserve` idempotent while its entry is kept; `release` removes it.

Times are integer microseconds since the Unix epoch, the caller's `at` rather than a server clock, so tests and
several workers agree on what "now" is. Production passes the current time.

**Redis** (`RedisContactLimiter`) runs one Lua script per reservation (loaded once, called by EVALSHA), so the
checks and the recording are one server-side step. A person is one sorted set (member -> time), key
`<prefix>{<person key>}`, whose members are `<scope>|<token>` (`m`, `c:<channel>`, `t`) and `b|<token>` for
each unanswered reservation. One read of the set serves every scope, cap and the back-off, and the plan
travels as one packed argument: that halved the script's time against a set per scope with a ZCOUNT per cap.
Unanswered reservations are members rather than a hash of counters, so `release` undoes one exactly and an
engagement answers only what was sent before it. The braces are a cluster hash tag. The key's TTL is extended
on every write (`PEXPIRE ... GT`, Redis 7+) to the longest window, or to the next back-off wait plus the
back-off memory, so Redis does not grow with people no longer contacted. The TTL only reclaims memory: the
logic runs on the callers' `at`, whatever the server's clock says.

The counts are a promise to people, so Redis must keep them: run it with `appendonly yes` and `appendfsync
everysec` at least (a crash loses at most a second of reservations; `always` loses none), and `maxmemory-policy
noeviction`: an evicting policy would silently drop counts, while a full Redis refuses the script, the
reservation fails with `StoreUnavailable`, and the message waits. A failover to an asynchronous replica may
lose the last writes too; `min-replicas-to-write` narrows that window.

Should Redis lose its counts all the same (a restart without persistence, a flush, an eviction), the outbox is
the record of what was sent. `make_limiter` builds the Redis limiter with `detect_loss`: a `<prefix>ready` key,
written once the counts are known, must exist for a reservation to be decided (the script checks it in the
same atomic step), else `reserve` raises `LimiterStateLost`. `restore` then rebuilds every person's entries
from the messages the outbox holds as sent within the longest window, as if each had been reserved and never
answered (engagements are not in the outbox, so the back-off errs on the side of waiting), and sets the key;
one caller restores under a lock while the others wait for it (`OutreachService` does this).

**SQLite** (`SqliteContactLimiter`) keeps the same entries in one table and runs each reservation in one `BEGIN
IMMEDIATE` transaction, in WAL mode, on a connection per thread, retrying while the file is locked.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

import redis

from engine.contact_policy import Cap, ContactPolicy
from graph.errors import InvalidInput, StoreUnavailable
from graph.model import ContactChannel
from graph.outreach import HoldReason, MessageKind
from graph.sqlite_store import ThreadConnections, _Connection

if TYPE_CHECKING:
    from engine.settings import Settings

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US: Final = 86_400_000_000
_MIN_KEEP_US: Final = _DAY_US
"""Entries are kept at least a day, so a retried token is recognised even under a policy without caps."""
MAX_BACKOFF_DAYS: Final = 3660
_MAX_WAIT_US: Final = MAX_BACKOFF_DAYS * _DAY_US

T = TypeVar("T")


class LimiterStateLost(StoreUnavailable):
    """Redis no longer holds the contact counts (it restarted empty): `restore` them before deciding anything."""


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """The limiter's answer: allowed (and recorded), or why not (`CAP` or `BACKOFF`) and until when."""

    allowed: bool
    reason: HoldReason | None = None
    detail: str = ""
    """Names the binding check, e.g. "1 in 7 days (overall)"."""
    retry_at: datetime | None = None
    """When the binding check would allow if nothing else were sent; None for a cap of 0."""


ALLOWED: Final = LimitDecision(allowed=True)


class Reservation(NamedTuple):
    """One `reserve` call's arguments, for `reserve_many`."""

    person_key: str
    channel: ContactChannel
    kind: MessageKind
    at: datetime
    token: str


class ContactLimiter(Protocol):
    """Caps and back-off per person, checked and recorded in one atomic step (see the module docstring)."""

    def reserve(
        self,
        person_key: str,
        channel: ContactChannel,
        kind: MessageKind,
        *,
        at: datetime,
        policy: ContactPolicy,
        token: str,
    ) -> LimitDecision:
        """Check every applicable cap and the back-off; when all pass, record the contact under `token`."""
        ...

    def release(self, person_key: str, channel: ContactChannel, kind: MessageKind, *, token: str) -> None:
        """Undo a reservation whose message will never be sent (a permanent delivery failure)."""
        ...

    local_reads: bool
    """`would_answer` is a read in this process that waits on neither the network nor a writer (SQLite)."""

    def record_engagement(self, person_key: str, *, at: datetime) -> None:
        """The person answered (clicked, shared, replied): messages sent up to `at` are no longer ignored."""
        ...

    def would_answer(self, person_key: str, *, at: datetime) -> bool:
        """Whether an engagement at `at` would change anything: a message up to then still waits for an answer."""
        ...

    def forget(self, person_key: str) -> None:
        """Erase everything counted about the person."""
        ...

    def restore(
        self, contacts: Callable[[datetime], Iterable[Reservation]], *, at: datetime, policy: ContactPolicy
    ) -> None:
        """After `LimiterStateLost`: record `contacts(since)` (the outbox's sends after `since`) as reservations."""
        ...

    def close(self) -> None: ...


# --- what a reservation checks, shared by both limiters --------------------------------------------------------
def to_us(value: datetime) -> int:
    """Microseconds since the epoch; naive times are UTC."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return (aware - _EPOCH) // timedelta(microseconds=1)


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def days_us(days: float) -> int:
    return round(days * _DAY_US)


def backoff_wait_us(policy: ContactPolicy, unanswered: int) -> int:
    """How long after the last message the next must wait, with `unanswered` messages ignored so far."""
    if unanswered < policy.backoff_after_ignored:
        return 0
    base_us = policy.backoff_base_days * _DAY_US
    try:
        raw = base_us * policy.backoff_factor ** (unanswered - policy.backoff_after_ignored)
    except OverflowError:
        return _MAX_WAIT_US
    if raw >= _MAX_WAIT_US:
        return _MAX_WAIT_US
    return math.floor(raw + 0.5)


def _days(us: int | float) -> str:
    days = us / _DAY_US
    return f"{days:g} day" if days == 1 else f"{days:g} days"


@dataclass(frozen=True, slots=True)
class _Scope:
    suffix: str
    """Names the scope's members (Redis: `<suffix>|<token>`) or rows (SQLite): `m`, `c:<channel>`, `t`."""
    name: str
    """For people: `overall`, the channel, `transactional`."""
    caps: tuple[tuple[int, int, Cap], ...]
    """(limit, window in microseconds, the cap)."""


_UNANSWERED: Final = "b"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one (policy, channel, kind) reservation checks; built once per policy object and reused."""

    policy: ContactPolicy
    scopes: tuple[_Scope, ...]
    backoff: bool
    keep_us: int

    def cap_refusal(self, scope: int, cap: int, retry_us: int | None) -> LimitDecision:
        limit, window_us, _ = self.scopes[scope].caps[cap]
        detail = f"{limit} in {_days(window_us)} ({self.scopes[scope].name})"
        return LimitDecision(False, HoldReason.CAP, detail, None if retry_us is None else from_us(retry_us))

    @staticmethod
    def backoff_refusal(unanswered: int, wait_us: int, retry_us: int) -> LimitDecision:
        messages = "1 message" if unanswered == 1 else f"{unanswered} messages"
        detail = f"{messages} unanswered: {_days(wait_us)} before the next"
        return LimitDecision(False, HoldReason.BACKOFF, detail, from_us(retry_us))


def _scope_caps(caps: Iterable[Cap]) -> tuple[tuple[int, int, Cap], ...]:
    return tuple((cap.limit, days_us(cap.window_days), cap) for cap in caps)


def _make_plan(policy: ContactPolicy, channel: ContactChannel, kind: MessageKind) -> _Plan:
    windows = [cap.window_days for cap in (*policy.caps, *policy.transactional_caps)]
    windows += [cap.window_days for caps in policy.channel_caps.values() for cap in caps]
    keep_us = max([_MIN_KEEP_US, *(days_us(days) for days in windows)])
    if kind is MessageKind.TRANSACTIONAL:
        transactional = _Scope("t", "transactional", _scope_caps(policy.transactional_caps))
        return _Plan(policy, (transactional,), backoff=False, keep_us=keep_us)
    overall = _Scope("m", "overall", _scope_caps(policy.caps))
    own = _Scope(f"c:{channel.value}", channel.value, _scope_caps(policy.channel_caps.get(channel, ())))
    return _Plan(policy, (overall, own), backoff=True, keep_us=keep_us)


def _suffixes(channel: ContactChannel, kind: MessageKind) -> tuple[str, ...]:
    if kind is MessageKind.TRANSACTIONAL:
        return ("t",)
    return ("m", f"c:{channel.value}", _UNANSWERED)


class _Plans:
    """Plans cached per policy object (a policy holds a dict, so it cannot be hashed itself)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, ContactChannel, MessageKind], tuple[_Plan, Any]] = {}
        self._lock = threading.Lock()

    def get(
        self, policy: ContactPolicy, channel: ContactChannel, kind: MessageKind, extra: Callable[[_Plan], T]
    ) -> tuple[_Plan, T]:
        key = (id(policy), channel, kind)
        found = self._cache.get(key)
        if found is not None and found[0].policy is policy:
            plan, value = found
            return plan, value
        plan = _make_plan(policy, channel, kind)
        made = (plan, extra(plan))
        with self._lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = made
        return made


def _later(retry_us: int | None, best_us: int | None, have_best: bool) -> bool:
    """Whether a refusal allowing at `retry_us` binds more than the best so far (None means never)."""
    if not have_best:
        return True
    if best_us is None:
        return False
    return retry_us is None or retry_us > best_us


# --- Redis -----------------------------------------------------------------------------------------------------
_LUA_REMOVE: Final = """
local function remove(key, members)
  for j = 1, #members, 1000 do
    redis.call('ZREM', key, unpack(members, j, math.min(j + 999, #members)))
  end
end
"""

_RESERVE_LUA: Final = (
    _LUA_REMOVE
    + """
local key, at, token = KEYS[1], tonumber(ARGV[1]), ARGV[2]
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 0 then
  return 2
end
local plan = {struct.unpack('<' .. string.rep('d', #ARGV[3] / 8), ARGV[3])}
local nscopes = #ARGV - 3
local first = ARGV[4] .. token
local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
for j = 1, #entries, 2 do
  if entries[j] == first then
    return 1
  end
end
local trim = at - plan[1]
local scores, unanswered, stale, last = {}, {}, {}, 0
for s = 1, nscopes do
  scores[s] = {}
end
for j = 1, #entries, 2 do
  local member, score = entries[j], tonumber(entries[j + 1])
  if string.sub(member, 1, 2) == 'b|' then
    unanswered[#unanswered + 1] = member
    last = score
  elseif score <= trim then
    stale[#stale + 1] = member
  else
    for s = 1, nscopes do
      local prefix = ARGV[3 + s]
      if string.sub(member, 1, #prefix) == prefix then
        local list = scores[s]
        list[#list + 1] = score
      end
    end
  end
end
local kept = #entries / 2 - #stale
remove(key, stale)
local best, best_retry = nil, nil
local function binds(retry)
  if best == nil then return true end
  if best_retry == -1 then return false end
  return retry == -1 or retry > best_retry
end
local i = 3
for s = 1, nscopes do
  local list = scores[s]
  local ncaps = plan[i]
  i = i + 1
  for c = 1, ncaps do
    local limit, window = plan[i], plan[i + 1]
    i = i + 2
    local low, count = at - window, 0
    for k = #list, 1, -1 do
      if list[k] <= low then break end
      count = count + 1
    end
    if count >= limit then
      local retry = -1
      if limit > 0 then
        retry = list[#list - limit + 1] + window
      end
      if binds(retry) then
        best, best_retry = {0, 1, s, c, retry}, retry
      end
    end
  end
end
local backoff, n, after, base, factor, max_wait, memory = plan[i] == 1, 0, 0, 0, 1, 0, 0
local function wait_for(k)
  if k < after then return 0 end
  local w = base * factor ^ (k - after)
  if w >= max_wait then return max_wait end
  return math.floor(w + 0.5)
end
if backoff then
  after, base, factor, max_wait, memory = plan[i + 1], plan[i + 2], plan[i + 3], plan[i + 4], plan[i + 5]
  n = #unanswered
  if n > 0 then
    local wait = wait_for(n)
    if at >= last + wait + memory then
      remove(key, unanswered)
      kept = kept - n
      n = 0
    elseif n >= after and at < last + wait and binds(last + wait) then
      best = {0, 2, n, wait, last + wait}
    end
  end
end
if best then
  return best
end
local added = {}
for s = 1, nscopes do
  added[2 * s - 1] = ARGV[1]
  added[2 * s] = ARGV[3 + s] .. token
end
local ttl = plan[2]
if backoff then
  added[#added + 1] = ARGV[1]
  added[#added + 1] = 'b|' .. token
  ttl = math.max(ttl, math.ceil((wait_for(n + 1) + memory) / 1000))
end
redis.call('ZADD', key, unpack(added))
if kept > 0 then
  redis.call('PEXPIRE', key, string.format('%.0f', ttl), 'GT')
else
  redis.call('PEXPIRE', key, string.format('%.0f', ttl))
end
return 1
"""
)
"""KEYS: the person's set, and with `detect_loss` the `ready` key. ARGV: at, token, the plan packed as doubles (see
`_redis_plan`), then the member prefix of each scope. Returns 1 when allowed, 2 (having done nothing) when the
`ready` key is missing, else {0, 1, scope, cap, retry or -1} for a cap or {0, 2, unanswered, wait, retry} for the
back-off."""

_ENGAGE_LUA: Final = (
    _LUA_REMOVE
    + """
local answered = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  if string.sub(member, 1, 2) == 'b|' then
    answered[#answered + 1] = member
  end
end
remove(KEYS[1], answered)
return #answered
"""
)


_MARK_READY_LUA: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"""
"""KEYS: the restore lock, the ready key (empty: only give the lock back). ARGV: the lock's owner, the time
restored. Acts only while the lock is still ours (a Redis that restarted during the restore has lost it)."""

_RESERVE_SHA: Final = hashlib.sha1(_RESERVE_LUA.encode(), usedforsecurity=False).hexdigest()
_ENGAGE_SHA: Final = hashlib.sha1(_ENGAGE_LUA.encode(), usedforsecurity=False).hexdigest()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A plan's part of the EVALSHA command, in RESP, built once: `head` before the key, `tail` after the token."""

    head: bytes
    tail: bytes


def _redis_plan(plan: _Plan, keys: int = 1) -> _Encoded:
    """The script's arguments after `at` and `token`: a few packed doubles rather than a score of arguments,
    each of which costs the client and the server about a microsecond."""
    values: list[float] = [plan.keep_us, math.ceil(plan.keep_us / 1000)]
    for scope in plan.scopes:
        values.append(len(scope.caps))
        for limit, window_us, _ in scope.caps:
            values += [limit, window_us]
    if plan.backoff:
        policy = plan.policy
        values += [
            1,
            policy.backoff_after_ignored,
            policy.backoff_base_days * _DAY_US,
            policy.backoff_factor,
            _MAX_WAIT_US,
            days_us(policy.backoff_memory_days),
        ]
    else:
        values.append(0)
    args = [struct.pack(f"<{len(values)}d", *values), *(f"{scope.suffix}|".encode() for scope in plan.scopes)]
    head = b"*%d\r\n" % (5 + keys + len(args)) + _bulk(b"EVALSHA") + _bulk(_RESERVE_SHA.encode())
    head += _bulk(b"%d" % keys)
    return _Encoded(head, b"".join(_bulk(arg) for arg in args))


_LOST: Final = 2
"""The script's answer when the `ready` key is missing."""


def _redis_decision(plan: _Plan, raw: int | Sequence[int]) -> LimitDecision:
    if raw == _LOST:
        raise LimiterStateLost("the contact limiter's Redis has lost its counts; they must be restored first")
    if isinstance(raw, int):
        return ALLOWED
    if raw[1] == 1:
        return plan.cap_refusal(int(raw[2]) - 1, int(raw[3]) - 1, None if raw[4] == -1 else int(raw[4]))
    return plan.backoff_refusal(int(raw[2]), int(raw[3]), int(raw[4]))


class RedisContactLimiter:
    """The production limiter: one Lua script per reservation (see the module docstring for persistence).

    Reservations are written to the connection as RESP built from pre-encoded parts and their replies read in
    order, one round trip per batch: redis-py's generic command packing cost more than the script itself.
    Scripts are called by EVALSHA and loaded on the first NOSCRIPT answer (a new or restarted server). A batch
    whose connection fails is sent once more on a new connection: tokens make that safe.

    With `detect_loss`, a reservation on a Redis that has lost its counts raises `LimiterStateLost` until
    `restore` has run (see the module docstring); without it (a bare limiter in tests and benchmarks), an empty
    Redis simply means nobody was contacted.
    """

    local_reads = False

    RESTORE_LOCK_S: Final = 300.0
    """How long a restoring worker holds the lock: if it dies, another restores after this."""

    def __init__(
        self, client: redis.Redis[Any] | str, *, prefix: str = "adv:contact:", detect_loss: bool = False
    ) -> None:
        if isinstance(client, str):
            self._client = redis.Redis.from_url(client, socket_connect_timeout=5, socket_timeout=10)
            self._owned = True
        else:
            self._client = client
            self._owned = False
        self._prefix = prefix
        self._plans = _Plans()
        self._ready = f"{prefix}ready"
        self._ready_arg = _bulk(self._ready.encode()) if detect_loss else b""
        self._encode: Callable[[_Plan], _Encoded] = lambda plan: _redis_plan(plan, 2 if detect_loss else 1)

    def _key(self, person_key: str) -> str:
        return f"{self._prefix}{{{person_key}}}"

    @staticmethod
    def _unavailable(exc: redis.RedisError) -> StoreUnavailable:
        return StoreUnavailable(f"the contact limiter's Redis failed ({type(exc).__name__}): {exc}")

    def _load_scripts(self) -> None:
        for script in (_RESERVE_LUA, _ENGAGE_LUA):
            self._client.execute_command("SCRIPT", "LOAD", script)

    def _send(self, commands: Sequence[bytes]) -> list[Any]:
        """Encoded commands in one write; their replies in order, error replies in place."""
        pool: Any = self._client.connection_pool
        for attempt in (1, 2):
            try:
                connection = pool.get_connection()
            except TypeError:  # redis-py before 5.3 wants a command name
                connection = pool.get_connection("EVALSHA")
            try:
                connection.send_packed_command([b"".join(commands)])
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
                return replies
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                if attempt == 2:
                    raise
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
        raise AssertionError("unreachable")

    def _run_scripts(self, commands: Sequence[bytes]) -> list[Any]:
        try:
            replies = self._send(commands)
            unloaded = [n for n, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
            if unloaded:
                self._load_scripts()
                for n, reply in zip(unloaded, self._send([commands[n] for n in unloaded]), strict=True):
                    replies[n] = reply
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        for reply in replies:
            if isinstance(reply, redis.RedisError):
                raise self._unavailable(reply) from reply
        return replies

    def _command(self, r: Reservation, policy: ContactPolicy) -> tuple[_Plan, bytes]:
        plan, encoded = self._plans.get(policy, r.channel, r.kind, self._encode)
        key, at, token = self._key(r.person_key).encode(), b"%d" % to_us(r.at), r.token.encode()
        return plan, encoded.head + _bulk(key) + self._ready_arg + _bulk(at) + _bulk(token) + encoded.tail

    def reserve(
        self,
        person_key: str,
        channel: ContactChannel,
        kind: MessageKind,
        *,
        at: datetime,
        policy: ContactPolicy,
        token: str,
    ) -> LimitDecision:
        plan, command = self._command(Reservation(person_key, channel, kind, at, token), policy)
        return _redis_decision(plan, self._run_scripts([command])[0])

    def reserve_many(self, reservations: Iterable[Reservation], *, policy: ContactPolicy) -> list[LimitDecision]:
        """Several reservations in one round trip; each is still its own atomic step, in order."""
        plans, commands = [], []
        for reservation in reservations:
            plan, command = self._command(reservation, policy)
            plans.append(plan)
            commands.append(command)
        if not commands:
            return []
        return [_redis_decision(plan, raw) for plan, raw in zip(plans, self._run_scripts(commands), strict=True)]

    def release(self, person_key: str, channel: ContactChannel, kind: MessageKind, *, token: str) -> None:
        members = [f"{suffix}|{token}" for suffix in _suffixes(channel, kind)]
        try:
            self._client.zrem(self._key(person_key), *members)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def record_engagement(self, person_key: str, *, at: datetime) -> None:
        arguments = (_ENGAGE_SHA, 1, self._key(person_key), to_us(at))
        try:
            try:
                self._client.execute_command("EVALSHA", *arguments)
            except redis.exceptions.NoScriptError:
                self._load_scripts()
                self._client.execute_command("EVALSHA", *arguments)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def would_answer(self, person_key: str, *, at: datetime) -> bool:
        try:
            members = self._client.zrangebyscore(self._key(person_key), "-inf", to_us(at))
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        prefix = f"{_UNANSWERED}|"
        return any((m.decode() if isinstance(m, bytes) else str(m)).startswith(prefix) for m in members)

    def forget(self, person_key: str) -> None:
        try:
            self._client.delete(self._key(person_key))
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def restore(
        self,
        contacts: Callable[[datetime], Iterable[Reservation]],
        *,
        at: datetime,
        policy: ContactPolicy,
        wait_s: float = 30.0,
    ) -> None:
        """Rebuild the counts from `contacts(since)` once, under a lock, then mark Redis ready.

        Each contact is recorded as its reservation would have been (its scopes and, for marketing, one unanswered
        message), at its own time. Callers that find the lock taken wait up to `wait_s` for the holder to finish,
        then raise `StoreUnavailable`. The ready key is set only if the lock is still ours: a Redis that restarted
        again while this ran has lost the lock too, and the next reservation starts over.
        """
        keep_us = _make_plan(policy, ContactChannel.EMAIL, MessageKind.MARKETING).keep_us
        now_us = to_us(at)
        owner = os.urandom(8).hex()
        lock = f"{self._prefix}restoring"
        try:
            if self._client.exists(self._ready):
                return
            if not self._client.set(lock, owner, nx=True, px=int(self.RESTORE_LOCK_S * 1000)):
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    if self._client.exists(self._ready):
                        return
                    time.sleep(0.05)
                raise StoreUnavailable("the contact counts are being restored from the outbox; try again shortly")
            try:
                since_us = now_us - keep_us
                self._write_contacts(contacts(from_us(since_us)), policy, since_us=since_us, keep_us=keep_us)
                marked = self._client.execute_command("EVAL", _MARK_READY_LUA, 2, lock, self._ready, owner, now_us)
            except BaseException:  # give the lock back, marking nothing
                with contextlib.suppress(redis.RedisError):
                    self._client.execute_command("EVAL", _MARK_READY_LUA, 2, lock, "", owner, 0)
                raise
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        if not marked:
            raise LimiterStateLost("the contact limiter's Redis lost its counts again while they were restored")

    def _write_contacts(
        self, contacts: Iterable[Reservation], policy: ContactPolicy, *, since_us: int, keep_us: int
    ) -> None:
        entries: dict[str, dict[str | bytes, bytes | float | int | str]] = {}
        unanswered: dict[str, set[str]] = {}
        for contact in contacts:
            at_us = to_us(contact.at)
            if at_us <= since_us:
                continue
            key = self._key(contact.person_key)
            members = entries.setdefault(key, {})
            members.update({f"{s}|{contact.token}": at_us for s in _suffixes(contact.channel, contact.kind)})
            if contact.kind is not MessageKind.TRANSACTIONAL:
                unanswered.setdefault(key, set()).add(contact.token)
        memory_us = days_us(policy.backoff_memory_days)
        people = list(entries.items())
        for start in range(0, len(people), 1000):
            pipe = self._client.pipeline(transaction=False)
            for key, members in people[start : start + 1000]:
                waited_us = backoff_wait_us(policy, len(unanswered.get(key, ())))
                pipe.zadd(key, members)
                pipe.pexpire(key, math.ceil(max(keep_us, waited_us + memory_us) / 1000))
            pipe.execute()

    def close(self) -> None:
        if self._owned:
            self._client.close()


# --- SQLite ----------------------------------------------------------------------------------------------------
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS contact_log (
        person TEXT NOT NULL,
        scope TEXT NOT NULL,
        token TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        PRIMARY KEY (person, scope, token)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS contact_log_by_time ON contact_log(person, scope, at_us)",
)
_UNANSWERED_BY: Final = "SELECT 1 FROM contact_log WHERE person = ? AND scope = ? AND at_us <= ? LIMIT 1"
_ANSWER: Final = "DELETE FROM contact_log WHERE person = ? AND scope = ? AND at_us <= ?"
_RESERVED_BEFORE: Final = "SELECT 1 FROM contact_log WHERE person = ? AND scope = ? AND token = ?"
_TRIM: Final = "DELETE FROM contact_log WHERE person = ? AND scope != ? AND at_us <= ?"
_COUNT: Final = "SELECT count(*) FROM contact_log WHERE person = ? AND scope = ? AND at_us > ?"
_NTH: Final = (
    "SELECT at_us FROM contact_log WHERE person = ? AND scope = ? AND at_us > ? ORDER BY at_us LIMIT 1 OFFSET ?"
)
_UNANSWERED_STATE: Final = "SELECT count(*), max(at_us) FROM contact_log WHERE person = ? AND scope = ?"
_INSERT: Final = "INSERT OR REPLACE INTO contact_log (person, scope, token, at_us) VALUES (?, ?, ?, ?)"

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


def _sqlite_reserve(conn: sqlite3.Connection, person: str, plan: _Plan, at_us: int, token: str) -> LimitDecision:
    if conn.execute(_RESERVED_BEFORE, (person, plan.scopes[0].suffix, token)).fetchone() is not None:
        return ALLOWED
    best: LimitDecision | None = None
    best_us: int | None = None
    conn.execute(_TRIM, (person, _UNANSWERED, at_us - plan.keep_us))
    for s, scope in enumerate(plan.scopes):
        for c, (limit, window_us, _) in enumerate(scope.caps):
            low = at_us - window_us
            count = conn.execute(_COUNT, (person, scope.suffix, low)).fetchone()[0]
            if count < limit:
                continue
            retry: int | None = None
            if limit > 0:
                retry = conn.execute(_NTH, (person, scope.suffix, low, count - limit)).fetchone()[0] + window_us
            if _later(retry, best_us, best is not None):
                best, best_us = plan.cap_refusal(s, c, retry), retry
    unanswered = 0
    if plan.backoff:
        policy = plan.policy
        unanswered, last = conn.execute(_UNANSWERED_STATE, (person, _UNANSWERED)).fetchone()
        if unanswered:
            wait = backoff_wait_us(policy, unanswered)
            if at_us >= last + wait + days_us(policy.backoff_memory_days):
                conn.execute("DELETE FROM contact_log WHERE person = ? AND scope = ?", (person, _UNANSWERED))
                unanswered = 0
            elif unanswered >= policy.backoff_after_ignored and at_us < last + wait:
                retry_backoff = last + wait
                if _later(retry_backoff, best_us, best is not None):
                    best, best_us = plan.backoff_refusal(unanswered, wait, retry_backoff), retry_backoff
    if best is not None:
        return best
    rows = [(person, scope.suffix, token, at_us) for scope in plan.scopes]
    if plan.backoff:
        rows.append((person, _UNANSWERED, token, at_us))
    conn.executemany(_INSERT, rows)
    return ALLOWED


class SqliteContactLimiter:
    """The embedded limiter: the Redis limiter's semantics in one SQLite transaction per reservation."""

    local_reads = True

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout_s: float = 30.0, busy_timeout_ms: int = 2_000):
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise InvalidInput(f"contact limiter path {raw!r} is not a file path (workers must share one file)")
        self._path = Path(raw).expanduser().absolute()
        if not self._path.parent.is_dir():
            raise InvalidInput(f"cannot create {self._path}: directory {self._path.parent} does not exist")
        self._lock_timeout_s = lock_timeout_s
        self._busy_timeout_ms = busy_timeout_ms
        self._closed = False
        self._plans = _Plans()
        self._connections = ThreadConnections(self._open)
        self._run(self._set_up, begin=False)

    # --- connections -----------------------------------------------------------------------------------------
    def _open(self) -> _Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _connection(self) -> _Connection:
        if self._closed:
            raise StoreUnavailable(f"the contact limiter {self._path} has been closed")
        return self._connections.get()

    def _set_up(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"contact limiter {self._path} cannot use a write-ahead log (mode {mode!r})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _run(self, work: Callable[[sqlite3.Connection], T], *, begin: bool = True) -> T:
        """`work` in one `BEGIN IMMEDIATE` transaction, retried with jittered back-off while the file is locked."""
        deadline = time.monotonic() + self._lock_timeout_s
        delay = 0.002
        while True:
            try:
                conn = self._connection()
                if begin:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    if begin:
                        conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as exc:
                remaining = deadline - time.monotonic()
                if _is_busy(exc) and remaining > 0:
                    time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
                    delay = min(delay * 2, 0.1)
                    continue
                if _is_busy(exc):
                    raise StoreUnavailable(
                        f"contact limiter {self._path} stayed locked for {self._lock_timeout_s:g} s; try again"
                    ) from exc
                raise StoreUnavailable(f"contact limiter {self._path} failed: {exc}") from exc

    # --- the limiter ----------------------------------------------------------------------------------------
    def reserve(
        self,
        person_key: str,
        channel: ContactChannel,
        kind: MessageKind,
        *,
        at: datetime,
        policy: ContactPolicy,
        token: str,
    ) -> LimitDecision:
        plan, _ = self._plans.get(policy, channel, kind, lambda plan: None)
        at_us = to_us(at)
        return self._run(lambda conn: _sqlite_reserve(conn, person_key, plan, at_us, token))

    def reserve_many(self, reservations: Iterable[Reservation], *, policy: ContactPolicy) -> list[LimitDecision]:
        """Several reservations in one transaction, decided in order."""
        work = [
            (r.person_key, self._plans.get(policy, r.channel, r.kind, lambda plan: None)[0], to_us(r.at), r.token)
            for r in reservations
        ]
        if not work:
            return []
        return self._run(lambda conn: [_sqlite_reserve(conn, *item) for item in work])

    def release(self, person_key: str, channel: ContactChannel, kind: MessageKind, *, token: str) -> None:
        suffixes = _suffixes(channel, kind)
        self._run(
            lambda conn: conn.executemany(
                "DELETE FROM contact_log WHERE person = ? AND scope = ? AND token = ?",
                [(person_key, suffix, token) for suffix in suffixes],
            )
        )

    def record_engagement(self, person_key: str, *, at: datetime) -> None:
        """Answers what was sent up to `at`. Most engagements (a kit opened on every page view) find nothing
        unanswered: that is seen by a read, which never waits for the file's one writer."""
        if self.would_answer(person_key, at=at):
            self._run(lambda conn: conn.execute(_ANSWER, (person_key, _UNANSWERED, to_us(at))))

    def would_answer(self, person_key: str, *, at: datetime) -> bool:
        arguments = (person_key, _UNANSWERED, to_us(at))
        return self._run(lambda conn: conn.execute(_UNANSWERED_BY, arguments).fetchone(), begin=False) is not None

    def forget(self, person_key: str) -> None:
        """Erasure: the rows go, their bytes are overwritten, and the write-ahead log is emptied into the file."""

        def erase(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("DELETE FROM contact_log WHERE person = ?", (person_key,))

        self._run(erase)
        self._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"), begin=False)

    def restore(
        self, contacts: Callable[[datetime], Iterable[Reservation]], *, at: datetime, policy: ContactPolicy
    ) -> None:
        """Nothing to do: the file keeps its counts (`reserve` never raises `LimiterStateLost`)."""

    def close(self) -> None:
        self._closed = True
        self._connections.close()


def make_limiter(settings: Settings) -> ContactLimiter:
    """The limiter `Settings.contact.backend` names: Redis in production, SQLite when embedded."""
    contact = settings.contact
    if contact.backend == "redis":
        return RedisContactLimiter(contact.redis_db_url or settings.redis.url, detect_loss=True)
    return SqliteContactLimiter(contact.sqlite_path)
