"""A worker process writing to one SQLite store for a while: outbox claims and sends, and orders, as the Celery
tasks `send_message` and `process_order` would (the same service calls, without the broker).

`python -m tests.faults.sqlite_writer STORE_URL SECONDS OUTREACH_ID WORKDIR` prints one JSON object: the outcome of
each message sent (by status), how many orders were processed, and every error as `{"type", "message"}` (none is
expected).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from engine.channels import make_adapters
from engine.limits import make_limiter
from engine.outreach import OutreachService
from engine.referrals import ReferralService
from engine.settings import ContactSettings, Settings
from graph.factory import open_store
from graph.model import Customer, utcnow
from graph.program import Order

CODES = 20
"""The seeded advocates' codes are `ADV0CODE` ... `ADV19CODE`."""


def main(store_url: str, seconds: float, outreach_id: str, workdir: Path) -> dict[str, object]:
    settings = Settings(
        store=store_url,
        contact=ContactSettings(
            backend="sqlite", sqlite_path=str(workdir / "contacts.db"), maildir=str(workdir / "mail"), lease_s=30
        ),
    )
    store = open_store(store_url)
    outreach = OutreachService(store, settings, limiter=make_limiter(settings), adapters=make_adapters(settings))
    referrals = ReferralService(store, settings.referral)
    sends: Counter[str] = Counter()
    orders = 0
    errors: list[dict[str, str]] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            for key in outreach.due(limit=5, outreach_id=outreach_id):
                sends[outreach.send(key).status.value] += 1
            buyer = Customer(id=f"wbuyer{n}", email=f"wbuyer{n}@example.org", created_at=utcnow())
            order = Order(
                id=f"word{n}",
                customer_id=buyer.id,
                amount_minor=2500,
                currency="EUR",
                at=utcnow(),
                code=f"ADV{n % CODES}CODE",
            )
            referrals.process_order(order, customer=buyer)
            orders += 1
        except Exception as exc:  # every error is the finding; keep writing to find them all
            errors.append({"type": f"{type(exc).__module__}.{type(exc).__name__}", "message": str(exc)[:300]})
    store.close()
    return {"sends": sends, "orders": orders, "errors": errors}


if __name__ == "__main__":
    url, seconds, outreach_id, workdir = sys.argv[1:5]
    print(json.dumps(main(url, float(seconds), outreach_id, Path(workdir))))
