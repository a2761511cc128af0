"""A referral programme played forward, for demos and load: advocates share, friends click, sign up, buy,
sometimes refund, and some friends go on to refer their own friends (cascades several generations deep).

Everything goes through `ReferralService` with a simulated clock, so attribution, fraud rules, rewards, the
ledger and the `REFERRED` edges are exactly what real traffic would produce. Seeded: the same seed replays the
same programme.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine.referrals import ReferralService
from engine.settings import ReferralSettings
from graph.model import ContactChannel, Customer, utcnow
from graph.program import ConversionStatus, Order, Refund, Signal, SignalKind, Signup
from graph.program_store import Store

ProgressFn = Callable[[int], None]


@dataclass(slots=True)
class SimulationReport:
    advocates: int = 0
    clicks: int = 0
    signups: int = 0
    orders: int = 0
    refunds: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    generations: int = 0
    rewards_moved: int = 0


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def simulate_programme(
    store: Store,
    campaign_id: str,
    advocates: Sequence[str],
    *,
    friends_per_advocate: float = 2.0,
    generations: int = 3,
    refer_on: float = 0.35,
    refund_rate: float = 0.05,
    days: int = 60,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> SimulationReport:
    """Play `days` of the campaign ending now, starting from `advocates` (customer ids already stored).

    Each sharer brings about `friends_per_advocate` friends (Poisson); a friend who buys goes on sharing with
    probability `refer_on`, for up to `generations` generations. A few orders come back as refunds, one advocate
    tries their own code, and at the end the hold periods that have passed are approved and paid.
    """
    rng = random.Random(seed)
    clock = _Clock(utcnow() - timedelta(days=days))
    service = ReferralService(store, ReferralSettings(), clock=clock)
    report = SimulationReport()
    step = timedelta(days=days) / max(1.0, len(advocates) * friends_per_advocate * 6)
    sharers = list(advocates)
    serial = 0
    for generation in range(generations):
        next_sharers: list[str] = []
        for sharer in sharers:
            code = service.issue_code(sharer, campaign_id)
            report.advocates += 1
            for _ in range(_poisson(rng, friends_per_advocate)):
                serial += 1
                clock.now = min(clock.now + step * rng.uniform(0.2, 1.0), utcnow())
                source = rng.choice(["https://www.instagram.com/", "https://wa.me/", None, "https://x.com/"])
                click = service.click(
                    code.code,
                    ip=f"198.51.{serial % 250}.{serial % 200 + 1}",
                    user_agent=f"sim/{serial}",
                    referer=source,
                    cookie=f"sim-visitor-{serial}",
                )
                report.clicks += 1
                if rng.random() > 0.6:
                    continue
                friend = Customer(
                    id=f"sim-{seed}-{serial:06d}",
                    name=f"Friend {serial}",
                    email=f"friend{serial}.{seed}@example.net",
                    consent={ContactChannel.EMAIL: rng.random() < 0.8},
                    created_at=clock.now,
                )
                clock.now = min(clock.now + timedelta(minutes=rng.randint(5, 600)), utcnow())
                device = Signal(kind=SignalKind.DEVICE, value=f"device-{seed}-{serial}")
                service.signup(
                    Signup(customer_id=friend.id, at=clock.now, click_id=click.click.id, signals=(device,)),
                    customer=friend,
                )
                report.signups += 1
                if rng.random() > 0.7:
                    continue
                clock.now = min(clock.now + timedelta(hours=rng.randint(1, 96)), utcnow())
                order = Order(
                    id=f"sim-order-{seed}-{serial:06d}",
                    customer_id=friend.id,
                    amount_minor=rng.randint(1500, 15000),
                    currency="EUR",
                    at=clock.now,
                    click_id=click.click.id,
                )
                conversion = service.process_order(order)
                report.orders += 1
                status = conversion.status.value
                report.by_status[status] = report.by_status.get(status, 0) + 1
                if conversion.status is ConversionStatus.ATTRIBUTED and rng.random() < refund_rate:
                    clock.now = min(clock.now + timedelta(days=rng.randint(2, 20)), utcnow())
                    service.process_refund(
                        Refund(
                            id=f"sim-refund-{seed}-{serial:06d}",
                            order_id=order.id,
                            amount_minor=order.amount_minor,
                            at=clock.now,
                        )
                    )
                    report.refunds += 1
                elif rng.random() < refer_on:
                    next_sharers.append(friend.id)
                if progress is not None:
                    progress(1)
        report.generations = generation + 1
        if not next_sharers:
            break
        sharers = next_sharers
    if advocates:
        # One advocate buys through their own code: the fraud rules reject it, with the reason recorded.
        cheat = advocates[0]
        code = service.issue_code(cheat, campaign_id)
        own = service.process_order(
            Order(
                id=f"sim-self-{seed}",
                customer_id=cheat,
                amount_minor=5000,
                currency="EUR",
                at=clock.now,
                code=code.code,
            )
        )
        report.by_status[own.status.value] = report.by_status.get(own.status.value, 0) + 1
    clock.now = utcnow()
    report.rewards_moved = len(service.advance(limit=1_000_000))
    service.fulfil(limit=1_000_000)
    return report


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method; `mean` is small here."""
    limit, count, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count
