"""`courier token list`'s table: one token a line, aligned columns, never a secret."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

HEADINGS = ("id", "tenant", "role", "name", "created", "last used", "expires", "revoked")


def render(rows: Sequence[Any]) -> str:
    """The rows of `store.tokens.listing` as a table with a heading line."""
    lines = [HEADINGS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADINGS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _cells(row: Any) -> tuple[str, ...]:
    expires = _when(row.expires_at)
    if row.expired:
        expires += " (expired)"
    return (
        str(row.id),
        row.tenant,
        row.role,
        row.name or "-",
        _when(row.created_at),
        _when(row.last_used_at),
        expires,
        _when(row.revoked_at),
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}Z"
