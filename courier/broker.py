"""Builds the broker (RabbitMQ with confirms, or in-process) and its middleware."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, TimeLimit
from sqlalchemy import Engine

from actors.registry import Upstreams, declare_all, queues_by_type, upstreams_by_type
from actors.upstream import UpstreamClient
from api import serialize
from courier.settings import Settings, check_limits
from delivery import bands, held_messages, publisher, quorum, reconcile
from delivery.outbox import Outbox
from delivery.quorum import QuorumBroker
from middleware.attempts import Attempts
from middleware.heartbeat import Heartbeat
from middleware.reaper import Reaper
from middleware.reconciler import Reconciler
from middleware.relay import Relay
from middleware.scheduler import Scheduler
from middleware.tracing import Tracing
from middleware.webhooks import Webhooks
from middleware.work_order import WorkOrder
from store import circuits
from store.admission import Rule
from store.limits import limits_rule

#: RabbitMQ priorities 0-9 (9 runs first); queues are declared with it from the start
#: because a queue's max priority cannot be changed after it exists.
MAX_PRIORITY = 9
#: With several nodes, how long to wait for one to accept a connection and to finish the
#: handshake before trying the next.
NODE_SOCKET_TIMEOUT_S = 2.0
NODE_STACK_TIMEOUT_S = 4.0


def publishing_broker(settings: Settings) -> dramatiq.Broker:
    """A broker for publishing only (the API): no worker middleware, confirms on."""
    if settings.uses_memory_broker:
        return StubBroker(middleware=[])
    urls = settings.broker_urls
    url = urls if len(urls) > 1 else urls[0]
    broker: RabbitmqBroker
    if settings.queue_type == bands.QUORUM:
        broker = QuorumBroker(url=url, confirm_delivery=True, middleware=[])
    else:
        broker = RabbitmqBroker(
            url=url, confirm_delivery=True, max_priority=MAX_PRIORITY, middleware=[]
        )
    publisher.bound_blocked_waits(broker)
    bound_connect_waits(broker)
    return broker


def bound_connect_waits(broker: RabbitmqBroker) -> None:
    """With several nodes, make a node that does not answer cost seconds, not pika's 10 s
    to connect and 15 s to handshake, before the next is tried (unless the URL sets them).

    A dead node's refused connection costs nothing; a node cut off by the network does.
    """
    nodes = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    if len(nodes) < 2:
        return
    defaults = pika.ConnectionParameters
    for node in nodes:
        if node.socket_timeout == defaults.DEFAULT_SOCKET_TIMEOUT:
            node.socket_timeout = NODE_SOCKET_TIMEOUT_S
        if node.stack_timeout == defaults.DEFAULT_STACK_TIMEOUT:
            node.stack_timeout = NODE_STACK_TIMEOUT_S


@dataclass
class WorkerStack:
    """A broker with Courier's middleware and every job type declared on it."""

    broker: dramatiq.Broker
    attempts: Attempts
    relay: Relay
    reaper: Reaper
    heartbeat: Heartbeat
    upstreams: Upstreams
    reconciler: Reconciler
    webhooks: Webhooks
    scheduler: Scheduler


