"""Database URLs as SQLAlchemy takes them, from the forms people write.

libpq's multi-host form (`postgresql+psycopg://u@h1:5432,h2:5432/courier`) is what
failover setups are documented with, but SQLAlchemy's URL parser reads `5432,h2:5432` as
one port and refuses it. Its PostgreSQL dialects do take the same list as query
parameters (`postgresql+psycopg://u@/courier?host=h1,h2&port=5432,5432`) and hand it to
libpq as it is, which (through psycopg) tries the hosts in order. Every engine and every
migration is made from a URL that went through `engine_url`, so the translation happens
here only.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import URL, make_url

#: One entry of a host list: a name or an IPv4 address, or an IPv6 address in brackets,
#: each with an optional port.
_ENTRY = re.compile(r"(?:(?P<name>[^\s:\[\]/]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>.*))?")

#: Without it libpq takes the first host that answers, a standby as readily as the primary,
#: and every write there fails: a list of hosts is there to find the one that takes writes.
_READ_WRITE = ("target_session_attrs", "read-write")


class BadDatabaseURL(ValueError):
    """A database URL that names no usable server."""


def engine_url(url: str) -> str:
    """`url` in the form SQLAlchemy parses: libpq's comma-separated host list becomes the
    `host` and `port` parameters (with `target_session_attrs=read-write` unless the URL
    asks for something else); any other URL is returned as it is.

    Raises BadDatabaseURL, with a message that shows no password, if an entry of the list
    is malformed.
    """
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name in ("host", "hostaddr", "port") for name, _ in query):
        raise BadDatabaseURL("name the hosts either before the path or with host=, not both")
    hosts, ports = zip(*(_host_and_port(entry) for entry in hostlist.split(",")), strict=True)
    listed = [("host", ",".join(hosts))]
    if any(ports):
        listed.append(("port", ",".join(ports)))
    if not any(name == _READ_WRITE[0] for name, _ in query):
        query.append(_READ_WRITE)
    netloc = f"{userinfo}{at}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode([*listed, *query])))


def parsed(url: str) -> URL:
    """SQLAlchemy's URL object for `url` (either form); BadDatabaseURL if it cannot be one."""
    try:
        return make_url(engine_url(url))
    except BadDatabaseURL:
        raise
    except Exception as e:
        # SQLAlchemy's messages may quote the whole URL, password and all.
        raise BadDatabaseURL(
            f"not a URL SQLAlchemy can read ({type(e).__name__}); check its host and port"
        ) from None


def _host_and_port(entry: str) -> tuple[str, str]:
    match = _ENTRY.fullmatch(entry)
    if match is None:
        raise BadDatabaseURL(f"expected host or host:port in the host list, got {entry!r}")
    host, port = match["name"] or match["ipv6"], match["port"]
    if port is None:
        return host, ""  # libpq's default port for this one
    if not (port.isdecimal() and 0 < int(port) < 65536):
        raise BadDatabaseURL(f"the port of {host!r} must be a number from 1 to 65535")
    return host, port
