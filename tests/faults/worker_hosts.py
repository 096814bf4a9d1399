"""Worker hosts as network namespaces on a bridge of the test's own, with links to cut.

`Network` makes a Linux bridge whose /24 lies in 198.18.0.0/15 (set aside for network
tests, RFC 2544) and is used by nothing else on the machine; each `Host` is a network
namespace joined to the bridge by a veth pair. A namespace cannot reach the root
namespace's 127.0.0.1, so the servers its processes use listen on the bridge's address.
`Host.cut()` takes the host's end of its veth down: nothing passes either way and no
connection is reset, as when a host's cable is pulled; `restore()` brings it back.

Needs root and iproute2 (`scripts/ensure-services` installs it). Names carry the test
process's pid, so whatever a killed run left behind is removed by the next one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.processes import alive

#: 198.18.0.0/15 as /24s: the bridge takes .1 of one, hosts .2 and up.
_SUBNETS = list(ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24))
_NETNS = re.compile(r"^courier-(\d+)-")
_BRIDGE = re.compile(r"^cr(\d+)br$")


def require() -> None:
    """Skip (fail in CI) unless this process may make namespaces and links."""
    if os.geteuid() != 0:
        reason = "worker hosts are network namespaces, which need root (ip netns add)"
    elif shutil.which("ip") is None:
        reason = "iproute2 (ip) is not installed; make services installs it"
    else:
        return
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def ip(*args: str) -> str:
    """Run `ip ARGS`; fail with its error output."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """A network namespace with one link to the bridge."""

    name: str
    netns: str
    link: str  # the veth's end on the bridge, in the root namespace
    address: str

    @property
    def wrapper(self) -> list[str]:
        """The command prefix that runs a command on this host."""
        return ["ip", "netns", "exec", self.netns]

    def cut(self) -> None:
        """Pull the host's cable: its link goes down, both directions at once."""
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        """Plug it back in."""
        ip("link", "set", self.link, "up")

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        """The host is cut off for the block, and back after it, even if the block fails."""
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def pids(self) -> list[int]:
        """The processes running in the namespace."""
        return [int(p) for p in ip("netns", "pids", self.netns).split()]


class Network:
    """A bridge in the root namespace and the hosts on it; `close()` removes everything."""

    def __init__(self) -> None:
        _sweep()
        self.bridge = f"cr{os.getpid()}br"
        subnet = _free_subnet()
        self._addresses = subnet.hosts()
        self.address = str(next(self._addresses))
        self.hosts: list[Host] = []
        ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        try:
            ip("addr", "add", f"{self.address}/{subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except Exception:
            self.close()
            raise
        self._prefix = subnet.prefixlen

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge, with loopback and its address up."""
        host = Host(
            name,
            f"courier-{os.getpid()}-{name}",
            f"cr{os.getpid()}{name}",
            str(next(self._addresses)),
        )
        ip("netns", "add", host.netns)
        self.hosts.append(host)
        inside = f"{host.link}n"
        ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.netns)
        ip("link", "set", host.link, "master", self.bridge, "up")
        ns = ("-n", host.netns)
        ip(*ns, "link", "set", "lo", "up")
        ip(*ns, "link", "set", inside, "name", "eth0")
        ip(*ns, "addr", "add", f"{host.address}/{self._prefix}", "dev", "eth0")
        ip(*ns, "link", "set", "eth0", "up")
        return host

    def close(self) -> None:
        """Kill what still runs on the hosts, remove them (their veths go too), then the
        bridge."""
        for host in self.hosts:
            _remove_netns(host.netns)
            with contextlib.suppress(RuntimeError):  # a veth left behind by a failed add_host
                ip("link", "del", host.link)
        self.hosts.clear()
        with contextlib.suppress(RuntimeError):
            ip("link", "del", self.bridge)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove_netns(netns: str) -> None:
    with contextlib.suppress(RuntimeError):
        for pid in ip("netns", "pids", netns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        ip("netns", "del", netns)


def _sweep() -> None:
    """Remove the namespaces and bridges of test processes that are gone."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        found = _NETNS.match(name)
        if found and not alive(int(found.group(1))):
            _remove_netns(name)
    for link in json.loads(ip("-j", "link", "show", "type", "bridge") or "[]"):
        found = _BRIDGE.match(link["ifname"])
        if found and not alive(int(found.group(1))):
            with contextlib.suppress(RuntimeError):
                ip("link", "del", link["ifname"])


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 198.18.0.0/15 that no address or route on the machine overlaps."""
    taken = [
        ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
        for link in json.loads(ip("-j", "-4", "addr", "show"))
        for a in link.get("addr_info", [])
    ]
    taken += [
        ipaddress.ip_network(r["dst"])
        for r in json.loads(ip("-j", "-4", "route", "show"))
        if r.get("dst", "default") != "default"
    ]
    start = os.getpid() % len(_SUBNETS)  # runs side by side start apart
    for subnet in _SUBNETS[start:] + _SUBNETS[:start]:
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise RuntimeError("no free /24 in 198.18.0.0/15")
