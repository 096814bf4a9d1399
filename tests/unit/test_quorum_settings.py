"""The broker settings: several nodes, the queue type, and what they make of the broker."""

from __future__ import annotations

import os
import subprocess
from queue import PriorityQueue

import pytest
from dramatiq import Message, MessageProxy
from dramatiq.worker import _WorkQueueItem

from courier.broker import consumed_queues, publishing_broker
from courier.settings import Settings, SettingsError
from delivery import bands
from delivery.quorum import QuorumBroker
from middleware.work_order import RankedWork, WorkOrder
from tests.support.processes import courier_command

NODES = "amqp://u:p@rabbit-1:5672/courier, amqp://u:p@rabbit-2:5672/courier"


def test_queues_are_classic_unless_told_otherwise():
    assert Settings.from_env({}).queue_type == "classic"
    assert Settings.from_env({"COURIER_QUEUE_TYPE": "quorum"}).queue_type == "quorum"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COURIER_QUEUE_TYPE", "mirrored", "COURIER_QUEUE_TYPE: expected 'classic' or 'quorum'"),
        ("COURIER_BROKER_URL", "amqp://a/x, http://b/x", "expected a URL starting with amqp:"),
        ("COURIER_BROKER_URL", "amqp://a/x,amqp://b/y", "every node must name the same vhost"),
        ("COURIER_BROKER_URL", " , ", "expected at least one URL"),
        ("COURIER_BROKER_URL", "memory://,amqp://a/x", "expected a URL starting with amqp:"),
        ("COURIER_RABBITMQ_API_URL", "http://a:15672,amqp://b", "COURIER_RABBITMQ_API_URL:"),
    ],
)
def test_a_bad_broker_setting_fails_in_one_line_naming_it(name, value, message):
    with pytest.raises(SettingsError, match=message) as failed:
        Settings.from_env({name: value})
    assert "\n" not in str(failed.value) and str(failed.value).startswith(name)


def test_several_nodes_are_tried_in_order_each_with_short_connect_timeouts():
    settings = Settings.from_env({"COURIER_BROKER_URL": NODES, "COURIER_QUEUE_TYPE": "quorum"})
    assert settings.broker_urls == [
        "amqp://u:p@rabbit-1:5672/courier",
        "amqp://u:p@rabbit-2:5672/courier",
    ]
    broker = publishing_broker(settings)
    assert isinstance(broker, QuorumBroker)  # built without connecting
    assert [(p.host, p.socket_timeout, p.stack_timeout) for p in broker.parameters] == [
        ("rabbit-1", 2.0, 4.0),
        ("rabbit-2", 2.0, 4.0),
    ]


def test_a_timeout_the_url_sets_is_kept_and_one_node_keeps_pikas_defaults():
    urls = "amqp://a/x?socket_timeout=7,amqp://b/x"
    broker = publishing_broker(Settings.from_env({"COURIER_BROKER_URL": urls}))
    assert [p.socket_timeout for p in broker.parameters] == [7.0, 2.0]
    single = publishing_broker(Settings.from_env({"COURIER_BROKER_URL": "amqp://a/x"}))
    assert (single.parameters.socket_timeout, single.max_priority) == (10.0, 9)


def test_one_management_api_for_nodes_on_other_hosts_means_the_same_port_on_each():
    env = {"COURIER_BROKER_URL": NODES, "COURIER_RABBITMQ_API_URL": "http://u:p@rabbit-1:15672"}
    assert Settings.from_env(env).rabbitmq_api_urls == [
        "http://u:p@rabbit-1:15672",
        "http://u:p@rabbit-2:15672",
    ]
    listed = {**env, "COURIER_RABBITMQ_API_URL": "http://a:1,http://b:2"}
    assert Settings.from_env(listed).rabbitmq_api_urls == ["http://a:1", "http://b:2"]


def test_a_priority_goes_to_its_band_on_quorum_queues_only():
    routed = [bands.band_for("sync", p, bands.QUORUM) for p in range(10)]
    assert routed == ["sync"] * 4 + ["sync.mid"] * 3 + ["sync.high"] * 3
    assert {bands.band_for("sync", p, bands.CLASSIC) for p in range(10)} == {"sync"}
    assert consumed_queues({"sync"}, bands.QUORUM) == {"sync", "sync.mid", "sync.high"}
    assert consumed_queues({"sync"}, bands.CLASSIC) == {"sync"}
    assert consumed_queues(None, bands.QUORUM) is None


def test_a_worker_runs_what_it_holds_by_actor_priority_then_broker_priority_then_arrival():
    def item(actor_priority: int, broker_priority: int | None, name: str) -> _WorkQueueItem:
        options = {} if broker_priority is None else {"broker_priority": broker_priority}
        message = Message("sync", "a", (name,), {}, options)
        return _WorkQueueItem(actor_priority, MessageProxy(message))

    class FakeWorker:
        work_queue: PriorityQueue = PriorityQueue()

    worker = FakeWorker()
    WorkOrder().before_worker_boot(None, worker)  # type: ignore[arg-type]
    queue = worker.work_queue
    assert isinstance(queue, RankedWork)
    for each in [
        item(0, None, "low"),
        item(0, 9, "high"),
        item(0, 4, "mid-1"),
        item(0, 4, "mid-2"),
        item(-1, 0, "urgent actor"),
    ]:
        queue.put(each)
    order = [queue.get().message.args[0] for _ in range(5)]
    assert order == ["urgent actor", "high", "mid-1", "mid-2", "low"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("COURIER_QUEUE_TYPE", "mirrored"), ("COURIER_BROKER_URL", "amqp://a/x,amqp://b/y")],
)
def test_a_bad_broker_setting_stops_the_worker_at_start_with_one_line(name, value):
    done = subprocess.run(
        courier_command("worker", "--no-restart"),
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and name in done.stderr, done.stderr


def test_a_worker_for_one_quorum_queue_consumes_its_three_bands():
    from courier.cli import _consumed_queues

    quorum = Settings(queue_type="quorum")
    assert _consumed_queues(quorum, "sync") == ["sync", "sync.mid", "sync.high"]
    assert _consumed_queues(Settings(), "sync") == ["sync"]
