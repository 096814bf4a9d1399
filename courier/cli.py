"""The `courier` command line (CONTRACT.md §2)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from courier.settings import Settings, SettingsError


class Fail(click.ClickException):
    """An error reported as one line on stderr with exit status 1."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Courier: reliable background jobs for integration work."""
    ctx.obj = {"debug": debug}


def _settings(*, dev: bool = False) -> Settings:
    try:
        return Settings.from_env(dev=dev)
    except SettingsError as e:
        raise Fail(str(e)) from None


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
def dev(port: int, host: str) -> None:
    """Run API, workers and the demo upstream in one process (SQLite, in-memory broker)."""
    from courier import dev as embedded
    from courier.logs import configure_logging

    settings = _settings(dev=True)
    configure_logging(settings.log_format)
    embedded.run(settings, port=port, host=host)


@main.command()
def migrate() -> None:
    """Bring the database to the latest schema (idempotent)."""
    from store import migrate as migrations
    from store.db import make_engine

    engine = make_engine(_settings().database_url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    click.echo("database is at the latest schema")


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
def api(bind: str, workers: int, threads: int) -> None:
    """Serve the HTTP API under gunicorn."""
    _settings()  # fail fast on bad configuration, before gunicorn starts
    args = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers)]
    args += ["--worker-class", "gthread", "--threads", str(threads), "--graceful-timeout", "30"]
    args += ["--access-logfile", "-", "courier.wsgi:get_app()"]
    os.execv(sys.executable, args)


