"""What the command-line modules share: errors, settings and sessions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from courier.settings import DEFAULT_LIMITS, Settings, SettingsError, check_limits


class Fail(click.ClickException):
    """An error reported as one line on stderr with exit status 1."""


class BadUsage(Fail):
    """Bad usage reported as one line on stderr with exit status 2."""

    exit_code = 2


_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def duration(text: str, *, option: str) -> timedelta:
    """A span such as 30d, 12h, 90m or 45s, given to `option`; BadUsage if it is not one."""
    try:
        amount, unit = int(text[:-1]), _UNITS[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise BadUsage(f"{option}: use a number and a unit: 30d, 12h, 90m or 45s") from None
    if amount < 0:
        raise BadUsage(f"{option}: must not be negative")
    return timedelta(**{unit: amount})


def settings_from_env(*, dev: bool = False) -> Settings:
    """The settings, or a one-line error naming the bad variable."""
    try:
        settings = Settings.from_env(dev=dev)
    except SettingsError as e:
        raise Fail(str(e)) from None
    if settings.job_modules or settings.job_queues or settings.limits != DEFAULT_LIMITS:
        from actors.registry import JobModuleError, JobQueuesError, queues_by_type

        try:
            check_limits(settings.limits, queues_by_type(settings.job_modules, settings.job_queues))
        except (JobModuleError, JobQueuesError, SettingsError) as e:
            raise Fail(str(e)) from None
    return settings


def known_queues(settings: Settings, names: list[str], *, option: str) -> list[str]:
    """`names` without repeats, each a queue some job type runs on; BadUsage naming `option`
    if one is not."""
    from actors.registry import queues_by_type

    known = set(queues_by_type(settings.job_modules, settings.job_queues).values())
    unknown = sorted(set(names) - known)
    if unknown:
        raise BadUsage(
            f"{option}: no job type runs on {', '.join(unknown)}"
            f" (queues: {', '.join(sorted(known))})"
        )
    return list(dict.fromkeys(names))


def session_scope() -> Any:
    """A transaction on the configured database (a context manager)."""
    from store.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(settings_from_env().database_url)).begin()
