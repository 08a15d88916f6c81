"""The Celery application: configuration only; the broker carries work, never results."""

from __future__ import annotations

from typing import Any

from celery import Celery

from infra_automation.config import Settings
from infra_automation.exceptions import ConfigurationError
from infra_automation.secrets import safe_url
from infra_automation.workers.beat import beat_schedule

__all__ = ["RUN_STEP", "SCHEDULE_RUN", "Celery", "make_app"]
SCHEDULE_RUN = "infra.schedule_run"
RUN_STEP = "infra.run_step"


def broker_url(settings: Settings) -> str:
    """The configured broker (ConfigurationError when there is none)."""
    if not settings.broker_url:
        raise ConfigurationError(
            "broker_url: not set (INFRA_BROKER_URL or broker_url in infra.toml), "
            "e.g. redis://127.0.0.1:6379/0"
        )
    return settings.broker_url


def make_app(settings: Settings) -> Celery:
    """A Celery app on the configured broker (tasks are bound by the worker)."""
    url = broker_url(settings)
    app = Celery("infra_automation", broker=url, set_as_current=False)
    app.conf.update(_conf(settings))
    return app


def _conf(settings: Settings) -> dict[str, Any]:
    return {
        "task_default_queue": settings.scheduler_queue,
        "task_ignore_result": True,  # the record holds the results
        "task_acks_late": True,  # a worker takes one message at a time ...
        "worker_prefetch_multiplier": 1,  # ... and no more
        "task_reject_on_worker_lost": False,  # a killed worker's step: its scheduler decides
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 3600},
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "beat_schedule": beat_schedule(settings),  # verify_every: `infra worker --beat`
    }


def describe(settings: Settings) -> str:
    """The broker URL fit for messages (no password)."""
    return safe_url(settings.broker_url or "")
