"""Where outbox messages are sent from: this process (embedded mode) or Celery workers (production).

Both run the same step, `OutreachService.send(key)`, so the embedded demo and a fleet of workers behave alike;
only the transport differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from engine.outreach import OutreachService

SEND_TASK = "advocacy.send_message"


class InlineDispatcher:
    """Sends each message now, in this process: no broker needed."""

    def __init__(self, service: OutreachService) -> None:
        self.service = service

    def dispatch(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.service.send(key)


class CeleryDispatcher:
    """One `advocacy.send_message` task per key; the outbox makes duplicates harmless."""

    def __init__(self, app: Celery, *, store_url: str | None = None, database: str | None = None) -> None:
        self.app = app
        self.kwargs = {"store_url": store_url, "database": database}

    def dispatch(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.app.send_task(SEND_TASK, args=[key], kwargs=self.kwargs)
