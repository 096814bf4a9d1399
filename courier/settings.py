"""One frozen settings object, read from the environment once at each entry point."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from courier.redact import redact
from store import urls
from store.limits import KINDS, Limit

T = TypeVar("T")

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/courier"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEV_DATABASE_URL = "sqlite:///courier-dev.db"
DEV_BROKER_URL = "memory://"
#: What a queue may be called: its RabbitMQ queues are the name and the name plus `.XQ`.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")
#: A DNS name or an IPv4 address (lower case); an IPv6 address in brackets.
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,252})|\[[0-9a-f:.]+\]")
#: What a job type's name in COURIER_LIMITS may look like.
TYPE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: One running directory sync per entity: each pages through the whole CRM directory.
DEFAULT_LIMITS = (Limit("entity", 1, type="directory_sync"),)
#: The largest PostgreSQL `integer`: bounds settings that end up in SQL (LIMITs, columns).
SQL_INT_MAX = 2**31 - 1


class SettingsError(ValueError):
    """A configuration variable holds a value Courier cannot use."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable about a Courier process (docs/configuration.md)."""

    database_url: str = DEFAULT_DATABASE_URL
    # One RabbitMQ node, or several (comma-separated) that clients fail over between.
    broker_url: str = DEFAULT_BROKER_URL
    # One management API, or one per node (comma-separated), asked in order.
    rabbitmq_api_url: str | None = "http://guest:guest@127.0.0.1:15672"
    # `classic` (one queue per Courier queue, priorities 0-9) or `quorum` (replicated).
    queue_type: str = "classic"
    crm_url: str = "http://127.0.0.1:8100/crm"
    billing_url: str = "http://127.0.0.1:8100/billing"
    upstream_timeout_s: float = 10.0
    max_attempts: int = 4
    min_backoff_ms: int = 30_000
    max_backoff_ms: int = 300_000
    job_timeout_s: int = 600
    log_format: str = "json"
    # Operational knobs (lease, reaper, relay, progress); tests shorten them through the
    # environment.
    lease_s: int = 30
    reaper_interval_s: float = 10.0
    relay_interval_s: float = 0.5
    progress_interval_s: float = 1.0
    # How long a stopping worker lets its running attempts finish before it exits anyway.
    drain_timeout_s: float = 30.0
    # How long past its job's time limit an attempt may run before it counts as hung.
    stuck_grace_s: float = 60.0
    # How old the figures of /v1/stats and /metrics may be (each API process shares one).
    stats_max_age_s: float = 5.0
    # The reconciler: how often each worker compares queues with SQL, and how old a job's
    # message must be to count (beyond the management API's statistics delay).
    reconcile_interval_s: float = 60.0
    reconcile_settle_s: float = 20.0
    # Modules that register more job types (comma-separated), imported by the API and workers.
    job_modules: tuple[str, ...] = ()
    # Job type -> queue, overriding the queue a job type names (`directory_sync=low,...`).
    job_queues: tuple[tuple[str, str], ...] = ()
    # How often each worker's scheduler looks for due schedules.
    scheduler_interval_s: float = 1.0
    # Host names a job's callback_url may point at (empty: no webhooks), and how long after
    # a delivery was queued it is retried before it is given up.
    callback_hosts: frozenset[str] = frozenset()
    webhook_retry_s: int = 86_400
    # How often each worker queues and sends webhook deliveries, the bounds of their retry
    # delays, the timeout of one delivery and how many one process sends at once.
    webhook_interval_s: float = 1.0
    webhook_min_backoff_s: float = 10.0
    webhook_max_backoff_s: float = 3600.0
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 8
    # Concurrency limits (`<type>:<entity|tenant|upstream>=<n>`, `upstream:<name>=<n>`).
    limits: tuple[Limit, ...] = DEFAULT_LIMITS
    # Upstream circuits: consecutive UpstreamUnavailable attempts that open one, its first
    # cool-down (doubled after each failed probe) and how many probe jobs test it.
    circuit_failures: int = 5
    circuit_cooldown_s: float = 30.0
    circuit_probes: int = 3
    # Fairness: how many messages one tenant may have waiting in one queue; its further jobs
    # wait in SQL and the relay tops each tenant up in turn.
    fair_share: int = 500
    # Tenant quotas: at most this many active (queued, running, retrying) jobs per tenant.
    tenant_max_active: int = 100_000

    @property
    def uses_memory_broker(self) -> bool:
        return self.broker_url == DEV_BROKER_URL

    @property
    def broker_urls(self) -> list[str]:
        """The RabbitMQ nodes, in the order clients try them."""
        return _split(self.broker_url)

    @property
    def rabbitmq_api_urls(self) -> list[str]:
        """The management APIs to ask, in order: as listed, or one API URL given for
        several nodes on other hosts: the same port and credentials on each node's host."""
        given = _split(self.rabbitmq_api_url or "")
        hosts = list(dict.fromkeys(urlsplit(url).hostname for url in self.broker_urls))
        if len(given) != 1 or len(hosts) < 2:
            return given
        api = urlsplit(given[0])
        credentials, _, _ = api.netloc.rpartition("@")
        at = f"{credentials}@" if credentials else ""
        return given + [
            api._replace(netloc=f"{at}{host}:{api.port or 15672}").geturl()
            for host in hosts
            if host and host != api.hostname
        ]

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated the same way)."""
        return _validated(dataclasses.replace(self, **changes))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dev: bool = False) -> Settings:
        """Read `COURIER_*` variables; `dev` switches the defaults to the embedded mode."""
        env = os.environ if environ is None else environ
        base = (
            cls(database_url=DEV_DATABASE_URL, broker_url=DEV_BROKER_URL, log_format="console")
            if dev
            else cls()
        )
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = f"COURIER_{field.name.upper()}"
            if name in env:
                fields[field.name] = _parse(name, env[name], _PARSERS[field.name])
        return _validated(dataclasses.replace(base, **fields))


def _parse(name: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw.strip())
    except ValueError as e:
        raise SettingsError(f"{name}: {e}") from None


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _positive_int_up_to(most: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = _positive_int(raw)
        if value > most:
            raise ValueError(f"must be at most {most}, got {value}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {raw}")
    return value


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        scheme = urlsplit(raw).scheme.split("+")[0]
        if scheme not in schemes:
            raise ValueError(
                f"expected a URL starting with {' or '.join(s + ':' for s in schemes)} "
                f"got {redact(raw)!r}"
            )
        return raw

    return parse


def _database_url(raw: str) -> str:
    # Parsed now, so a malformed host list stops start-up rather than the first connection.
    urls.parsed(_url("postgresql", "sqlite")(raw))
    return raw


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _urls(*schemes: str) -> Callable[[str], str]:
    one = _url(*schemes)

    def parse(raw: str) -> str:
        urls = [one(url) for url in _split(raw)]
        if not urls:
            raise ValueError("expected at least one URL")
        return ",".join(urls)

    return parse


def _broker_urls(raw: str) -> str:
    if raw == DEV_BROKER_URL:
        return raw
    urls = _split(_urls("amqp", "amqps")(raw))
    vhosts = {_vhost_of(url) for url in urls}
    if len(vhosts) > 1:
        raise ValueError(f"every node must name the same vhost, got {', '.join(sorted(vhosts))}")
    return ",".join(urls)


def _vhost_of(broker_url: str) -> str:
    """The vhost an AMQP URL names (`/` when it names none)."""
    return unquote(urlsplit(broker_url).path.lstrip("/")) or "/"


def _optional_http_urls(raw: str) -> str | None:
    return _urls("http", "https")(raw) if raw else None


def _queue_type(raw: str) -> str:
    if raw not in ("classic", "quorum"):
        raise ValueError(f"expected 'classic' or 'quorum', got {raw!r}")
    return raw


def _module_names(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"expected dotted module names separated by commas, got {name!r}")
    return names


def _job_queues(raw: str) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        job_type, sep, queue = (side.strip() for side in item.partition("="))
        if not sep or not job_type or not QUEUE_NAME.fullmatch(queue):
            raise ValueError(
                f"expected <type>=<queue> pairs separated by commas, with queue names of "
                f"letters, digits, '_' and '-', got {item!r}"
            )
        if job_type in pairs:
            raise ValueError(f"job type {job_type!r} is mapped twice")
        pairs[job_type] = queue
    return tuple(pairs.items())


def _limits(raw: str) -> tuple[Limit, ...]:
    limits: dict[tuple[str | None, str, str | None], Limit] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        limit = _limit(item)
        key = (limit.type, limit.kind, limit.upstream)
        if key in limits:
            raise ValueError(f"{item!r} repeats a limit given before")
        limits[key] = limit
    return tuple(limits.values())


def _limit(item: str) -> Limit:
    scope, sep, count = (side.strip() for side in item.partition("="))
    # The key follows the last colon: a job type's name may hold colons itself.
    left, colon, right = (side.strip() for side in scope.rpartition(":"))
    n = int(count) if sep and count.isdigit() else 0
    if not (colon and n >= 1 and TYPE_NAME.fullmatch(left)):
        raise ValueError(
            "expected <type>:<entity|tenant|upstream>=<n> or upstream:<name>=<n> entries"
            f" separated by commas, n at least 1, got {item!r}"
        )
    if left == "upstream":
        from actors.registry import UPSTREAMS

        if right not in UPSTREAMS:
            known = ", ".join(UPSTREAMS)
            raise ValueError(f"{item!r}: no upstream {right!r} (upstreams: {known})")
        return Limit("upstream", n, upstream=right)
    if right not in KINDS:
        raise ValueError(f"{item!r}: the key must be one of {', '.join(KINDS)}, got {right!r}")
    return Limit(right, n, type=left)


def check_limits(limits: Collection[Limit], job_types: Collection[str]) -> None:
    """A SettingsError naming the first COURIER_LIMITS entry whose job type is unknown."""
    for limit in limits:
        if limit.type is not None and limit.type not in job_types:
            raise SettingsError(
                f"COURIER_LIMITS: {limit.type}:{limit.kind}={limit.n}: no job type"
                f" {limit.type!r} (known: {', '.join(sorted(job_types))})"
            )


def _host_names(raw: str) -> frozenset[str]:
    hosts = [host.strip().lower().rstrip(".") for host in raw.split(",") if host.strip()]
    for host in hosts:
        if not HOST_NAME.fullmatch(host):
            raise ValueError(f"expected host names separated by commas (no ports), got {host!r}")
    return frozenset(hosts)


def _log_format(raw: str) -> str:
    if raw not in ("json", "console"):
        raise ValueError(f"expected 'json' or 'console', got {raw!r}")
    return raw


_PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _database_url,
    "broker_url": _broker_urls,
    "rabbitmq_api_url": _optional_http_urls,
    "queue_type": _queue_type,
    "crm_url": _url("http", "https"),
    "billing_url": _url("http", "https"),
    "upstream_timeout_s": _positive_float,
    "max_attempts": _positive_int,
    "min_backoff_ms": _positive_int_up_to(SQL_INT_MAX),
    "max_backoff_ms": _positive_int_up_to(SQL_INT_MAX),
    "job_timeout_s": _positive_int_up_to(SQL_INT_MAX),
    "log_format": _log_format,
    "lease_s": _positive_int_up_to(SQL_INT_MAX),
    "reaper_interval_s": _positive_float,
    "relay_interval_s": _positive_float,
    "progress_interval_s": _positive_float,
    "drain_timeout_s": _positive_float,
    "stuck_grace_s": _positive_float,
    "stats_max_age_s": _positive_float,
    "reconcile_interval_s": _positive_float,
    "reconcile_settle_s": _positive_float,
    "job_modules": _module_names,
    "job_queues": _job_queues,
    "scheduler_interval_s": _positive_float,
    "callback_hosts": _host_names,
    # Sent to SQL in milliseconds.
    "webhook_retry_s": _positive_int_up_to(SQL_INT_MAX // 1000),
    "webhook_interval_s": _positive_float,
    "webhook_min_backoff_s": _positive_float,
    "webhook_max_backoff_s": _positive_float,
    "webhook_timeout_s": _positive_float,
    # One sender thread each.
    "webhook_concurrency": _positive_int_up_to(1000),
    "limits": _limits,
    "circuit_failures": _positive_int_up_to(SQL_INT_MAX),
    "circuit_cooldown_s": _positive_float,
    # circuits.probes_left is a smallint.
    "circuit_probes": _positive_int_up_to(32_767),
    "fair_share": _positive_int_up_to(SQL_INT_MAX),
    "tenant_max_active": _positive_int_up_to(SQL_INT_MAX),
}


def _validated(settings: Settings) -> Settings:
    if settings.min_backoff_ms > settings.max_backoff_ms:
        raise SettingsError(
            "COURIER_MIN_BACKOFF_MS: must not exceed COURIER_MAX_BACKOFF_MS "
            f"({settings.min_backoff_ms} > {settings.max_backoff_ms})"
        )
    if settings.webhook_min_backoff_s > settings.webhook_max_backoff_s:
        raise SettingsError(
            "COURIER_WEBHOOK_MIN_BACKOFF_S: must not exceed COURIER_WEBHOOK_MAX_BACKOFF_S "
            f"({settings.webhook_min_backoff_s} > {settings.webhook_max_backoff_s})"
        )
    if settings.max_attempts > 20:
        raise SettingsError(
            f"COURIER_MAX_ATTEMPTS: must be at most 20, got {settings.max_attempts}"
        )
    return settings
