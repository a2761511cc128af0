"""Segments: from a customer's scores to one segment and the reason for it, in words a marketer can check.

The rule is pure: `assign_segment(signals, thresholds)` looks at one customer's `CustomerSignals` (computed by
`engine.analysis` from `graph.scores`) and returns a `Segment` and a one-line explanation quoting the numbers that
decided it. Segments are checked in this order and the first that fits wins:

1. ``do_not_ask``: any risk reason (detractor rating, complaints, refunds, audience fatigue). Wins over all else.
2. ``influencer``: PageRank among the top `SegmentThresholds.influencer_top_share` of the network *and* at least
   `influencer_min_pagerank_ratio` times the average PageRank; or proven multi-hop referral reach of at least
   `influencer_min_descendants` customers.
3. ``prosumer``: prosumer score among the top `prosumer_top_share`, with at least `prosumer_min_contributions`.
4. ``advocate``: advocacy propensity of at least `advocate_min_propensity`.
5. ``passive``: everyone else.

PageRank and the prosumer score are judged by rank (percentile), because their absolute values shrink as the
network grows; the other thresholds are counts or bounded scores, which mean the same in any network.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata

from graph.model import Segment


class SegmentThresholds(BaseModel):
    """Where the segment boundaries lie. Defaults suit a consumer brand's network; every field can be set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    influencer_top_share: float = Field(
        default=0.02, gt=0, le=1, description="Share of the network, by PageRank rank, that may be influencers."
    )
    influencer_min_pagerank_ratio: float = Field(
        default=2.0,
        ge=0,
        description="An influencer's PageRank is at least this many times the average (1/N): in a network with "
        "few edges the top ranks alone mean little.",
    )
    influencer_min_descendants: int = Field(
        default=5,
        ge=1,
        description="Proven referral reach (distinct customers reached through converted referrals, multi-hop) "
        "that makes an influencer whatever the PageRank.",
    )
    prosumer_top_share: float = Field(
        default=0.10, gt=0, le=1, description="Share of the network, by prosumer-score rank, that may be prosumers."
    )
    prosumer_min_contributions: float = Field(
        default=3.0, ge=0, description="Fewest reviews + ideas + content + feedback a prosumer has contributed."
    )
    advocate_min_propensity: float = Field(
        default=0.55,
        ge=0,
        le=1,
        description="Lowest advocacy propensity of an advocate. A customer with no signal at all scores 0.35; "
        "satisfaction alone cannot pass 0.5, so an advocate has also shared or referred.",
    )
    detractor_max_rating: float = Field(
        default=6.0, ge=0, le=10, description="Mean NPS rating at or below which a customer is not asked."
    )
    risk_min_complaints: int = Field(default=1, ge=1, description="Complaints that put a customer in do_not_ask.")
    risk_refund_ratio: float = Field(
        default=0.5, gt=0, description="Refunds per purchase at or above which a customer is not asked."
    )
    fatigue_min_clicks: int = Field(
        default=10,
        ge=1,
        description="Referrals sent with no friend ever signing up that mark an audience as fatigued.",
    )


