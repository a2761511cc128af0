"""What `make_celery` takes from the settings: the broker's visibility timeout and the workers' metrics port."""

from __future__ import annotations

import pytest

from engine import observability
from engine.celery_app import make_celery
from engine.settings import CelerySettings, RedisSettings, Settings

BROKER = RedisSettings(url="redis://127.0.0.1:1/0")
"""Never connected to: building the app opens no connection."""


@pytest.mark.parametrize("seconds", [7200, 90])
def test_the_brokers_visibility_timeout_is_the_setting(seconds: int) -> None:
    app = make_celery(Settings(redis=BROKER, celery=CelerySettings(visibility_timeout_s=seconds)))
    assert app.conf.broker_transport_options["visibility_timeout"] == seconds


def test_the_visibility_timeout_defaults_to_an_hour() -> None:
    assert make_celery(Settings(redis=BROKER)).conf.broker_transport_options == {"visibility_timeout": 3600}


def test_workers_serve_metrics_on_the_configured_port_and_none_without_one() -> None:
    make_celery(Settings(redis=BROKER, celery=CelerySettings(metrics_port=9464)))
    assert observability._worker.metrics_port == 9464
    make_celery(Settings(redis=BROKER))
    assert observability._worker.metrics_port is None


def test_a_visibility_timeout_or_metrics_port_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="visibility_timeout_s"):
        CelerySettings(visibility_timeout_s=0)
    with pytest.raises(ValueError, match="metrics_port"):
        CelerySettings(metrics_port=70000)
