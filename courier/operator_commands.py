"""Operators' commands: bulk replay, stats, retention and purging a queue."""

from __future__ import annotations

from typing import Any

import click

from courier.cli_support import BadUsage, duration, known_queues, session_scope, settings_from_env


@click.command()
@click.option(
    "--job", "job_ids", multiple=True, type=click.UUID, help="A dead job id (repeatable)."
)
@click.option("--type", "job_type", default=None, help="Only jobs of this type.")
@click.option("--error-type", default=None, help="Only jobs that died of this error.")
@click.option("--tenant", default=None, help="Only this tenant's jobs.")
@click.option("--all", "every", is_flag=True, help="Every dead job (no --job and no filter).")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--reason", default=None, help="Why, for the audit log.")
@click.option("--dry-run", is_flag=True, help="Only count and show the first ids.")
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal)."
)
def replay(
    job_ids: tuple[Any, ...],
    job_type: str | None,
    error_type: str | None,
    tenant: str | None,
    every: bool,
    limit: int,
    reason: str | None,
    dry_run: bool,
    progress: bool | None,
) -> None:
    """Replay dead jobs as new, linked jobs (bulk), with a progress bar."""
    import getpass

    from tqdm import tqdm

    from actors.registry import queues_by_type
    from courier.broker import publishing_broker
    from delivery import replays
    from delivery.outbox import Outbox
    from store import bulk_replay, errors
    from store.db import make_engine, make_sessionmaker

    selection = bulk_replay.Selection(
        job_ids=list(job_ids) or None,
        type=job_type,
        error_type=error_type,
        tenant=tenant,
        limit=limit,
        every=every,
    )
    try:
        selection.check()
    except errors.UnnamedReplay:
        raise BadUsage(
            "name the dead jobs (--job, --type, --error-type, --tenant) or pass --all"
        ) from None
    settings = settings_from_env()
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        preview = bulk_replay.preview(session, selection)
    if dry_run:
        for job_id in preview.first_ids:
            click.echo(str(job_id))
        shown = len(preview.first_ids)
        more = f" (the first {shown} above)" if shown < preview.count else ""
        click.echo(f"would replay {preview.count} dead job(s){more}")
        return
    # An in-memory broker lives in `courier dev`'s process: its relay publishes the replays.
    broker = None if settings.uses_memory_broker else publishing_broker(settings)
    outbox = None if broker is None else Outbox(broker, engine)
    with tqdm(
        total=preview.count, unit="job", disable=None if progress is None else not progress
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        result = replays.replay_dead(
            sessions,
            outbox,
            selection,
            actor=f"cli:{getpass.getuser()}",
            reason=reason,
            on_progress=advance,
            queues=queues_by_type(settings.job_modules, settings.job_queues),
        )
    if broker is not None:
        broker.close()
    for old, why in result.skipped:
        click.echo(f"skipped {old}: {why}", err=True)
    click.echo(f"replayed {len(result.replayed)} dead job(s), skipped {len(result.skipped)}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats(as_json: bool) -> None:
    """Counts by status and type, queue depths and dead letters."""
    import json

    from actors.registry import queues_by_type
    from delivery import queue_depths
    from store import stats as aggregates

    settings = settings_from_env()
    with session_scope() as session:
        summary = aggregates.summary(session)
    depths = queue_depths.depths(
        sorted(set(queues_by_type(settings.job_modules, settings.job_queues).values())),
        broker_url=settings.broker_url,
        api_url=settings.rabbitmq_api_urls,
        queue_type=settings.queue_type,
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


@click.command()
@click.option("--older-than", required=True, help="Age, e.g. 30d, 12h, 90m.")
@click.option("--include-dead", is_flag=True, help="Also delete dead jobs (kept by default).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def prune(older_than: str, include_dead: bool, dry_run: bool) -> None:
    """Delete finished jobs (and their attempts) older than that; the audit log is kept."""
    from store import retention
    from store.db import make_engine, make_sessionmaker

    age = duration(older_than, option="--older-than")
    sessions = make_sessionmaker(make_engine(settings_from_env().database_url))
    with sessions() as session:
        cutoff = retention.cutoff(session, age)
        counts = retention.count_prunable(session, cutoff, include_dead=include_dead)
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
    before = f"finished before {cutoff:%Y-%m-%d %H:%M} UTC"
    if dry_run:
        click.echo(f"would delete {sum(counts.values())} job(s) {before}: {detail}")
        return
    deleted = retention.prune(sessions, cutoff, include_dead=include_dead)
    click.echo(f"deleted {deleted} job(s) {before} ({detail}); the audit log is kept")


@click.command()
@click.option("--queue", "queue", required=True, help="The queue to purge.")
@click.option("--reason", default=None, help="Why, for the audit log.")
def purge(queue: str, reason: str | None) -> None:
    """Cancel every queued or retrying job of a queue and empty it in the broker."""
    import getpass

    from courier.broker import publishing_broker
    from delivery import purge as purging
    from store.db import make_engine, make_sessionmaker

    settings = settings_from_env()
    known_queues(settings, [queue], option="--queue")
    engine = make_engine(settings.database_url)
    # An in-memory broker lives in `courier dev`'s process: the jobs are cancelled in SQL and
    # their messages there are refused when claimed.
    broker = None if settings.uses_memory_broker else publishing_broker(settings)
    try:
        cancelled = purging.purge(
            make_sessionmaker(engine),
            broker,
            queue,
            actor=f"cli:{getpass.getuser()}",
            reason=reason,
        )
    finally:
        if broker is not None:
            broker.close()
        engine.dispose()
    click.echo(f"purged {queue}: cancelled {cancelled} job(s)")