@dataclass(frozen=True, slots=True)
class CustomerSignals:
    """Everything the segment rule looks at for one customer (see `graph.scores` for each definition)."""

    customer_id: str
    network_size: int
    pagerank: float
    pagerank_rank: int
    out_degree: int = 0
    core_number: int = 0
    community: int | None = None
    community_size: int = 0
    bridging: float = 0.0
    referrals_sent: int = 0
    converted_referrals: int = 0
    descendants: int = 0
    generations: int = 0
    conversion_rate: float = 0.0
    contributions: float = 0.0
    purchases: int = 0
    prosumer: float = 0.0
    prosumer_rank: int = 0
    advocacy: float = 0.0
    mean_rating: float | None = None
    ratings: int = 0
    shares: int = 0
    consent: bool = False
    risk: tuple[str, ...] = ()

    @property
    def pagerank_top_share(self) -> float:
        """Share of the network ranked at or above this customer (1/N for the first)."""
        return self.pagerank_rank / self.network_size if self.network_size else 1.0

    @property
    def pagerank_ratio(self) -> float:
        """PageRank over the average PageRank 1/N."""
        return self.pagerank * self.network_size

    def scores(self) -> dict[str, float]:
        """The numeric scores, as stored with the customer (`CustomerScores.scores`)."""
        values: dict[str, float] = {
            "pagerank": self.pagerank,
            "pagerank_rank": float(self.pagerank_rank),
            "out_degree": float(self.out_degree),
            "core_number": float(self.core_number),
            "bridging": self.bridging,
            "referrals_sent": float(self.referrals_sent),
            "converted_referrals": float(self.converted_referrals),
            "referral_descendants": float(self.descendants),
            "referral_generations": float(self.generations),
            "conversion_rate": self.conversion_rate,
            "contributions": self.contributions,
            "prosumer": self.prosumer,
            "advocacy": self.advocacy,
            "consent": 1.0 if self.consent else 0.0,
            "risk": float(len(self.risk)),
        }
        if self.mean_rating is not None:
            values["mean_rating"] = self.mean_rating
        return values


def rank_descending(values: Mapping[Hashable, float]) -> dict[Hashable, int]:
    """Rank 1 for the largest value; ties share the best rank among them (1, 2, 2, 4).

    Examples
    --------
    >>> rank_descending({"a": 0.5, "b": 0.9, "c": 0.5, "d": 0.1})
    {'a': 2, 'b': 1, 'c': 2, 'd': 4}
    """
    if not values:
        return {}
    array = np.fromiter(values.values(), dtype=np.float64, count=len(values))
    ranks = rankdata(-array, method="min").astype(np.int64)
    return dict(zip(values.keys(), ranks.tolist(), strict=True))


def _within_top(rank: int, share: float, size: int) -> bool:
    """Rank ``rank`` (1-based) lies in the top ``share`` of ``size``: fewer than share*size rank above it."""
    return rank >= 1 and rank - 1 < share * size


def _pct(share: float) -> str:
    return f"{share * 100:.2g}%"


def _n(count: float, word: str, plural: str | None = None) -> str:
    text = f"{count:,.0f}" if float(count).is_integer() else f"{count:,.1f}"
    return f"{text} {word if count == 1 else (plural or word + 's')}"


def qualifying_segments(signals: CustomerSignals, thresholds: SegmentThresholds) -> list[Segment]:
    """Every segment a customer's numbers fit, in priority order (passive only when nothing else fits).

    Examples
    --------
    >>> s = CustomerSignals("ann", network_size=100, pagerank=0.05, pagerank_rank=1, contributions=5,
    ...                     prosumer=5.0, prosumer_rank=1)
    >>> qualifying_segments(s, SegmentThresholds())
    [<Segment.INFLUENCER: 'influencer'>, <Segment.PROSUMER: 'prosumer'>]
    """
    t = thresholds
    found: list[Segment] = []
    if signals.risk:
        found.append(Segment.DO_NOT_ASK)
    by_rank = _within_top(signals.pagerank_rank, t.influencer_top_share, signals.network_size) and (
        signals.pagerank_ratio >= t.influencer_min_pagerank_ratio
    )
    if by_rank or signals.descendants >= t.influencer_min_descendants:
        found.append(Segment.INFLUENCER)
    if (
        signals.prosumer > 0
        and signals.contributions >= t.prosumer_min_contributions
        and _within_top(signals.prosumer_rank, t.prosumer_top_share, signals.network_size)
    ):
        found.append(Segment.PROSUMER)
    if signals.advocacy >= t.advocate_min_propensity:
        found.append(Segment.ADVOCATE)
    return found or [Segment.PASSIVE]


