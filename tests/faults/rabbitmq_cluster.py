"""A RabbitMQ cluster of a test's own: three private nodes (PrivateRabbitMQ) that share an
Erlang cookie, the second and third joined to the first.

Each node keeps its own name, ports and data directory; the cluster is torn down with
`close`, even when the test failed.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.faults.private_services import PrivateRabbitMQ
from tests.support.polling import wait_for


class RabbitCluster:
    """Three private RabbitMQ nodes clustered together."""

    def __init__(self, size: int = 3) -> None:
        cookie = uuid.uuid4().hex
        self.nodes = [
            PrivateRabbitMQ(cookie=cookie, label=f"cluster-rabbitmq-{i + 1}") for i in range(size)
        ]

    def start(self, timeout: float = 180) -> None:
        """Start every node (at once), join the others to the first, wait for all to run."""
        failures: list[BaseException] = []

        def start(node: PrivateRabbitMQ) -> None:
            try:
                node.start(timeout=timeout)
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for command in (["stop_app"], ["join_cluster", first.node], ["start_app"]):
                self._ctl(node, *command)
        wait_for(
            lambda: len(self.running_nodes()) == len(self.nodes),
            timeout=timeout,
            interval=0.5,
            what=f"a cluster of {len(self.nodes)} running RabbitMQ nodes",
        )

    def _ctl(self, node: PrivateRabbitMQ, *args: str) -> None:
        # The one beside the server: Debian's /usr/sbin wrapper would run it as the rabbitmq
        # user, with that user's cookie.
        ctl = str(Path(node.SERVER).with_name("rabbitmqctl"))
        command = [ctl, "-n", node.node, *args]
        done = subprocess.run(command, env=node.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")

    def running_nodes(self) -> list[str]:
        """The cluster's running nodes, as any live node's management API sees them."""
        for node in self.live():
            try:
                with node.target.api() as api:
                    listed = api.get("/api/nodes").raise_for_status().json()
            except httpx.HTTPError:
                continue
            return [n["name"] for n in listed if n.get("running")]
        return []

    def live(self) -> list[PrivateRabbitMQ]:
        return [node for node in self.nodes if node.running]

    def amqp_urls(self, vhost: str) -> str:
        """COURIER_BROKER_URL for every node, in order."""
        return ",".join(node.target.amqp_url(vhost) for node in self.nodes)

    def api_urls(self) -> str:
        """COURIER_RABBITMQ_API_URL for every node, in order."""
        return ",".join(node.target.api_url for node in self.nodes)

    def leader(self, vhost: str, queue: str) -> PrivateRabbitMQ:
        """The node that leads a quorum queue now."""
        [node] = self.live()[:1]
        with node.target.api() as api:
            path = f"/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
            name = api.get(path).raise_for_status().json()["leader"]
        return next(n for n in self.nodes if n.node == name)

    def close(self) -> None:
        """Kill every node and remove its files."""
        for node in self.nodes:
            node.close()
