"""Tenants' commands: the secret a tenant's webhooks are signed with."""

from __future__ import annotations

import re

import click

from courier.cli_support import BadUsage, session_scope

#: What a tenant may be called (as in tokens and jobs).
TENANT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@click.group()
def tenant() -> None:
    """Per-tenant settings: the webhook signing secret."""


@tenant.command("webhook-secret")
@click.option("--tenant", "name", required=True, help="The tenant.")
@click.option("--rotate", is_flag=True, help="Replace the secret with a new one (audited).")
@click.option("--reason", default=None, help="Why it is rotated, for the audit log.")
def webhook_secret(name: str, rotate: bool, reason: str | None) -> None:
    """Print the tenant's webhook secret (made on first use), alone on the last line."""
    import getpass

    from store import tenants

    if not TENANT_NAME.fullmatch(name):
        raise BadUsage("--tenant: 1 to 64 of A-Z a-z 0-9 _ . : -")
    with session_scope() as session:
        if rotate:
            secret = tenants.rotate(session, name, actor=f"cli:{getpass.getuser()}", reason=reason)
        else:
            secret = tenants.webhook_secret(session, name)
    if rotate:
        click.echo(f"rotated the webhook secret of tenant {name}; deliveries now use this one")
    else:
        click.echo(f"webhook secret of tenant {name}")
    click.echo(secret)
