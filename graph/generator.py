"""Synthetic customer networks for demos, tests and benchmarks, reproducible by seed and streamed in chunks.

The model, chosen to look like a real customer base rather than a random graph:

* **Communities** of uneven size (a planted partition); each has a dominant locale and time zone.
* **Influence edges** from a degree-corrected stochastic block model (Karrer & Newman 2011): each customer has
  a heavy-tailed *reach* (Pareto, tail index 1.5, so out-degree follows a power law with exponent ~2.5, as in
  Chung-Lu / preferential-attachment graphs) and a milder *attention* weight; a source's edges go to targets
  picked in proportion to attention, inside its own community except for a `mixing` fraction. About
  `avg_degree` `INFLUENCES` edges per customer, of all four kinds, with weights stronger inside communities.
* **Roles** (kept as the planted truth in `attr_planted_role`): influencers (the top reach, who also refer the
  most and the most successfully), prosumers (reviews, ideas, feedback, content), unhappy customers
  (complaints, low ratings, refunds, no referrals), and regular customers.
* **Referral trees**: a share of customers joined through an earlier customer of their community, chosen in
  proportion to referral propensity, so trees form with multi-hop chains; statuses clicked / signed_up /
  converted / reversed; times are consistent (a friend joins after their referrer).
* **Events** over two years: purchases (lognormal amounts), refunds, NPS ratings, reviews with stars, shares,
  complaints, ideas, feedback and content.

Everything is drawn with numpy per block of 2,048 customers from a seed derived from (`seed`, phase, block), so
the output depends only on the seed and parameters (not on `chunk_size`), and memory stays bounded: a few arrays
of one number per customer, plus one chunk of rows at a time. Rows are built with `model_construct` semantics
(no re-validation): the generator only produces valid values, and validating ~10 million edges would cost more
than drawing them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from math import ceil, sqrt
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from graph.model import (
    ContactChannel,
    Customer,
    Event,
    EventKind,
    GraphBatch,
    Influence,
    InfluenceKind,
    Referral,
    ReferralStatus,
)

BLOCK = 2_048  # customers per random block: fixed so that output does not depend on chunk_size
DAY = 86_400

ROLE_REGULAR, ROLE_INFLUENCER, ROLE_PROSUMER, ROLE_UNHAPPY = 0, 1, 2, 3
ROLE_NAMES = ("regular", "influencer", "prosumer", "unhappy")

INFLUENCE_KINDS = (InfluenceKind.FOLLOWS, InfluenceKind.MENTIONS, InfluenceKind.SHARES, InfluenceKind.CO_PURCHASE)
_KIND_SHARE = np.array([0.45, 0.20, 0.20, 0.15])
_KIND_BASE_WEIGHT = np.array([0.30, 0.45, 0.60, 0.20])

STATUSES = (ReferralStatus.CLICKED, ReferralStatus.SIGNED_UP, ReferralStatus.CONVERTED, ReferralStatus.REVERSED)

# Per role (regular, influencer, prosumer, unhappy): mean number of events of each kind per customer.
_EVENT_KINDS = (
    EventKind.PURCHASE,
    EventKind.RATING,
    EventKind.REVIEW,
    EventKind.IDEA,
    EventKind.FEEDBACK,
    EventKind.CONTENT,
    EventKind.SHARE,
    EventKind.COMPLAINT,
)
_EVENT_RATES = np.array(
    [
        # purchase rating review idea feedback content share complaint
        [2.5, 0.5, 0.15, 0.01, 0.05, 0.01, 0.3, 0.05],  # regular
        [3.5, 0.7, 0.6, 0.1, 0.2, 1.5, 5.0, 0.02],  # influencer
        [4.0, 0.8, 3.0, 1.0, 1.5, 1.0, 1.0, 0.1],  # prosumer
        [1.5, 0.9, 0.4, 0.0, 0.3, 0.0, 0.05, 2.0],  # unhappy
    ]
)
_REFUND_RATE = np.array([0.03, 0.02, 0.03, 0.30])
_REFERRAL_PROPENSITY = np.array([1.0, 25.0, 3.0, 0.0])
_STATUS_P = np.array(
    [
        [0.20, 0.20, 0.55, 0.05],  # referrer regular
        [0.08, 0.10, 0.80, 0.02],  # referrer influencer
        [0.15, 0.20, 0.62, 0.03],  # referrer prosumer
        [0.40, 0.30, 0.25, 0.05],  # referrer unhappy (never chosen: propensity 0)
    ]
)

_LOCALES = (
    ("en-US", "America/New_York"),
    ("en-GB", "Europe/London"),
    ("fr-FR", "Europe/Paris"),
    ("de-DE", "Europe/Berlin"),
    ("es-ES", "Europe/Madrid"),
    ("it-IT", "Europe/Rome"),
    ("nl-NL", "Europe/Amsterdam"),
    ("pl-PL", "Europe/Warsaw"),
    ("pt-BR", "America/Sao_Paulo"),
    ("en-AU", "Australia/Sydney"),
    ("ja-JP", "Asia/Tokyo"),
    ("hi-IN", "Asia/Kolkata"),
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_LOCALE_SHARE = np.array([22, 12, 12, 10, 8, 6, 5, 5, 7, 4, 5, 4], dtype=np.float64)
_FIRST = _words(
    "Ada Alan Amara Ana Anna Ben Carla Chen David Elena Emma Farah Felix Grace Hana Hugo Ines Ivan Jonas "
    "Julia Kenji Lea Leo Lucas Maria Marta Mei Noah Nora Omar Paul Priya Rahul Rosa Sara Sofia Tom Yuki "
    "Zoe Luca"
)
_LAST = _words(
    "Adams Bauer Costa Dubois Evans Fischer Garcia Hoffmann Ito Jansen Kowalski Lambert Martin Moreau "
    "Novak Okafor Patel Rossi Santos Schmidt Silva Smith Tanaka Taylor Weber Wilson Nowak Sato Kumar "
    "Bernard"
)


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """The knobs of the model; the defaults give a plausible mid-size consumer brand."""

    avg_degree: float = 10.0  # INFLUENCES edges per customer, on average
    communities: int | None = None  # default: about sqrt(customers) / 2
    mixing: float = 0.15  # share of influence edges that leave the source's community
    influencer_share: float = 0.02
    prosumer_share: float = 0.08
    unhappy_share: float = 0.06
    referred_share: float = 0.25  # customers who joined through a referral
    start: datetime = datetime(2023, 1, 1, tzinfo=UTC)
    days: int = 730

    def __post_init__(self) -> None:
        if self.avg_degree < 0 or not 0 <= self.mixing <= 1 or self.days < 1:
            raise ValueError("avg_degree >= 0, 0 <= mixing <= 1 and days >= 1 are required")
        shares = (self.influencer_share, self.prosumer_share, self.unhappy_share, self.referred_share)
        if any(not 0 <= s <= 1 for s in shares) or sum(shares[:3]) > 1:
            raise ValueError("role shares must be in [0, 1] and sum to at most 1")


def _builder(cls: type[BaseModel], sample: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """A constructor from trusted values, as `model_construct` but without its per-field loop (3x faster).

    The shortcut is checked once against a validated instance; if pydantic's internals ever change, it falls back
    to `model_construct`, so correctness never depends on the shortcut.
    """
    new, setattr_ = object.__new__, object.__setattr__
    fields_set = frozenset(cls.model_fields)

    def fast(values: dict[str, Any]) -> Any:
        obj = new(cls)
        setattr_(obj, "__dict__", values)
        setattr_(obj, "__pydantic_fields_set__", fields_set)
        setattr_(obj, "__pydantic_extra__", None)
        setattr_(obj, "__pydantic_private__", None)
        return obj

    def slow(values: dict[str, Any]) -> Any:
        return cls.model_construct(**values)

    try:
        works = bool(fast(dict(sample)) == cls.model_validate(sample))
    except Exception:  # pragma: no cover - only if pydantic internals change
        works = False
    return fast if works else slow


_T0 = datetime(2024, 1, 1, tzinfo=UTC)
_CUSTOMER = _builder(
    Customer,
    {
        "id": "c1",
        "name": "A B",
        "email": "a@example.com",
        "phone": "+15550000001",
        "locale": "en-US",
        "timezone": "UTC",
        "consent": {ContactChannel.EMAIL: True},
        "attributes": {"planted_community": 1},
        "created_at": _T0,
    },
)
_INFLUENCE = _builder(
    Influence,
    {"source_id": "a", "target_id": "b", "kind": InfluenceKind.FOLLOWS, "weight": 0.5, "at": _T0},
)
_REFERRAL = _builder(
    Referral,
    {
        "referrer_id": "a",
        "friend_id": "b",
        "code": "Ra",
        "status": ReferralStatus.CONVERTED,
        "at": _T0,
        "status_at": _T0,
    },
)
_EVENT = _builder(
    Event,
    {"id": "e1", "customer_id": "a", "kind": EventKind.PURCHASE, "at": _T0, "value": 1.0, "attributes": {}},
)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while one block of rows is built (never across a `yield` to the caller).

    The rows form no reference cycles, but allocating ~10^5 containers per block triggers repeated collections
    that scan them all: about a third of the generator's time. The caller's GC state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _search(
    cumulative: npt.NDArray[np.float64], needles: npt.NDArray[np.float64], side: Literal["left", "right"] = "right"
) -> npt.NDArray[np.int64]:
    """Inverse-CDF lookup; sorting the needles first makes the binary searches cache-friendly (5-10x faster)."""
    order = np.argsort(needles)
    found = np.empty(len(needles), dtype=np.int64)
    found[order] = np.searchsorted(cumulative, needles[order], side=side)
    return found


def _times(start_ts: int, offsets: npt.NDArray[np.int64]) -> list[datetime]:
    """Offsets in seconds from `start_ts` as aware UTC datetimes (the form validated rows would have)."""
    return [datetime.fromtimestamp(t, UTC) for t in (offsets + start_ts).tolist()]


@dataclass
class SyntheticNetwork:
    """A planned network: per-customer arrays drawn up front; rows are drawn and built block by block on iteration.

    Iterate to get `GraphBatch` pieces of at most `chunk_size` rows: all customers first, then influence edges,
    referrals, and events, so that every batch's edges point at customers already written.
    """

    customers: int
    seed: int
    params: NetworkParams
    chunk_size: int = 20_000
    community: npt.NDArray[np.int32] = field(init=False, repr=False)
    role: npt.NDArray[np.int8] = field(init=False, repr=False)
    created: npt.NDArray[np.int64] = field(init=False, repr=False)  # seconds after params.start
    out_degree: npt.NDArray[np.int64] = field(init=False, repr=False)
    referrer: npt.NDArray[np.int64] = field(init=False, repr=False)  # -1 when the customer was not referred
    referred_at: npt.NDArray[np.int64] = field(init=False, repr=False)
    event_counts: npt.NDArray[np.int32] = field(init=False, repr=False)  # customers x len(_EVENT_KINDS)

    def __post_init__(self) -> None:
        if self.customers < 2:
            raise ValueError("a network needs at least 2 customers")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._width = len(str(self.customers - 1))
        self._start_ts = int(self.params.start.timestamp())
        self._end = self.params.days * DAY
        self._plan()

    # --- the plan: one number (or a few) per customer ----------------------------------------------------------
    def _rng(self, phase: int, block: int = 0) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, phase, block]))

    def _plan(self) -> None:
        n, p = self.customers, self.params
        rng = self._rng(0)
        count = p.communities or max(2, round(sqrt(n) / 2))
        count = min(count, n)
        size_weights = 1.0 + rng.pareto(2.5, size=count)
        min_size = min(5, n // count)
        sizes = rng.multinomial(n - min_size * count, size_weights / size_weights.sum()) + min_size
        self.community = rng.permutation(np.repeat(np.arange(count, dtype=np.int32), sizes))
        self._community_locale = rng.choice(len(_LOCALES), size=count, p=_LOCALE_SHARE / _LOCALE_SHARE.sum())

        # Customers arrive faster over time (a growing brand): created ~ end * U^0.7.
        self.created = (self._end * rng.random(n) ** 0.7).astype(np.int64)

        reach = 1.0 + rng.pareto(1.5, size=n)
        order = np.argsort(-reach, kind="stable")
        role = np.zeros(n, dtype=np.int8)
        n_inf = round(p.influencer_share * n)
        role[order[:n_inf]] = ROLE_INFLUENCER
        rest = order[n_inf:]
        picked = rng.permutation(rest)
        n_pro, n_unh = round(p.prosumer_share * n), round(p.unhappy_share * n)
        role[picked[:n_pro]] = ROLE_PROSUMER
        role[picked[n_pro : n_pro + n_unh]] = ROLE_UNHAPPY
        self.role = role

        attention = (1.0 + rng.pareto(2.0, size=n)) * (reach / reach.mean()) ** 0.3
        cap = max(20, n // 5)
        self.out_degree = np.minimum(rng.poisson(p.avg_degree * reach / reach.mean()), cap).astype(np.int64)

        # Targets are drawn by inverse CDF: members sorted by community, cumulative attention within each.
        self._members = np.argsort(self.community, kind="stable")
        self._cum = np.cumsum(attention[self._members])
        bounds = np.searchsorted(self.community[self._members], np.arange(count + 1))
        self._lo_idx, self._hi_idx = bounds[:-1], bounds[1:]
        self._cum_lo = np.where(self._lo_idx > 0, self._cum[np.maximum(self._lo_idx - 1, 0)], 0.0)
        self._cum_hi = self._cum[self._hi_idx - 1]
        self._global_cum = np.cumsum(attention)

        self._plan_referrals(reach)
        rates = _EVENT_RATES[self.role]
        self.event_counts = rng.poisson(rates).astype(np.int32)
        converted = self._status >= 2  # converted (or converted, then reversed): at least one purchase
        purchases = self.event_counts[:, 0]
        purchases[converted] = np.maximum(purchases[converted], 1)

    def _plan_referrals(self, reach: npt.NDArray[np.float64]) -> None:
        """Each referred customer has one earlier referrer in their community; times follow the chains."""
        n, p = self.customers, self.params
        rng = self._rng(1)
        order = np.lexsort((self.created, self.community))  # by community, then arrival
        comm_sorted = self.community[order]
        block_start = np.searchsorted(comm_sorted, comm_sorted)  # first sorted position of own community
        propensity = _REFERRAL_PROPENSITY[self.role] * np.sqrt(reach / reach.mean())
        cum = np.cumsum(propensity[order])
        pos = np.arange(n)
        lo = np.where(block_start > 0, cum[np.maximum(block_start - 1, 0)], 0.0)
        hi = np.where(pos > 0, cum[np.maximum(pos - 1, 0)], 0.0)
        wants = (rng.random(n) < p.referred_share) & (pos > block_start) & (hi - lo > 1e-9)
        u = lo + rng.random(n) * (hi - lo)
        chosen = np.clip(_search(cum, u, side="left"), block_start, np.maximum(pos - 1, 0))
        self.referrer = np.full(n, -1, dtype=np.int64)
        friends = order[wants]
        self.referrer[friends] = order[chosen[wants]]

        # A friend is invited some days after the referrer joined and joins soon after; follow chains until stable.
        invite_delay = rng.exponential(20 * DAY, size=n).astype(np.int64) + 3600
        join_delay = rng.exponential(2 * DAY, size=n).astype(np.int64) + 60
        refs = self.referrer[friends]
        while True:
            at = self.created[refs] + invite_delay[friends]
            joined = at + join_delay[friends]
            if np.array_equal(joined, self.created[friends]):
                break
            self.created[friends] = joined
        self.referred_at = np.full(n, -1, dtype=np.int64)
        self.referred_at[friends] = self.created[refs] + invite_delay[friends]
        self._status = np.zeros(n, dtype=np.int8)
        probs = _STATUS_P[self.role[refs]]
        unhappy_friend = self.role[friends] == ROLE_UNHAPPY
        probs[unhappy_friend] = [0.25, 0.25, 0.30, 0.20]
        cut = rng.random(len(friends))[:, None] > np.cumsum(probs, axis=1)[:, :-1]
        self._status[friends] = cut.sum(axis=1).astype(np.int8)
        self._status_delay = rng.exponential(5 * DAY, size=n).astype(np.int64) + 600

    # --- sizes --------------------------------------------------------------------------------------------------
    @property
    def expected_rows(self) -> int:
        """Rows the iteration will yield, up to the few duplicate or self-loop edges it drops."""
        refunds = int(np.round((self.event_counts[:, 0] * _REFUND_RATE[self.role]).sum()))
        return (
            self.customers
            + int(self.out_degree.sum())
            + int((self.referrer >= 0).sum())
            + int(self.event_counts.sum())
            + refunds
        )

    def customer_id(self, index: int) -> str:
        return f"c{index:0{self._width}d}"

    @cached_property
    def _id_table(self) -> npt.NDArray[np.object_]:
        """Every customer id once (formatting ~20 million edge ends one by one would cost more)."""
        width = self._width
        return np.array([f"c{i:0{width}d}" for i in range(self.customers)], dtype=object)

    def _ids(self, indices: npt.NDArray[np.int64]) -> list[str]:
        ids: list[str] = self._id_table[indices].tolist()
        return ids

    # --- iteration ----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[GraphBatch]:
        phases: tuple[tuple[str, Iterator[list[Any]]], ...] = (
            ("customers", self._customer_rows()),
            ("influences", self._influence_rows()),
            ("referrals", self._referral_rows()),
            ("events", self._event_rows()),
        )
        for kind, rows in phases:
            pending: list[Any] = []
            while True:
                with _gc_paused():
                    block = next(rows, None)
                if block is None:
                    break
                pending.extend(block)
                while len(pending) >= self.chunk_size:
                    yield _batch(kind, pending[: self.chunk_size])
                    pending = pending[self.chunk_size :]
            if pending:
                yield _batch(kind, pending)

    def _blocks(self) -> Iterator[tuple[int, int, int]]:
        for block in range(ceil(self.customers / BLOCK)):
            yield block, block * BLOCK, min(self.customers, (block + 1) * BLOCK)

    def _customer_rows(self) -> Iterator[list[Customer]]:
        for block, a, b in self._blocks():
            rng = self._rng(2, block)
            m = b - a
            locale = np.where(
                rng.random(m) < 0.8,
                self._community_locale[self.community[a:b]],
                rng.choice(len(_LOCALES), size=m, p=_LOCALE_SHARE / _LOCALE_SHARE.sum()),
            )
            first = rng.integers(len(_FIRST), size=m)
            last = rng.integers(len(_LAST), size=m)
            has_email = rng.random(m) < 0.92
            has_phone = rng.random(m) < 0.6
            unhappy = self.role[a:b] == ROLE_UNHAPPY
            draws = rng.random((m, 4))
            c_email = has_email & (draws[:, 0] < np.where(unhappy, 0.35, 0.72))
            c_sms = has_phone & (draws[:, 1] < np.where(unhappy, 0.1, 0.35))
            c_whatsapp = has_phone & (draws[:, 2] < 0.2)
            c_push = draws[:, 3] < 0.4
            created = _times(self._start_ts, self.created[a:b])
            rows: list[Customer] = []
            for index, cid, f, la, loc_index, email, phone, ce, cs, cw, cp, community, role, when in zip(
                range(a, b),
                self._id_table[a:b].tolist(),
                first.tolist(),
                last.tolist(),
                locale.tolist(),
                has_email.tolist(),
                has_phone.tolist(),
                c_email.tolist(),
                c_sms.tolist(),
                c_whatsapp.tolist(),
                c_push.tolist(),
                self.community[a:b].tolist(),
                self.role[a:b].tolist(),
                created,
                strict=True,
            ):
                fn, ln = _FIRST[f], _LAST[la]
                loc, tz = _LOCALES[loc_index]
                rows.append(
                    _CUSTOMER(
                        {
                            "id": cid,
                            "name": f"{fn} {ln}",
                            "email": f"{fn.lower()}.{ln.lower()}.{index}@example.com" if email else None,
                            "phone": f"+1555{index:07d}" if phone else None,
                            "locale": loc,
                            "timezone": tz,
                            "consent": {
                                ContactChannel.EMAIL: ce,
                                ContactChannel.SMS: cs,
                                ContactChannel.WHATSAPP: cw,
                                ContactChannel.PUSH: cp,
                            },
                            "attributes": {"planted_community": community, "planted_role": ROLE_NAMES[role]},
                            "created_at": when,
                        }
                    )
                )
            yield rows

    def influence_arrays(
        self, block: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8], npt.NDArray[np.float64], Any]:
        """One block's distinct edges as arrays: sources, targets, kind index, weight, offset seconds."""
        a, b = block * BLOCK, min(self.customers, (block + 1) * BLOCK)
        rng = self._rng(3, block)
        src = np.repeat(np.arange(a, b, dtype=np.int64), self.out_degree[a:b])
        m = len(src)
        inside = rng.random(m) >= self.params.mixing
        u = rng.random(m)
        dst = np.empty(m, dtype=np.int64)
        comm = self.community[src[inside]]
        lo, hi = self._cum_lo[comm], self._cum_hi[comm]
        idx = _search(self._cum, lo + u[inside] * (hi - lo))
        dst[inside] = self._members[np.clip(idx, self._lo_idx[comm], self._hi_idx[comm] - 1)]
        outside = ~inside
        dst[outside] = np.minimum(_search(self._global_cum, u[outside] * self._global_cum[-1]), self.customers - 1)
        kind = rng.choice(4, size=m, p=_KIND_SHARE).astype(np.int8)
        keep = src != dst
        key = (src * self.customers + dst) * 4 + kind
        _, first = np.unique(np.where(keep, key, -1), return_index=True)
        first = first[keep[first]]
        src, dst, kind, inside = src[first], dst[first], kind[first], inside[first]
        noise = rng.lognormal(0.0, 0.5, size=len(src))
        weight = np.clip(_KIND_BASE_WEIGHT[kind] * noise * np.where(inside, 1.3, 0.8), 0.01, 1.0).round(3)
        since = np.maximum(self.created[src], self.created[dst])
        at = since + (rng.random(len(src)) * np.maximum(self._end - since, DAY)).astype(np.int64)
        return src, dst, kind, weight, at

    def _influence_rows(self) -> Iterator[list[Influence]]:
        for block, _, _ in self._blocks():
            src, dst, kind, weight, at = self.influence_arrays(block)
            sources, targets, times = self._ids(src), self._ids(dst), _times(self._start_ts, at)
            kinds = [INFLUENCE_KINDS[k] for k in kind.tolist()]
            yield [
                _INFLUENCE({"source_id": s, "target_id": t, "kind": k, "weight": w, "at": when})
                for s, t, k, w, when in zip(sources, targets, kinds, weight.tolist(), times, strict=True)
            ]

    def _referral_rows(self) -> Iterator[list[Referral]]:
        for _, a, b in self._blocks():
            friends = np.flatnonzero(self.referrer[a:b] >= 0) + a
            refs = self.referrer[friends]
            status = self._status[friends]
            at = self.referred_at[friends]
            status_at = np.where(status > 0, self.created[friends] + self._status_delay[friends] * (status > 1), -1)
            ats, status_ats = _times(self._start_ts, at), _times(self._start_ts, np.maximum(status_at, 0))
            referrers, friend_ids = self._ids(refs), self._ids(friends)
            yield [
                _REFERRAL(
                    {
                        "referrer_id": r,
                        "friend_id": f,
                        "code": f"R{ref:x}",
                        "status": STATUSES[s],
                        "at": when,
                        "status_at": status_when if s > 0 else None,
                    }
                )
                for r, f, ref, s, when, status_when in zip(
                    referrers, friend_ids, refs.tolist(), status.tolist(), ats, status_ats, strict=True
                )
            ]

    def _event_rows(self) -> Iterator[list[Event]]:
        for block, a, b in self._blocks():
            rng = self._rng(4, block)
            counts = self.event_counts[a:b]
            who = np.repeat(np.repeat(np.arange(a, b, dtype=np.int64), counts.shape[1]), counts.ravel())
            kind = np.repeat(np.tile(np.arange(counts.shape[1]), b - a), counts.ravel())
            m = len(who)
            start = self.created[who]
            at = start + (rng.random(m) * np.maximum(self._end - start, DAY)).astype(np.int64)
            role = self.role[who]
            value = np.full(m, np.nan)
            purchase = kind == 0
            value[purchase] = np.round(rng.lognormal(3.8, 0.6, size=int(purchase.sum())), 2)
            rating = kind == 1
            nps = np.where(
                role == ROLE_UNHAPPY,
                rng.integers(0, 5, size=m),
                np.where(role == ROLE_REGULAR, rng.choice(11, size=m, p=_NPS_REGULAR), rng.integers(8, 11, size=m)),
            )
            value[rating] = nps[rating]
            review = kind == 2
            stars = np.where(role == ROLE_UNHAPPY, rng.integers(1, 3, size=m), rng.choice(5, size=m, p=_STARS) + 1)
            value[review] = stars[review]
            # Refunds: some purchases come back, more often from unhappy customers.
            refunded = purchase & (rng.random(m) < _REFUND_RATE[role])
            r_who, r_value = who[refunded], value[refunded]
            r_at = at[refunded] + (rng.random(int(refunded.sum())) * 20 * DAY).astype(np.int64) + DAY
            who = np.concatenate([who, r_who])
            at = np.concatenate([at, r_at])
            value = np.concatenate([value, r_value])
            kinds = [_EVENT_KINDS[k] for k in kind.tolist()] + [EventKind.REFUND] * len(r_who)
            customer_ids, times = self._ids(who), _times(self._start_ts, at)
            values = [None if v != v else v for v in value.tolist()]  # NaN -> no value
            base = f"e{block}-"
            yield [
                _EVENT({"id": f"{base}{j}", "customer_id": c, "kind": k, "at": when, "value": v, "attributes": {}})
                for j, (c, k, when, v) in enumerate(zip(customer_ids, kinds, times, values, strict=True))
            ]


