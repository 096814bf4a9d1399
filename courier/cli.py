"""The `courier` command line (docs/commands.md)."""

from __future__ import annotations

import os
import sys

import click

from courier.cli_support import (
    BadUsage,
    Fail,
    duration,
    known_queues,
    session_scope,
    settings_from_env,
)
from courier.process import freeze_long_lived_objects
from courier.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Courier: reliable background jobs for integration work."""
    ctx.obj = {"debug": debug}
    freeze_long_lived_objects()


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
def dev(port: int, host: str) -> None:
    """Run API, workers and the demo upstream in one process (SQLite, in-memory broker)."""
    from courier import dev as embedded
    from courier.logs import configure_logging

    settings = settings_from_env(dev=True)
    _check_error_reports()
    configure_logging(settings.log_format)
    embedded.run(settings, port=port, host=host)


@main.command()
def migrate() -> None:
    """Bring the database to the latest schema (idempotent)."""
    from store import migrate as migrations
    from store.db import make_engine

    engine = make_engine(settings_from_env().database_url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    click.echo("database is at the latest schema")


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--threads",
    default=128,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Threads per worker process: each long poll or event stream holds one while it waits.",
)
def api(bind: str, workers: int, threads: int) -> None:
    """Serve the HTTP API under gunicorn."""
    settings_from_env()  # fail fast on bad configuration, before gunicorn starts
    args = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers)]
    args += ["--worker-class", "gthread", "--threads", str(threads), "--graceful-timeout", "30"]
    from courier import wsgi  # here: the other commands need none of the API

    # Waiting requests may take at most three quarters of the threads: the rest stay for
    # everything else, health checks included.
    waiters = os.environ.setdefault(wsgi.MAX_WAITERS, str(max(1, threads - max(2, threads // 4))))
    if not (waiters.isdecimal() and int(waiters) >= 1):
        raise Fail(f"{wsgi.MAX_WAITERS} must be a whole number of at least 1, not {waiters!r}")
    # The same access line as gunicorn's default, without building every header per request.
    args += ["--access-logfile", "-", "--logger-class", "api.access_log.AccessLog"]
    args += ["courier.wsgi:get_app()"]
    os.execv(sys.executable, args)


@main.command()
@click.option("--processes", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--no-restart", is_flag=True, help="Exit when the worker group dies.")
@click.option(
    "--queues",
    "queue_list",
    default=None,
    metavar="Q[,Q...]",
    help="Consume only these queues, comma-separated (default: every queue).",
)
def worker(processes: int, threads: int, no_restart: bool, queue_list: str | None) -> None:
    """Run Dramatiq workers for every job type (`dramatiq courier.worker`), restarted on death.

    The relay, reaper, reconciler and scheduler run in every worker process for every queue,
    whatever `--queues` says.
    """
    from courier import supervise
    from courier.logs import configure_logging

    settings = settings_from_env()
    consumed = _consumed_queues(settings, queue_list)
    _check_error_reports()
    configure_logging(settings.log_format)
    command = [sys.executable, "-m", "dramatiq", "courier.worker"]
    command += ["--processes", str(processes), "--threads", str(threads)]
    command += ["--worker-shutdown-timeout", str(round(settings.drain_timeout_s * 1000))]
    if consumed:
        command += ["--queues", *consumed]
    if no_restart:
        os.execv(sys.executable, command)
    sys.exit(supervise.run(command))


def _consumed_queues(settings: Settings, queue_list: str | None) -> list[str]:
    """The queues `--queues` names (empty: all), each one a job type runs on; BadUsage if not."""
    if queue_list is None:
        return []
    named = [q.strip() for q in queue_list.split(",") if q.strip()]
    if not named:
        raise BadUsage("--queues: name at least one queue")
    from delivery import bands

    known = known_queues(settings, named, option="--queues")
    # Dramatiq's --queues names RabbitMQ queues: every band of each (delivery.bands).
    return [name for queue in known for name in bands.names(queue, settings.queue_type)]


def _check_error_reports() -> None:
    """Fail fast on a SENTRY_DSN Sentry's client cannot use, before workers start."""
    from middleware import error_reports

    try:
        error_reports.check(os.environ)
    except error_reports.BadReportingSettings as e:
        raise Fail(str(e)) from None


@main.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.option("--tenant", required=True)
@click.option(
    "--role", type=click.Choice(["client", "operator"]), default="client", show_default=True
)
@click.option("--name", default=None, help="A label for the token.")
@click.option("--expires-in", default=None, help="Lifetime, e.g. 90d, 12h, 30m (default: none).")
def token_create(tenant: str, role: str, name: str | None, expires_in: str | None) -> None:
    """Create a token; it is printed once, alone on the last line."""
    from store import tokens

    lifetime = None if expires_in is None else duration(expires_in, option="--expires-in")
    if lifetime is not None and not lifetime:
        raise BadUsage("--expires-in: must be more than 0")
    with session_scope() as session:
        try:
            secret = tokens.create(
                session,
                tenant=tenant,
                role=role,
                name=name,
                expires_in_s=None if lifetime is None else lifetime.total_seconds(),
            )
        except ValueError as e:
            raise BadUsage(str(e)) from None
    click.echo(f"created {role} token for tenant {tenant}")
    click.echo(secret)


@token.command("list")
@click.option("--tenant", default=None, help="Only this tenant's tokens.")
def token_list(tenant: str | None) -> None:
    """List tokens (never their secrets), oldest first."""
    from courier import token_table
    from store import tokens

    with session_scope() as session:
        rows = tokens.listing(session, tenant=tenant)
    click.echo(token_table.render(rows))


@token.command("revoke")
@click.argument("token_or_id")
def token_revoke(token_or_id: str) -> None:
    """Revoke a token, given the token itself or its id (see `courier token list`)."""
    from store import tokens

    with session_scope() as session:
        if not tokens.revoke(session, token_or_id):
            raise Fail("no live token matches")
    click.echo("revoked")


@main.command("upstream-mock")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(0, 65535))
def upstream_mock(host: str, port: int) -> None:
    """Serve the demo CRM and Billing (used by `courier dev`)."""
    from courier import upstream_mock as mock

    click.echo(f"demo upstream on http://{host}:{port} (crm: /crm, billing: /billing)")
    mock.serve_forever(host, port)


def _add_operator_commands() -> None:
    from courier import operator_commands, schedule_commands, tenant_commands

    for command in (
        operator_commands.replay,
        operator_commands.stats,
        operator_commands.prune,
        operator_commands.purge,
    ):
        main.add_command(command)
    main.add_command(schedule_commands.schedule)
    main.add_command(tenant_commands.tenant)


_add_operator_commands()


def run() -> None:
    """Entry point with the documented exit statuses: 2 bad usage, 1 other errors, one line."""
    debug = "--debug" in sys.argv[1:]
    try:
        main.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(0)
    except Exception as e:
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {_first_line(e)}", err=True)
        sys.exit(1)
    sys.exit(0)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]
