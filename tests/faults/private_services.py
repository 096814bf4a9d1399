"""A PostgreSQL server and a RabbitMQ node of a test's own, to stop and start at will.

Fault tests that take a service down must not disturb anything else on the machine, so
they run against these instead of the shared servers: each lives in a temporary directory,
listens on free ports of 127.0.0.1 (or of the address a test gives, such as a bridge that
network namespaces reach) and is a child of the test process, stopped and removed when the
session ends (even when it fails).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from tests.support.polling import wait_for
from tests.support.processes import Process, alive, children, free_port
from tests.support.services import RabbitTarget


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _wait_gone(pid: int, timeout: float, what: str) -> None:
    wait_for(lambda: not alive(pid), timeout=timeout, interval=0.1, what=what)


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, trusting local connections.

    PostgreSQL refuses to run as root, so when the tests run as root the server runs as
    the `postgres` system user.
    """

    def __init__(
        self,
        bindir: str | None = None,
        *,
        initdb: bool = True,
        name: str = "faults-private-postgres",
        host: str = "127.0.0.1",
    ) -> None:
        """A new cluster listening on `host`; with `initdb=False` its data directory is left
        for the caller to make (a standby's base backup, see `tests.faults.postgres_replicas`).
        `name` names its log in test-artifacts/."""
        self.bindir = Path(bindir or _postgres_bindir())
        self.name = name
        self.host = host
        self.root = Path(tempfile.mkdtemp(prefix="courier-fault-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.server: Process | None = None
        if initdb:
            self.run_tool(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                "-E", "UTF8",
            )  # fmt: skip
            if host != "127.0.0.1":
                # initdb trusts loopback only; clients on the address's own subnet come in too.
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write("host all all samenet trust\n")

    def run_tool(self, tool: str, *args: str) -> None:
        """Run one of PostgreSQL's programs (initdb, pg_basebackup, ...) as the server's user."""
        command = [str(self.bindir / tool), *args]
        done = subprocess.run(
            command, user=self.user, cwd=self.root, capture_output=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.decode(errors='replace')[-2000:]}")

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections."""
        assert not self.running, "already running"
        server = self.server = Process(
            self.name,
            [
                *(str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)),
                *("-k", str(self.root), "-c", f"listen_addresses={self.host}", "-c", "fsync=off"),
                *("-c", "max_connections=200"),
            ],
            {},
            cwd=str(self.root),
            user=self.user,
            append=True,
        )

        def accepting() -> bool:
            if not server.running:
                raise server.exited_early()
            try:
                with self.admin():
                    return True
            except psycopg.OperationalError:
                return False

        wait_for(accepting, timeout=timeout, interval=0.1, what="the private PostgreSQL")

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Shut the server down: `smart`, `fast` (disconnect clients) or `immediate` (crash)."""
        if not self.running:
            return
        assert self.server is not None
        signum = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        self.server.send(signum[mode])
        self.server.wait(timeout)

    def kill(self, timeout: float = 30) -> None:
        """kill -9 the postmaster, as a crash of its host would: it writes nothing more and
        its port closes at once (its backends notice the death and end by themselves)."""
        if not self.running:
            return
        assert self.server is not None
        self.server.send(signal.SIGKILL)
        self.server.wait(timeout)

    def promote(self, timeout: int = 30) -> None:
        """Promote this server, a standby, and wait until it takes writes."""
        with self.admin() as conn:
            promoted = conn.execute("SELECT pg_promote(true, %s)", (timeout,)).fetchone()
        assert promoted == (True,), f"{self.name} was not promoted within {timeout}s"

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for a database on this server."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection:
        """An autocommit connection to the `postgres` database."""
        return psycopg.connect(
            f"postgresql://postgres@{self.host}:{self.port}/postgres",
            autocommit=True,
            connect_timeout=3,
        )

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"courier_fault_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database if the server is up (best effort)."""
        if not self.running:
            return
        with contextlib.suppress(psycopg.Error), self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def close(self) -> None:
        """Stop the server at once and remove its files."""
        if self.server is not None:
            self.server.stop(timeout=15, signum=signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bindir() -> str:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parents[1].name) if Path(p).parents[1].name.isdigit() else 0,
    )
    if candidates:
        return str(Path(candidates[-1]).parent)
    found = shutil.which("postgres")
    if found:
        return str(Path(found).parent)
    raise FileNotFoundError("no PostgreSQL server binaries (postgres, initdb) found")


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (name, ports, data directory), with the management plugin.

    AMQP and the management API listen on `host`; the node's distribution port and epmd
    stay on 127.0.0.1, since only its own tools talk to them.
    """

    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        cookie: str | None = None,
        label: str = "faults-private-rabbitmq",
    ) -> None:
        """`cookie`: the Erlang cookie, shared by the nodes of one cluster (default: its own);
        `label`: the name of its log in test-artifacts/."""
        self.host = host
        self.label = label
        if not os.path.exists(self.SERVER):
            found = shutil.which("rabbitmq-server")
            if found is None:
                raise FileNotFoundError("rabbitmq-server is not installed")
            self.SERVER = found
        self.root = Path(tempfile.mkdtemp(prefix="courier-fault-rabbit-"))
        self.amqp_port = free_port()
        self.api_port = free_port()
        self.dist_port = free_port()
        self.node = f"courier-fault-{os.getpid()}-{uuid.uuid4().hex[:6]}@localhost"
        cookie_file = self.root / ".erlang.cookie"
        cookie_file.write_text(cookie or uuid.uuid4().hex)
        cookie_file.chmod(0o400)
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {host}:{self.amqp_port}\n"
            f"management.tcp.port = {self.api_port}\n"
            f"management.tcp.ip = {host}\n"
            # guest may log in from loopback only; elsewhere the node is the test's alone.
            + ("" if host == "127.0.0.1" else "loopback_users = none\n")
        )
        (self.root / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(self.root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": host,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.server: Process | None = None
        self.target = RabbitTarget(
            f"amqp://guest:guest@{host}:{self.amqp_port}",
            f"http://guest:guest@{host}:{self.api_port}",
        )

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def start(self, timeout: float = 120) -> float:
        """Start the node, wait until AMQP and the management API answer; returns when AMQP did."""
        assert not self.running, "already running"
        server = self.server = Process(
            self.label, [self.SERVER], self.env, cwd=str(self.root), append=True
        )
        amqp_up: list[float] = []

        def up() -> bool:
            if not server.running:
                raise server.exited_early()
            if not amqp_up and port_open(self.amqp_port, self.host):
                amqp_up.append(time.monotonic())
            if not amqp_up:
                return False
            try:
                with self.target.api() as api:
                    return api.get("/api/overview").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=timeout, interval=0.1, what=f"RabbitMQ node {self.node}")
        return amqp_up[0]

    def _beam(self) -> int | None:
        if self.server is None:
            return None
        for pid in children(self.server.pid):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                if f.read().strip().startswith("beam"):
                    return pid
        return None

    def stop(self, timeout: float = 60) -> None:
        """Stop the node the way an operator does (SIGTERM: connections closed, queues saved)."""
        self._signal_node(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 30) -> None:
        """Crash the node (SIGKILL): whatever it confirmed is on disk, the rest is lost."""
        self._signal_node(signal.SIGKILL, timeout)

    def _signal_node(self, signum: int, timeout: float) -> None:
        beam = self._beam()
        if beam is None:
            return
        os.kill(beam, signum)
        _wait_gone(beam, timeout, f"RabbitMQ node {self.node} to stop")
        assert self.server is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.wait(10)
        wait_for(
            lambda: not port_open(self.amqp_port, self.host),
            timeout=10,
            what="the AMQP port to close",
        )

    def close(self) -> None:
        """Kill the node and remove its files."""
        with contextlib.suppress(Exception):
            self.kill()
        if self.server is not None:
            self.server.kill_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)
