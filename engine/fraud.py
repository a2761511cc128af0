"""Fraud rules of the referral programme: pure functions over a `FraudContext` the store has loaded.

Each rule looks at one kind of evidence and returns a `FraudSignal` (or None) whose `detail` names that evidence:
which signal kind was shared and with whom, the ring's path, counts against thresholds; never a raw email or
phone. `assess` adds the weights up. Weights are fractions of `FraudSettings.hold_score`, so moving the
threshold moves every rule with it:

=================================  ======  ==================================================================
rule                               weight  why
=================================  ======  ==================================================================
self_referral_same_customer        2.0     the buyer is the referrer: always rejected, whatever the score
self_referral_shared_identity      1.0     one person behind both accounts; holds on its own
shared_ip                          0.25    offices, dorms and households share one address: never holds alone
disposable_email                   0.5     throwaway mailboxes are common for farmed accounts, and for privacy
velocity                           1.0     a code converting faster than any person's circle of friends
referral_ring                      1.0     referrals that loop back, or one person's accounts in one tree
dense_new_cluster                  1.0     a burst of new accounts referring each other
new_account_with_shared_ip         0.8     with `shared_ip`, a brand-new account on the referrer's network holds
=================================  ======  ==================================================================

Identity signals are compared as stored: callers normalise them once with `customer_signals`, so that
``J.Doe+ref@googlemail.com`` and ``jdoe@gmail.com`` are the same value in the store's own lookups too.

`detect_leak` is the other half: a code posted on coupon sites or forums gets many clicks from strangers who
rarely buy, which no fraud rule per order can see.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Final

import networkx as nx
from disposable_email_domains import blocklist

from graph.program import (
    CodeActivity,
    FraudAction,
    FraudContext,
    FraudSettings,
    FraudSignal,
    FraudVerdict,
    LeakVerdict,
    Signal,
    SignalKind,
)

Rule = Callable[[FraudContext, FraudSettings], FraudSignal | None]

IDENTITY_KINDS: Final[tuple[SignalKind, ...]] = (
    SignalKind.EMAIL,
    SignalKind.PHONE,
    SignalKind.DEVICE,
    SignalKind.PAYMENT,
)
"""Signals that tie two accounts to one person; an IP address does not (many people share one)."""

SAME_CUSTOMER_WEIGHT: Final = 2.0
SHARED_IDENTITY_WEIGHT: Final = 1.0
SHARED_IP_WEIGHT: Final = 0.25
DISPOSABLE_EMAIL_WEIGHT: Final = 0.5
VELOCITY_WEIGHT: Final = 1.0
RING_WEIGHT: Final = 1.0
DENSE_CLUSTER_WEIGHT: Final = 1.0
NEW_ACCOUNT_WITH_SHARED_IP_WEIGHT: Final = 0.8

RING_CLUSTER_MIN_OTHERS: Final = 2
"""Accounts besides the referrer, inside the referral neighbourhood, that must hold one of the friend's identity
signals to make a cluster: one could be a family member on the same laptop or card, two is a farm."""

_DETAIL_MAX = 500
_IDS_SHOWN = 6
_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})


# --- normalising identity signals ----------------------------------------------------------------------------
def normalise_email(email: str) -> str:
    """One mailbox, one value: case, `+tags` and Gmail's ignored dots make new addresses for the same inbox.

    >>> normalise_email(" J.Doe+spring@GoogleMail.com ")
    'jdoe@gmail.com'
    >>> normalise_email("jane.doe+x@example.com")
    'jane.doe@example.com'
    """
    local, at, domain = email.strip().lower().rpartition("@")
    if not at:
        return domain
    local = local.split("+", 1)[0]
    domain = domain.rstrip(".")
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def normalise_phone(phone: str) -> str:
    """Digits and a leading `+` only, so that spacing and punctuation do not make a new number.

    >>> normalise_phone(" +33 (6) 12-34-56-78 ")
    '+33612345678'
    """
    phone = phone.strip()
    digits = re.sub(r"\D", "", phone)
    return f"+{digits}" if phone.startswith("+") else digits


def customer_signals(email: str | None, phone: str | None) -> tuple[Signal, ...]:
    """The normalised email and phone signals to store for a new customer or order (blanks are left out)."""
    signals: list[Signal] = []
    if email and (value := normalise_email(email)):
        signals.append(Signal(kind=SignalKind.EMAIL, value=value))
    if phone and any(ch.isdigit() for ch in phone):
        signals.append(Signal(kind=SignalKind.PHONE, value=normalise_phone(phone)))
    return tuple(signals)


def is_disposable(email: str) -> bool:
    """Whether the address (or a bare domain) is at a throwaway-mailbox domain, subdomains included.

    >>> is_disposable("someone@mailinator.com"), is_disposable("someone@eu.mailinator.com")
    (True, True)
    >>> is_disposable("someone@gmail.com")
    False
    """
    domain = email.strip().lower().rpartition("@")[2].rstrip(".")
    labels = domain.split(".")
    return any(".".join(labels[i:]) in blocklist for i in range(len(labels) - 1))


# --- helpers -------------------------------------------------------------------------------------------------
def _signal(rule: str, weight: float, detail: str) -> FraudSignal:
    if len(detail) > _DETAIL_MAX:
        detail = detail[: _DETAIL_MAX - 1] + "…"
    return FraudSignal(rule=rule, weight=weight, detail=detail)


def _ids(ids: Iterable[str]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:_IDS_SHOWN])
    more = len(ordered) - _IDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _kinds(kinds: Iterable[SignalKind]) -> str:
    names = [kind.value for kind in kinds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _referrer(ctx: FraudContext) -> str:
    return ctx.attribution.referrer_id


def _friend(ctx: FraudContext) -> str:
    return ctx.order.customer_id


def _values(signals: Iterable[Signal], kind: SignalKind) -> set[str]:
    return {signal.value for signal in signals if signal.kind is kind}


def _referrer_shares(ctx: FraudContext, kind: SignalKind) -> bool:
    """The store may report the referrer among the friend's sharers, or give both signal lists; either counts."""
    if _referrer(ctx) in ctx.shared_signals.get(kind, ()):
        return True
    return bool(_values(ctx.referrer_signals, kind) & _values(ctx.friend_signals, kind))


