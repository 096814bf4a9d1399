"""The module Dramatiq's worker loads: `dramatiq courier.worker` (what `courier worker` runs).

Importing it reads the settings from the environment, starts error reports if SENTRY_DSN is
set, connects the store and declares every job type on a RabbitMQ broker with Courier's
middleware. It also makes the worker
process take the copies of one stop signal as one request (courier.stop_requests).
"""

from __future__ import annotations

import os

import dramatiq

from courier.broker import worker_stack
from courier.logs import configure_logging
from courier.process import freeze_long_lived_objects
from courier.settings import Settings
from courier.stop_requests import coalesce_stop_signals
from middleware import error_reports
from store.db import make_engine
from tracing import setup as tracing_setup

coalesce_stop_signals()
settings = Settings.from_env()
configure_logging(settings.log_format)
error_reports.start(os.environ)
tracing_setup.configure("courier-worker")
engine = make_engine(settings.database_url)
stack = worker_stack(settings, engine)
broker = stack.broker
dramatiq.set_broker(broker)
freeze_long_lived_objects()
