"""Server-side HTML rendering with every value escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
)


def render(template: str, **context: Any) -> str:
    """The named template rendered with `context`."""
    return _templates.get_template(template).render(**context)
