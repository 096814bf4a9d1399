"""Values as PostgreSQL can store them: its text holds no NUL character and no lone surrogate.

Text from outside (an upstream's error body, a job type's result) is recorded with such
characters replaced by U+FFFD, rather than the whole write being refused.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

T = TypeVar("T")

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: T) -> T:
    """`value` (text, or a JSON value of dicts, lists and text) with each unstorable
    character replaced; other values as they are."""
    return _storable(value)


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value