def _shares_ip(ctx: FraudContext) -> bool:
    return _referrer(ctx) != _friend(ctx) and _referrer_shares(ctx, SignalKind.IP)


def _is_new(created_at: datetime | None, at: datetime, days: int) -> bool:
    """Younger than `days` at `at`; an unknown creation time is not new (no evidence is no evidence)."""
    return created_at is not None and at - created_at < timedelta(days=days)


def _created_at(ctx: FraudContext) -> dict[str, datetime | None]:
    created = dict(ctx.customer_created_at)
    created.setdefault(_friend(ctx), ctx.friend_created_at)
    return created


def _referral_graph(ctx: FraudContext) -> nx.DiGraph:
    """The `REFERRED` neighbourhood plus the referral being judged (referrer -> friend). Edges go in sorted, so
    the path a search finds does not depend on the order a store returned them in."""
    graph = nx.DiGraph()
    graph.add_edges_from(
        sorted({(link.referrer_id, link.friend_id) for link in ctx.neighbourhood if link.referrer_id != link.friend_id})
    )
    if _referrer(ctx) != _friend(ctx):
        graph.add_edge(_referrer(ctx), _friend(ctx))
    return graph


# --- rules ---------------------------------------------------------------------------------------------------
def self_referral_same_customer(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    """Referring yourself earns nothing: this one is rejected, not held."""
    if _referrer(ctx) != _friend(ctx):
        return None
    return _signal(
        "self_referral_same_customer",
        SAME_CUSTOMER_WEIGHT * settings.hold_score,
        f"the buyer {_friend(ctx)} is the owner of code {ctx.attribution.code}",
    )


def self_referral_shared_identity(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    """A second account of the referrer: same mailbox, phone, device or card as the friend."""
    if _referrer(ctx) == _friend(ctx):
        return None
    shared = [kind for kind in IDENTITY_KINDS if _referrer_shares(ctx, kind)]
    if not shared:
        return None
    return _signal(
        "self_referral_shared_identity",
        SHARED_IDENTITY_WEIGHT * settings.hold_score,
        f"referrer {_referrer(ctx)} holds the same {_kinds(shared)} as friend {_friend(ctx)}",
    )


def shared_ip(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    """Weak on purpose: it only counts together with other evidence."""
    if not _shares_ip(ctx):
        return None
    return _signal(
        "shared_ip",
        SHARED_IP_WEIGHT * settings.hold_score,
        f"referrer {_referrer(ctx)} and friend {_friend(ctx)} used the same IP address "
        "(common in offices, dorms and households; weak on its own)",
    )


def disposable_email(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    domains = sorted(
        {value.rpartition("@")[2] for value in _values(ctx.friend_signals, SignalKind.EMAIL) if is_disposable(value)}
    )
    if not domains:
        return None
    return _signal(
        "disposable_email",
        DISPOSABLE_EMAIL_WEIGHT * settings.hold_score,
        f"friend {_friend(ctx)} signed up with an address at a disposable-mail domain ({', '.join(domains)})",
    )


def velocity(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    count, limit = ctx.code_conversions_in_window, settings.velocity_max_conversions
    if count < limit:
        return None
    return _signal(
        "velocity",
        VELOCITY_WEIGHT * settings.hold_score,
        f"code {ctx.attribution.code} already has {count} conversions in the last "
        f"{settings.velocity_window_hours} h (limit {limit})",
    )


def referral_ring(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    """Referrals that come back round (friend -> ... -> referrer, closed by this referral), or the friend's
    identity held by several other accounts of the same referral neighbourhood."""
    referrer, friend = _referrer(ctx), _friend(ctx)
    if referrer == friend:
        return None
    graph = _referral_graph(ctx)
    details: list[str] = []
    try:
        back = nx.shortest_path(graph, friend, referrer)
    except nx.NetworkXNoPath:
        back = None
    if back is not None and len(back) - 1 <= settings.ring_max_hops:
        cycle = " -> ".join([referrer, *back])
        details.append(f"this referral closes a cycle of {len(back)} accounts: {cycle}")

    members = set(graph.nodes) - {referrer, friend}
    sharers: dict[str, set[SignalKind]] = {}
    for kind in IDENTITY_KINDS:
        for customer in members.intersection(ctx.shared_signals.get(kind, ())):
            sharers.setdefault(customer, set()).add(kind)
    if len(sharers) >= RING_CLUSTER_MIN_OTHERS:
        kinds = sorted(set().union(*sharers.values()), key=IDENTITY_KINDS.index)
        details.append(
            f"friend {friend} shares {_kinds(kinds)} with {len(sharers)} accounts of the referral "
            f"neighbourhood ({_ids(sharers)})"
        )
    if not details:
        return None
    return _signal("referral_ring", RING_WEIGHT * settings.hold_score, "; ".join(details))


def _dense_group(graph: nx.Graph, anchor: str, *, min_size: int, min_density: float) -> nx.Graph | None:
    """The densest-first peel of `anchor`'s component: drop the least connected other account until the rest is
    dense and not a mere tree, or too small. A sparse tail (a few honest referrals) then cannot hide a dense
    core, and a star of new friends around one new customer is a tree, not a cluster."""
    nodes = set(nx.node_connected_component(graph, anchor))
    while len(nodes) >= min_size:
        group = graph.subgraph(nodes)
        edges = group.number_of_edges()
        if edges >= len(nodes) and nx.density(group) >= min_density:
            return group
        others = [node for node in nodes if node != anchor]
        weakest = min(others, key=lambda node: (group.degree(node), node))
        nodes.discard(weakest)
        nodes = set(nx.node_connected_component(graph.subgraph(nodes), anchor))
    return None


def dense_new_cluster(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    """Accounts a farm creates together refer each other densely, all within days of the order."""
    referrer, friend = _referrer(ctx), _friend(ctx)
    at, days = ctx.order.at, settings.new_account_days
    new = {customer for customer, created in _created_at(ctx).items() if _is_new(created, at, days)}
    graph = _referral_graph(ctx).to_undirected().subgraph(new)
    for anchor in sorted({referrer, friend} & set(graph.nodes)):
        group = _dense_group(
            graph,
            anchor,
            min_size=settings.dense_cluster_min_size,
            min_density=settings.dense_cluster_min_density,
        )
        if group is not None:
            return _signal(
                "dense_new_cluster",
                DENSE_CLUSTER_WEIGHT * settings.hold_score,
                f"{group.number_of_nodes()} accounts created within {days} days of the order "
                f"(minimum {settings.dense_cluster_min_size}) are joined by {group.number_of_edges()} referrals, "
                f"density {nx.density(group):.2f} (minimum {settings.dense_cluster_min_density:.2f}): "
                f"{_ids(group.nodes)}",
            )
    return None


def new_account_with_shared_ip(ctx: FraudContext, settings: FraudSettings) -> FraudSignal | None:
    """A brand-new friend on the referrer's own network: with `shared_ip` this reaches `hold_score`."""
    created = ctx.friend_created_at
    if created is None or not _is_new(created, ctx.order.at, settings.new_account_days) or not _shares_ip(ctx):
        return None
    age = ctx.order.at - created
    return _signal(
        "new_account_with_shared_ip",
        NEW_ACCOUNT_WITH_SHARED_IP_WEIGHT * settings.hold_score,
        f"friend {_friend(ctx)} opened the account {_age(age)} before the order (under "
        f"{settings.new_account_days} days) on the referrer's IP address",
    )


def _age(age: timedelta) -> str:
    hours = max(age, timedelta(0)) / timedelta(hours=1)
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


RULES: Final[tuple[Rule, ...]] = (
    self_referral_same_customer,
    self_referral_shared_identity,
    shared_ip,
    disposable_email,
    velocity,
    referral_ring,
    dense_new_cluster,
    new_account_with_shared_ip,
)


def assess(ctx: FraudContext, settings: FraudSettings) -> FraudVerdict:
    """Every rule runs and every signal is kept, so an allowed conversion still records its weak evidence."""
    fired = [signal for rule in RULES if (signal := rule(ctx, settings)) is not None]
    score = math.fsum(signal.weight for signal in fired)
    if any(signal.rule == self_referral_same_customer.__name__ for signal in fired):
        action = FraudAction.REJECT
    elif score >= settings.hold_score:
        action = FraudAction.HOLD
    else:
        action = FraudAction.ALLOW
    signals = tuple(sorted(fired, key=lambda signal: -signal.weight))
    return FraudVerdict(action=action, score=score, signals=signals)


# --- leaked codes --------------------------------------------------------------------------------------------
LEAK_SOURCES: Final[tuple[str, ...]] = (
    "retailmenot.com",
    "joinhoney.com",
    "slickdeals.net",
    "couponfollow.com",
    "dealabs.com",
    "hotukdeals.com",
    "mydealz.de",
    "vouchercodes.co.uk",
    "coupons.com",
    "couponbirds.com",
    "dealspotr.com",
    "wethrift.com",
    "knoji.com",
    "reddit.com",
)
"""Coupon, deal and forum hosts where a posted code reaches strangers; a host matches itself and its subdomains."""

LEAK_SOURCE_SHARE: Final = 0.3
"""Share of a code's clicks from `LEAK_SOURCES` that counts as "posted publicly" even from few hosts."""


def _host(source: str) -> str:
    host = source.strip().lower().split("/", 1)[0].split(":", 1)[0].rstrip(".")
    return host.removeprefix("www.")


def is_leak_source(source: str) -> bool:
    """Whether a referring host is a known coupon, deal or forum site.

    >>> is_leak_source("www.retailmenot.com"), is_leak_source("old.reddit.com"), is_leak_source("notreddit.com")
    (True, True, False)
    """
    host = _host(source)
    return any(host == known or host.endswith("." + known) for known in LEAK_SOURCES)


def _clicks_by_host(sources: Mapping[str, int]) -> dict[str, int]:
    hosts: dict[str, int] = {}
    for source, clicks in sources.items():
        host = _host(source)
        if host and clicks > 0:
            hosts[host] = hosts.get(host, 0) + clicks
    return hosts


def detect_leak(activity: CodeActivity, settings: FraudSettings) -> LeakVerdict:
    """A publicly posted code: many clicks, many strangers, few buyers, arriving from many hosts or deal sites.

    All four must hold, because each alone describes an honest advocate too (a popular creator has volume, a
    newsletter has many readers who do not buy). `score` is the share of the four that hold; `reasons` quote
    each one found, with its threshold.
    """
    hosts = _clicks_by_host(activity.sources)
    leak_clicks = sum(clicks for host, clicks in hosts.items() if is_leak_source(host))
    leak_share = leak_clicks / activity.clicks if activity.clicks else 0.0
    rate = activity.conversions / activity.distinct_visitors if activity.distinct_visitors else 0.0

    reasons: list[str] = []
    volume = activity.clicks >= settings.leak_min_clicks
    if volume:
        reasons.append(f"{activity.clicks} clicks (threshold {settings.leak_min_clicks})")
    reach = activity.distinct_visitors >= settings.leak_min_distinct_visitors
    if reach:
        reasons.append(
            f"{activity.distinct_visitors} distinct visitors (threshold {settings.leak_min_distinct_visitors})"
        )
    cold = activity.distinct_visitors > 0 and rate <= settings.leak_max_conversion_rate
    if cold:
        reasons.append(
            f"{activity.conversions} conversions from {activity.distinct_visitors} visitors: {rate:.1%} "
            f"(at most {settings.leak_max_conversion_rate:.1%} for a leak)"
        )
    spread = len(hosts) >= settings.leak_min_sources
    posted = leak_share >= LEAK_SOURCE_SHARE
    if spread:
        reasons.append(f"clicks came from {len(hosts)} referring sites (threshold {settings.leak_min_sources})")
    if posted:
        known = sorted(host for host in hosts if is_leak_source(host))
        reasons.append(
            f"{leak_share:.0%} of clicks came from coupon, deal or forum sites ({', '.join(known)}; "
            f"threshold {LEAK_SOURCE_SHARE:.0%})"
        )
    met = [volume, reach, cold, spread or posted]
    return LeakVerdict(
        code=activity.code,
        leaked=all(met),
        score=sum(met) / len(met),
        reasons=tuple(reasons),
    )
