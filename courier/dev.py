"""`courier dev`: the whole service in one process on SQLite and the in-process broker."""

from __future__ import annotations

import logging
import os
import signal
import threading

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, inspect

from courier import upstream_mock
from courier.broker import start_in_process_worker, worker_stack
from courier.dev_server import make_dev_server
from courier.settings import Settings
from courier.wsgi import app_for
from middleware import error_reports
from store import migrate, schedules, tokens, transitions
from store.cadence import Cadence
from store.db import make_engine, make_sessionmaker
from tracing import setup as tracing_setup

log = logging.getLogger(__name__)


def run(settings: Settings, *, port: int, host: str = "127.0.0.1", threads: int = 4) -> None:
    """Serve the API, run workers and the demo upstream until SIGINT or SIGTERM."""
    error_reports.start(os.environ)
    tracing_setup.configure("courier")
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    client_token, operator_token = prepare(engine, settings)

    upstream = _start_upstream(settings)
    stack = worker_stack(settings, engine, broker=StubBroker(middleware=[]))
    dramatiq.set_broker(stack.broker)
    worker = start_in_process_worker(stack, threads=threads)

    app = app_for(settings, broker=stack.broker, sessions=sessions)
    server = make_dev_server(host, port, app)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    serving.start()

    print(f"url: http://{host}:{server.server_port}", flush=True)
    print(f"client token: {client_token}", flush=True)
    print(f"operator token: {operator_token}", flush=True)
    if upstream is not None:
        print(f"demo upstream: {upstream.url}", flush=True)
    stop.wait()
    print("stopping…", flush=True)
    server.shutdown()
    worker.stop(timeout=10_000)
    stack.upstreams.close()
    if upstream is not None:
        upstream.stop()
    engine.dispose()
    error_reports.stop()


def prepare(engine: Engine, settings: Settings) -> tuple[str, str]:
    """Bring the database up to date and return new client and operator tokens of the demo
    tenant; a new database also gets the demo schedule."""
    new_database = not inspect(engine).has_table("alembic_version")
    migrate.upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        client_token = tokens.create(session, tenant="demo", role="client", name="dev client")
        operator_token = tokens.create(session, tenant="demo", role="operator", name="dev operator")
        # The in-process queue did not survive the last run: every waiting job is due again.
        transitions.unpublish_waiting(session.connection())
        if new_database:
            # Only on the first start, so that a demo schedule the user deleted stays deleted.
            schedules.create(session, _demo_schedule(settings))
    return client_token, operator_token


def _demo_schedule(settings: Settings) -> schedules.NewSchedule:
    # Paused: it shows the schedules page filled without running anything on its own.
    return schedules.NewSchedule(
        tenant="demo",
        name="demo-directory-sync",
        type="directory_sync",
        cadence=Cadence.checked(
            cron="0 3 * * *", interval_s=None, timezone="Europe/Berlin", jitter_s=300
        ),
        max_attempts=settings.max_attempts,
        paused=True,
    )


def _start_upstream(settings: Settings) -> upstream_mock.MockServer | None:
    """Start the demo upstream where the settings point, unless something already listens there."""
    from urllib.parse import urlsplit

    crm = urlsplit(settings.crm_url)
    if crm.hostname not in ("127.0.0.1", "localhost"):
        return None
    try:
        return upstream_mock.start(crm.hostname or "127.0.0.1", crm.port or 80)
    except OSError:
        log.warning("port %s is taken; using the upstream already running there", crm.port)
        return None
