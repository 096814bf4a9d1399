"""The WSGI entry point gunicorn serves: `gunicorn 'courier.wsgi:get_app()'`."""

from __future__ import annotations

import os
from functools import partial

import falcon

from actors.registry import input_checks, known_upstreams, queues_by_type
from api.app import create_app
from api.intake import Defaults
from courier.broker import publishing_broker
from courier.logs import configure_logging
from courier.process import freeze_long_lived_objects
from courier.settings import Settings
from delivery import queue_depths
from store.db import make_engine, make_sessionmaker
from tracing import setup as tracing_setup

#: How many requests may wait at once in one API process (long polls, event streams): set
#: by `courier api` from its thread count, so that waiters leave threads for the rest.
MAX_WAITERS = "COURIER_API_MAX_WAITERS"


def get_app() -> falcon.App:
    """Build the API from the environment."""
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    # Here, in each gunicorn worker after the fork: the span exporter runs a thread.
    tracing_setup.configure("courier-api")
    waiters = os.environ.get(MAX_WAITERS)
    app = app_for(
        settings,
        broker=publishing_broker(settings),
        max_waiters=int(waiters) if waiters else None,
    )
    freeze_long_lived_objects()
    return app


def app_for(  # type: ignore[no-untyped-def]
    settings: Settings, *, broker, sessions=None, watch=None, max_waiters=None
) -> falcon.App:
    """The API for these settings, on a given broker (and store, if already open; and job
    watch, if one is given, else one that lets `max_waiters` wait at once)."""
    if sessions is None:
        sessions = make_sessionmaker(make_engine(settings.database_url))
    queues = queues_by_type(settings.job_modules, settings.job_queues)
    return create_app(
        sessions=sessions,
        broker=broker,
        queues=queues,
        defaults=Defaults(max_attempts=settings.max_attempts, timeout_s=settings.job_timeout_s),
        input_checks=input_checks(settings.job_modules),
        queue_depths=partial(
            queue_depths.depths,
            sorted(set(queues.values())),
            broker_url=settings.broker_url,
            api_url=settings.rabbitmq_api_urls,
            broker=broker,
            queue_type=settings.queue_type,
        ),
        stats_max_age_s=settings.stats_max_age_s,
        callback_hosts=settings.callback_hosts,
        fair_share=settings.fair_share,
        max_active=settings.tenant_max_active,
        watch=watch,
        max_waiters=max_waiters,
        upstreams=known_upstreams(settings.job_modules),
    )
