"""Passwords out of URLs before a URL is shown: in configuration errors and in log lines."""

from __future__ import annotations

import re

# scheme://user:password@ — the user stays (it says which account), the password goes. A
# password holds no "@" (URLs percent-encode it), so the match ends at the first one.
_PASSWORD_IN_URL = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s'\"]*:)[^@\s'\"]*@")

MASK = "***"


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    return _PASSWORD_IN_URL.sub(rf"\g<prefix>{MASK}@", text)
