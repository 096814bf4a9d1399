"""What the command-line modules share: errors, settings and sessions."""

from __future__ import annotations

from typing import Any

import click

from courier.settings import Settings, SettingsError


class Fail(click.ClickException):
    """An error reported as one line on stderr with exit status 1."""


class Misuse(click.ClickException):
    """A request the command refuses as given: one line on stderr, exit status 2."""

    exit_code = 2


def settings_from_env(*, dev: bool = False) -> Settings:
    """The settings, or a one-line error naming the bad variable."""
    try:
        settings = Settings.from_env(dev=dev)
    except SettingsError as e:
        raise Fail(str(e)) from None
    if settings.job_modules:
        from actors.registry import JobModuleError, job_types

        try:
            job_types(settings.job_modules)
        except JobModuleError as e:
            raise Fail(str(e)) from None
    return settings


def session_scope() -> Any:
    """A transaction on the configured database (a context manager)."""
    from store.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(settings_from_env().database_url)).begin()