def worker_stack(
    settings: Settings, engine: Engine, *, broker: dramatiq.Broker | None = None
) -> WorkerStack:
    """Add the middleware stack to `broker` (default: a new one) and declare the actors."""
    broker = broker or publishing_broker(settings)
    queues = queues_by_type(settings.job_modules, settings.job_queues)
    attempts = Attempts(
        engine=engine,
        min_backoff_ms=settings.min_backoff_ms,
        max_backoff_ms=settings.max_backoff_ms,
        lease_s=settings.lease_s,
        progress_interval_s=settings.progress_interval_s,
        rules=admission_rules(settings),
        upstreams_of=upstreams_by_type(settings.job_modules),
        circuit_policy=circuit_policy(settings),
    )
    relay = Relay(
        outbox=Outbox(broker, engine),
        engine=engine,
        interval_s=settings.relay_interval_s,
        share=settings.fair_share,
    )
    reaper = Reaper(
        engine=engine,
        interval_s=settings.reaper_interval_s,
        lease_s=settings.lease_s,
        stuck_grace_s=settings.stuck_grace_s,
    )
    heartbeat = Heartbeat(attempts=attempts)
    reconciler = Reconciler(
        broker=broker,
        engine=engine,
        held=_held_counts(settings, broker),
        interval_s=settings.reconcile_interval_s,
        settle_s=settings.reconcile_settle_s,
    )
    # The webhook body is the Job JSON exactly as the API serializes it.
    webhooks = Webhooks(
        engine=engine,
        body=serialize.job,
        interval_s=settings.webhook_interval_s,
        retry_window_s=settings.webhook_retry_s,
        min_backoff_s=settings.webhook_min_backoff_s,
        max_backoff_s=settings.webhook_max_backoff_s,
        timeout_s=settings.webhook_timeout_s,
        concurrency=settings.webhook_concurrency,
    )
    scheduler = Scheduler(
        engine=engine,
        queues=queues,
        timeout_s=settings.job_timeout_s,
        interval_s=settings.scheduler_interval_s,
        max_active=settings.tenant_max_active,
    )
    # Dramatiq's Retries is left out on purpose: Attempts owns the retry policy. Attempts
    # comes before TimeLimit, so an attempt's clock starts after the claim and stops before
    # the finish: a slow database must not interrupt the bookkeeping itself. Tracing comes
    # right after Attempts: its span holds the claimed attempt's work and nothing else.
    for middleware in (
        WorkOrder(),
        CurrentMessage(),
        attempts,
        Tracing(),
        TimeLimit(time_limit=settings.job_timeout_s * 1000),
        heartbeat,
        relay,
        reaper,
        reconciler,
        webhooks,
        scheduler,
    ):
        broker.add_middleware(middleware)
    upstreams = Upstreams(
        crm=_client(settings, settings.crm_url, "CRM"),
        billing=_client(settings, settings.billing_url, "Billing"),
    )
    declare_all(broker, upstreams, settings.job_modules, queues)
    return WorkerStack(
        broker, attempts, relay, reaper, heartbeat, upstreams, reconciler, webhooks, scheduler
    )


def admission_rules(settings: Settings) -> list[Rule]:
    """The rules every claim runs (`store.admission`): upstream circuits first, then the
    concurrency limits (a job parked on a circuit takes no slot).

    A limit on a job type no module registers is a SettingsError.
    """
    upstreams_of = upstreams_by_type(settings.job_modules)
    check_limits(settings.limits, upstreams_of)
    rules: list[Rule] = [circuits.circuit_rule(upstreams_of, circuit_policy(settings))]
    if settings.limits:
        rules.append(limits_rule(settings.limits, upstreams_of))
    return rules


def circuit_policy(settings: Settings) -> circuits.Policy:
    """The upstream circuits' thresholds, as configured."""
    return circuits.Policy(
        failures=settings.circuit_failures,
        cooldown_s=settings.circuit_cooldown_s,
        probes=settings.circuit_probes,
    )


def start_in_process_worker(
    stack: WorkerStack, *, threads: int, queues: set[str] | None = None
) -> dramatiq.Worker:
    """Run workers as threads of this process (embedded mode, tests), consuming `queues`
    (default: every declared queue).

    Announces the process boot first, as Dramatiq's command line does: the TimeLimit
    middleware starts its timer thread then.
    """
    stack.broker.emit_after("process_boot")
    worker = dramatiq.Worker(
        stack.broker,
        queues=consumed_queues(queues, quorum.queue_type(stack.broker)),
        worker_threads=threads,
        worker_timeout=100,
    )
    worker.start()
    return worker


def consumed_queues(queues: Iterable[str] | None, queue_type: str) -> set[str] | None:
    """What a worker consuming these Courier queues consumes: every band of each."""
    if queues is None:
        return None
    return {name for queue in queues for name in bands.names(queue, queue_type)}


def _held_counts(settings: Settings, broker: dramatiq.Broker) -> reconcile.HeldCounts:
    """How the reconciler counts what the broker holds; the in-process broker cannot lose
    messages but by a restart, which `courier dev` heals on start, so its counts are unknown."""
    if not isinstance(broker, RabbitmqBroker):
        return dict.fromkeys
    return partial(
        held_messages.held,
        parameters=broker.parameters,
        broker_url=settings.broker_url,
        api_url=settings.rabbitmq_api_urls,
        queue_type=settings.queue_type,
    )


def _client(settings: Settings, url: str, name: str) -> UpstreamClient:
    return UpstreamClient(
        url,
        name=name,
        timeout_s=settings.upstream_timeout_s,
        max_backoff_ms=settings.max_backoff_ms,
    )
