"""Passwords out of URLs before a URL is shown: in configuration errors and in log lines."""

from __future__ import annotations

import re

# scheme://user:password@ — the user stays (it says which account), the password goes. A
# password holds no "@" (URLs percent-encode it), so the match ends at the first one.
_PASSWORD_IN_URL = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s'\"]*:)[^@\s'\"]*@")

MASK = "***"


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    # Every log line's values pass through here, and almost none holds a URL: the
    # substring test costs a fiftieth of the pattern's search.
    if "://" not in text:
        return text
    return _PASSWORD_IN_URL.sub(rf"\g<prefix>{MASK}@", text)
