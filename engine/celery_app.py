"""The Celery application: Redis as broker and result store, JSON only, late acks.

With late acks Redis hands a task it gave a worker to another once `celery.visibility_timeout_s` passes unacked:
that is how a killed worker's task runs again, and why the timeout must outlast the slowest task.

Workers start with `celery -A engine.celery_app worker`; they read the same `ADVOCACY_*` settings as the API.
"""

from __future__ import annotations

from celery import Celery

from engine.observability import install_task_context
from engine.settings import Settings, get_settings


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    install_task_context(settings)
    app = Celery("advocacy", broker=settings.broker_url, backend=settings.result_backend, include=["engine.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.celery.visibility_timeout_s},
    )
    return app


app = make_celery()