def _influence_text(s: CustomerSignals) -> str:
    return (
        f"PageRank {s.pagerank:.3g} ranks {s.pagerank_rank:,} of {s.network_size:,} "
        f"(top {_pct(s.pagerank_top_share)}), {s.pagerank_ratio:.1f}× average"
    )


def _referral_text(s: CustomerSignals) -> str:
    return (
        f"{_n(s.converted_referrals, 'converted referral')} reaching {_n(s.descendants, 'customer')} "
        f"in {_n(s.generations, 'generation')}"
    )


def _rating_text(s: CustomerSignals) -> str:
    if s.mean_rating is None:
        return "no rating"
    return f"average rating {s.mean_rating:.1f}/10 over {_n(s.ratings, 'rating')}"


def _community_text(s: CustomerSignals) -> str:
    if s.community is None:
        return ""
    text = f"community {s.community} ({_n(s.community_size, 'member')})"
    if s.bridging >= 0.5:
        text += f", bridges communities (participation {s.bridging:.2f})"
    return text


def explain(signals: CustomerSignals, segments: list[Segment]) -> str:
    """One line saying why the first of `segments` was chosen, quoting the deciding numbers.

    Examples
    --------
    >>> s = CustomerSignals("ann", network_size=1000, pagerank=0.0031, pagerank_rank=12, out_degree=40,
    ...                     converted_referrals=14, descendants=37, generations=3, community=4,
    ...                     community_size=120, consent=True)
    >>> explain(s, [Segment.INFLUENCER])
    'Influencer: PageRank 0.0031 ranks 12 of 1,000 (top 1.2%), 3.1× average; 14 converted referrals reaching 37 customers in 3 generations; influences 40 directly; community 4 (120 members).'
    """  # noqa: E501
    s = signals
    chosen = segments[0]
    parts: list[str]
    if chosen is Segment.DO_NOT_ASK:
        parts = list(s.risk)
    elif chosen is Segment.INFLUENCER:
        parts = [_influence_text(s)]
        if s.converted_referrals or s.descendants:
            parts.append(_referral_text(s))
        if s.out_degree:
            parts.append(f"influences {s.out_degree:,} directly")
    elif chosen is Segment.PROSUMER:
        parts = [
            f"{_n(s.contributions, 'review, idea, content or feedback', 'reviews, ideas, content or feedback')} "
            f"for {_n(s.purchases, 'purchase')} (score {s.prosumer:.2f}, "
            f"top {_pct(s.prosumer_rank / s.network_size if s.network_size else 1.0)})"
        ]
    elif chosen is Segment.ADVOCATE:
        detail = [_rating_text(s), _n(s.shares, "share")]
        if s.converted_referrals:
            detail.append(_n(s.converted_referrals, "converted referral"))
        parts = [f"propensity {s.advocacy:.2f} from {', '.join(detail)}"]
    else:
        parts = [
            f"no strong signal (PageRank top {_pct(s.pagerank_top_share)}, "
            f"{_n(s.contributions, 'contribution')}, propensity {s.advocacy:.2f})"
        ]
    if chosen is not Segment.DO_NOT_ASK:
        others = [seg.value for seg in segments[1:]]
        if others:
            parts.append("also " + " and ".join(others))
        community = _community_text(s)
        if community:
            parts.append(community)
        if not s.consent:
            parts.append("no contact consent")
    label = chosen.value.replace("_", " ").capitalize()
    return f"{label}: {'; '.join(p for p in parts if p)}."


def assign_segment(signals: CustomerSignals, thresholds: SegmentThresholds) -> tuple[Segment, str]:
    """The customer's segment and the explanation for it.

    Examples
    --------
    >>> s = CustomerSignals("bob", network_size=100, pagerank=0.05, pagerank_rank=1,
    ...                     risk=("2 complaints",))
    >>> assign_segment(s, SegmentThresholds())
    (<Segment.DO_NOT_ASK: 'do_not_ask'>, 'Do not ask: 2 complaints.')
    """
    segments = qualifying_segments(signals, thresholds)
    return segments[0], explain(signals, segments)
