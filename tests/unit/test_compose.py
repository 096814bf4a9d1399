"""docker-compose.yml exposes nothing but nginx and holds no secret: every password comes from
.env (documented in .env.example, never committed) and a missing one stops compose."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROXY = "nginx"

#: `${NAME:?message}`: compose refuses to run while NAME is unset or empty.
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*):\?[^}]+\}$")
SECRET_NAME = re.compile(r"PASSWORD|PASS$|SECRET|TOKEN|_KEY$|COOKIE")
# scheme://user:password@, where user and password may each be a ${...} reference.
PASSWORD_IN_URL = re.compile(r"://(?:\$\{[^}]*\}|[^/@\s:])*:(?P<password>(?:\$\{[^}]*\}|[^@\s])*)@")


def strings(node: Any) -> Iterator[str]:
    """Every string in a loaded YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each port the service publishes."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", "0.0.0.0"), str(port.get("published", ""))))
            continue
        parts = str(port).split(":")
        found.append((parts[0], parts[1]) if len(parts) == 3 else ("0.0.0.0", parts[0]))
    return found


def required_variables() -> set[str]:
    text = (ROOT / "docker-compose.yml").read_text()
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {PROXY}))
def test_only_the_proxy_publishes_a_port_beyond_loopback(name: str) -> None:
    for address, port in published(SERVICES[name]):
        assert address == "127.0.0.1", f"{name} publishes port {port} on {address}"


def test_the_api_is_reached_through_the_proxy_alone() -> None:
    assert published(SERVICES["api"]) == []
    assert published(SERVICES[PROXY]), "nginx publishes no port"
    assert (
        "./deploy/nginx/courier.conf:/etc/nginx/conf.d/default.conf:ro"
        in SERVICES[PROXY]["volumes"]
    )


def test_the_proxy_image_is_pinned() -> None:
    image, _, tag = SERVICES[PROXY]["image"].partition(":")
    assert image == "nginx"
    assert re.match(r"^\d+\.\d+\.\d+", tag), f"nginx's tag {tag!r} is not a pinned version"


def test_every_secret_in_the_environment_is_a_required_variable() -> None:
    checked = 0
    for name, service in SERVICES.items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert REQUIRED.match(value), f"{name}: {variable} is {value!r}"
                checked += 1
    assert checked >= 2  # PostgreSQL's and RabbitMQ's at least


def test_no_url_carries_a_literal_password() -> None:
    passwords = [m["password"] for s in strings(COMPOSE) for m in PASSWORD_IN_URL.finditer(s)]
    assert passwords, "no URL with credentials found: the check reads nothing"
    for password in passwords:
        assert REQUIRED.match(password), f"literal password in a URL: {password!r}"


def test_no_credential_falls_back_to_a_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-)[^}]*\}", text)
    assert defaults == [], f"variables with a default: {defaults}"


def test_every_required_variable_is_documented_in_the_example_env_file() -> None:
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert required_variables() >= {"POSTGRES_PASSWORD", "RABBITMQ_USER", "RABBITMQ_PASSWORD"}
    assert required_variables() <= documented
    for line in example.splitlines():
        name, _, value = line.partition("=")
        if SECRET_NAME.search(name) and not line.startswith("#"):
            assert value == "", f".env.example gives {name} a value: every copy would share it"


def test_the_env_file_is_kept_out_of_git_and_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_prometheus_scrapes_the_api_on_the_compose_network_with_the_rules_mounted() -> None:
    prometheus = SERVICES["prometheus"]
    image, _, tag = prometheus["image"].partition(":")
    assert image == "prom/prometheus"
    assert re.match(r"^v\d+\.\d+\.\d+$", tag), f"prometheus's tag {tag!r} is not a pinned version"
    mounts = {m.split(":")[0]: m.split(":")[1] for m in prometheus["volumes"]}
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # The config names its rule files relative to itself: each is mounted beside it.
    for rule_file in config["rule_files"]:
        assert mounts[f"./deploy/prometheus/{rule_file}"] == f"/etc/prometheus/{rule_file}"
        assert (ROOT / "deploy/prometheus" / rule_file).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (targets,) = (c["targets"] for c in job["static_configs"])
    assert targets == ["api:8000"]
    assert "8000" in [str(p) for p in SERVICES["api"]["expose"]]


def test_prometheus_runs_whether_or_not_the_api_is_up() -> None:
    # It must keep scraping a down API to raise the alert that says so.
    assert "depends_on" not in SERVICES["prometheus"]


def compose_command() -> list[str]:
    """The docker compose CLI (plugin or standalone), or a skip (a failure in CI) without one."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if os.environ.get("CI"):
        pytest.fail("no docker compose CLI: scripts/ensure-services installs docker-compose")
    pytest.skip("no docker compose CLI (apt-get install docker-compose); the YAML checks still run")


def compose_config(tmp_path: Path, *args: str) -> str:
    """`docker compose config` of the file with every .env variable set; fails on a refusal."""
    env = tmp_path / ".env"
    env.write_text(
        "POSTGRES_PASSWORD=x\nRABBITMQ_USER=courier\nRABBITMQ_PASSWORD=y\n"
        "RABBITMQ_ERLANG_COOKIE=z\nCOURIER_QUEUE_TYPE=quorum\n"
    )
    checked = subprocess.run(
        [
            *compose_command(),
            *("--env-file", str(env), "-f", str(ROOT / "docker-compose.yml")),
            *args,
            "config",
        ],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    return checked.stdout


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    assert "rabbitmq:" in compose_config(tmp_path)


def test_docker_compose_accepts_the_cluster_profile(tmp_path: Path) -> None:
    config = yaml.safe_load(compose_config(tmp_path, "--profile", "cluster"))
    assert {"rabbitmq", "rabbitmq-2", "rabbitmq-3"} <= set(config["services"])


def test_the_cluster_profile_adds_two_nodes_that_join_the_first() -> None:
    nodes = {name: s for name, s in SERVICES.items() if name.startswith("rabbitmq")}
    assert sorted(nodes) == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    assert "profiles" not in nodes["rabbitmq"]
    conf = (ROOT / "deploy/rabbitmq/cluster.conf").read_text()
    peers = re.findall(
        r"^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$", conf, re.M
    )
    assert peers == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    cookies = set()
    for name, node in nodes.items():
        assert node["hostname"] == name  # the node name rabbit@<hostname> names its data
        cookies.add(environment(node)["RABBITMQ_ERLANG_COOKIE"])
        if name != "rabbitmq":
            assert node["profiles"] == ["cluster"]
            assert (
                "./deploy/rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro"
                in (node["volumes"])
            )
    assert len(cookies) == 1 and REQUIRED.match(cookies.pop())


def test_courier_names_every_node_of_the_cluster_and_takes_its_queue_type_from_env() -> None:
    env = environment(SERVICES["worker"])
    urls = env["COURIER_BROKER_URL"].split(",")
    assert [u.split("@")[1].split(":")[0] for u in urls] == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    assert REQUIRED.match(env["COURIER_QUEUE_TYPE"])
    assert environment(SERVICES["api"])["COURIER_BROKER_URL"] == env["COURIER_BROKER_URL"]