_NPS_REGULAR = np.array([2, 1, 1, 2, 2, 4, 8, 15, 20, 25, 20], dtype=np.float64)
_NPS_REGULAR /= _NPS_REGULAR.sum()
_STARS = np.array([0.04, 0.06, 0.15, 0.35, 0.40])


def _batch(kind: str, rows: list[Any]) -> GraphBatch:
    return GraphBatch.model_construct(
        customers=rows if kind == "customers" else [],
        influences=rows if kind == "influences" else [],
        referrals=rows if kind == "referrals" else [],
        events=rows if kind == "events" else [],
    )


def generate_network(
    customers: int,
    *,
    seed: int,
    chunk_size: int = 20_000,
    avg_degree: float = 10.0,
    communities: int | None = None,
    mixing: float = 0.15,
    influencer_share: float = 0.02,
    prosumer_share: float = 0.08,
    unhappy_share: float = 0.06,
    referred_share: float = 0.25,
) -> SyntheticNetwork:
    """Plan a synthetic customer network; iterate the result for `GraphBatch` chunks of at most `chunk_size` rows.

    >>> net = generate_network(1_000, seed=7)
    >>> batches = list(net)
    >>> sum(len(b.customers) for b in batches)
    1000
    >>> 8 < sum(len(b.influences) for b in batches) / 1000 < 12
    True
    """
    params = NetworkParams(
        avg_degree=avg_degree,
        communities=communities,
        mixing=mixing,
        influencer_share=influencer_share,
        prosumer_share=prosumer_share,
        unhappy_share=unhappy_share,
        referred_share=referred_share,
    )
    return SyntheticNetwork(customers, seed, params, chunk_size)