@main.command()
@click.option("--processes", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--no-restart", is_flag=True, help="Exit when the worker group dies.")
def worker(processes: int, threads: int, no_restart: bool) -> None:
    """Run Dramatiq workers for every job type (`dramatiq actors.worker`), restarted if they die."""
    from courier import supervise
    from courier.logs import configure_logging

    configure_logging(_settings().log_format)
    command = [sys.executable, "-m", "dramatiq", "actors.worker"]
    command += ["--processes", str(processes), "--threads", str(threads)]
    if no_restart:
        os.execv(sys.executable, command)
    sys.exit(supervise.run(command))


@main.group()
def token() -> None:
    """Create and revoke API tokens."""


@token.command("create")
@click.option("--tenant", required=True)
@click.option(
    "--role", type=click.Choice(["client", "operator"]), default="client", show_default=True
)
@click.option("--name", default=None, help="A label for the token.")
def token_create(tenant: str, role: str, name: str | None) -> None:
    """Create a token; it is printed once, alone on the last line."""
    from store import tokens

    with _session() as session:
        try:
            secret = tokens.create(session, tenant=tenant, role=role, name=name)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    click.echo(f"created {role} token for tenant {tenant}")
    click.echo(secret)


@token.command("revoke")
@click.argument("token_or_id")
def token_revoke(token_or_id: str) -> None:
    """Revoke a token, given the token itself or its id."""
    from store import tokens

    with _session() as session:
        if not tokens.revoke(session, token_or_id):
            raise Fail("no live token matches")
    click.echo("revoked")


@main.command()
@click.option(
    "--job", "job_ids", multiple=True, type=click.UUID, help="A dead job id (repeatable)."
)
@click.option("--type", "job_type", default=None, help="Only jobs of this type.")
@click.option("--error-type", default=None, help="Only jobs that died of this error.")
@click.option("--tenant", default=None, help="Only this tenant's jobs.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--reason", default=None, help="Why, for the audit log.")
@click.option("--dry-run", is_flag=True, help="Only list what would be replayed.")
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal)."
)
def replay(
    job_ids: tuple[Any, ...],
    job_type: str | None,
    error_type: str | None,
    tenant: str | None,
    limit: int,
    reason: str | None,
    dry_run: bool,
    progress: bool | None,
) -> None:
    """Replay dead jobs as new, linked jobs (bulk), with a progress bar."""
    import getpass

    from tqdm import tqdm

    from actors.broker import publishing_broker
    from store import replays
    from store.db import make_engine, make_sessionmaker

    settings = _settings()
    sessions = make_sessionmaker(make_engine(settings.database_url))
    selection = replays.Selection(
        job_ids=list(job_ids) or None,
        type=job_type,
        error_type=error_type,
        tenant=tenant,
        limit=limit,
    )
    with sessions() as session:
        candidates = replays.preview(session, selection)
    if dry_run:
        for job in candidates:
            click.echo(
                f"{job.id}  {job.tenant}  {job.type}  {job.entity_id or '-'}  {job.error_type}"
            )
        click.echo(f"would replay {len(candidates)} dead job(s)")
        return
    # An in-memory broker lives in `courier dev`'s process: its relay publishes the replays.
    broker = None if settings.uses_memory_broker else publishing_broker(settings)
    with tqdm(
        total=len(candidates), unit="job", disable=None if progress is None else not progress
    ) as bar:
        result = replays.replay_dead(
            sessions,
            broker,
            selection,
            actor=f"cli:{getpass.getuser()}",
            reason=reason,
            on_progress=bar.update,
        )
    if broker is not None:
        broker.close()
    for old, why in result.skipped:
        click.echo(f"skipped {old}: {why}", err=True)
    click.echo(f"replayed {len(result.replayed)} dead job(s), skipped {len(result.skipped)}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats(as_json: bool) -> None:
    """Counts by status and type, queue depths and dead letters."""
    import json

    from actors.registry import queues_by_type
    from store import queue_depths
    from store import stats as aggregates

    settings = _settings()
    with _session() as session:
        summary = aggregates.summary(session)
    depths = queue_depths.depths(
        sorted(set(queues_by_type().values())),
        broker_url=settings.broker_url,
        api_url=settings.rabbitmq_api_url,
    )
    if as_json:
        click.echo(json.dumps({**summary.__dict__, "queues": depths}, indent=2))
        return
    statuses = list(summary.jobs)
    click.echo(f"{'type':<20}" + "".join(f"{s:>11}" for s in statuses))
    for job_type, counts in sorted(summary.by_type.items()):
        click.echo(f"{job_type:<20}" + "".join(f"{counts[s]:>11}" for s in statuses))
    click.echo(f"{'all':<20}" + "".join(f"{summary.jobs[s]:>11}" for s in statuses))
    rate = "-" if summary.success_rate is None else f"{summary.success_rate:.1%}"
    click.echo(
        f"\nsuccess rate {rate}, retries {summary.retry_count}, dead letters "
        f"{summary.dead_letters}, attempt avg {summary.avg_duration_ms} ms, "
        f"p95 {summary.p95_duration_ms} ms"
    )
    for queue, depth in depths.items():
        shown = ", ".join(f"{k} {'?' if v is None else v}" for k, v in depth.items())
        click.echo(f"queue {queue}: {shown}")


@main.command()
@click.option("--older-than", required=True, help="Age, e.g. 30d, 12h, 90m.")
@click.option("--include-dead", is_flag=True, help="Also delete dead jobs (kept by default).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def prune(older_than: str, include_dead: bool, dry_run: bool) -> None:
    """Delete finished jobs (and their attempts) older than that; the audit log is kept."""
    from store import retention
    from store.db import make_engine, make_sessionmaker
    from store.types import utcnow

    cutoff = utcnow() - _age(older_than)
    sessions = make_sessionmaker(make_engine(_settings().database_url))
    with sessions() as session:
        counts = retention.count_prunable(session, cutoff, include_dead=include_dead)
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
    before = f"finished before {cutoff:%Y-%m-%d %H:%M} UTC"
    if dry_run:
        click.echo(f"would delete {sum(counts.values())} job(s) {before}: {detail}")
        return
    deleted = retention.prune(sessions, cutoff, include_dead=include_dead)
    click.echo(f"deleted {deleted} job(s) {before} ({detail}); the audit log is kept")


def _age(text: str) -> Any:
    from datetime import timedelta

    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    try:
        amount, unit = int(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise click.BadParameter("use a number and a unit: 30d, 12h, 90m or 45s") from None
    if amount < 0:
        raise click.BadParameter("must not be negative")
    return timedelta(**{unit: amount})


@main.command("upstream-mock")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(0, 65535))
def upstream_mock(host: str, port: int) -> None:
    """Serve the demo CRM and Billing (used by `courier dev`)."""
    from courier import upstream_mock as mock

    click.echo(f"demo upstream on http://{host}:{port} (crm: /crm, billing: /billing)")
    mock.serve_forever(host, port)


def _session() -> Any:
    from store.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(_settings().database_url)).begin()


def run() -> None:
    """Entry point with the contract's exit statuses: 2 bad usage, 1 other errors, one line."""
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
