"""What the unauthenticated endpoints cost: scrapes by table size, status reads under scrapes,
/readyz with the broker unreachable, and the plans of the always-running queries.

`python -m bench.scrapes [--rows 10000,1000000]` starts `courier api` (no workers) on its
own database and vhost, fills the jobs table in steps (finished jobs with one attempt each,
plus 1,000 dead ones) and, at each size, times sequential `GET /metrics` and `GET /v1/stats`;
at the largest size also `GET /v1/jobs/{id}` alone and while `--scrapers` threads scrape
(each once per `--scrape-every` seconds); then `/readyz` of an API whose broker is a
black-holed address or a port that never accepts. Prints JSON (also written to
bench/results/scrapes-<timestamp>.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench import load, plans, processes, seed
from bench.processes import Process
from bench.stack import Shape, Stack
from store import stats

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scrapes", description=__doc__)
    p.add_argument("--rows", default="10000,1000000", help="table sizes (10000,1000000)")
    p.add_argument("--scrapes", type=int, default=40, help="timed scrapes per endpoint (40)")
    p.add_argument("--gets", type=int, default=2000, help="timed status GETs (2000)")
    p.add_argument("--scrapers", type=int, default=8, help="concurrent scrapers (8)")
    p.add_argument(
        "--scrape-every", type=float, default=1.0, help="seconds between one scraper's scrapes (1)"
    )
    p.add_argument("--readyz", type=int, default=20, help="timed /readyz calls (20)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = RESULTS / f"scrapes-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        database="courier_bench_scrapes", vhost="courier-bench-scrapes", shape=Shape(), logs=logs
    )
    try:
        stack.start()
        result = {"sizes": _by_size(stack, args), "readyz": _readyz(stack, args.readyz)}
    finally:
        stack.close()
    text = json.dumps(result, indent=2)
    (RESULTS / f"scrapes-{stamp}.json").write_text(text)
    print(text)
    return 0


def _by_size(stack: Stack, args: argparse.Namespace) -> list[dict[str, Any]]:
    operator, client = stack.token("bench-ops", "operator"), stack.token("bench-read-0")
    sizes = sorted(int(n) for n in args.rows.split(","))
    results, loaded = [], 0
    with stack.connect() as conn:
        seed.dead_jobs(conn, count=1000, tenant="bench-dead")
        for size in sizes:
            began = time.perf_counter()
            seed.finished_jobs(conn, first=loaded + 1, count=size - loaded, tenants=1)
            seed.one_attempt_each(conn)
            loaded = size
            row = {"rows": size, "load_s": round(time.perf_counter() - began, 1)}
            row["summary_in_sql_ms"] = _summary_ms(stack)
            row["metrics"] = _timed(stack.api_port, None, "/metrics", args.scrapes)
            row["stats"] = _timed(stack.api_port, operator, "/v1/stats", args.scrapes)
            if size == sizes[-1]:
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM jobs WHERE status = 'succeeded' ORDER BY random() LIMIT %s",
                        (args.gets,),
                    )
                ]
                paths = [f"/v1/jobs/{i}" for i in ids]
                row["status_get_alone"] = _gets(stack.api_port, client, paths)
                row["status_get_with_scrapers"] = _under_scrapes(
                    stack, operator, client, paths, args.scrapers, args.scrape_every
                )
                row["plans"] = _plans(stack)
            results.append(row)
            print(json.dumps(row, indent=2)[:2000], file=sys.stderr)
    return results


def _get(connection: http.client.HTTPConnection, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def _timed(port: int, token: str | None, path: str, count: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        status = _get(connection, path, token)
        latencies.append(time.perf_counter() - began)
        assert status == 200, f"{path}: {status}"
    connection.close()
    return _summary(latencies)


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "count": len(latencies),
        "p50_ms": round(load.percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(load.percentile(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def _gets(port: int, token: str, paths: list[str]) -> dict[str, float]:
    def send(connection: load.Client, path: str) -> str | None:
        status, answer = connection.call("GET", path)
        return load.expect(status, 200, answer)

    load.run(port, token, paths[:100], send, clients=1)  # warm the connection and the cache
    run = load.run(port, token, paths, send, clients=1)
    assert not run.errors, run.errors[:3]
    return _summary(run.latencies)


def _under_scrapes(
    stack: Stack, operator: str, client: str, paths: list[str], scrapers: int, every_s: float
) -> dict[str, Any]:
    stop = threading.Event()
    counts = [0] * scrapers

    def scrape(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", stack.api_port, timeout=300)
        while not stop.is_set():
            path, token = ("/metrics", None) if counts[n] % 2 == 0 else ("/v1/stats", operator)
            began = time.perf_counter()
            _get(connection, path, token)
            counts[n] += 1
            stop.wait(max(0.0, every_s - (time.perf_counter() - began)))
        connection.close()

    threads = [threading.Thread(target=scrape, args=(n,), daemon=True) for n in range(scrapers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    try:
        gets = _gets(stack.api_port, client, paths)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - began
    rate = round(sum(counts) / seconds, 1)
    return gets | {"scrapers": scrapers, "scrape_every_s": every_s, "scrapes_per_s": rate}


def _summary_ms(stack: Stack) -> float:
    """What one computation of the figures costs: `stats.summary`, median of three."""
    engine = create_engine(stack.env["COURIER_DATABASE_URL"])
    timings = []
    try:
        for _ in range(3):
            with Session(engine) as session:
                began = time.perf_counter()
                stats.summary(session)
                timings.append(time.perf_counter() - began)
    finally:
        engine.dispose()
    return round(sorted(timings)[1] * 1000, 1)


def _plans(stack: Stack) -> dict[str, list[str]]:
    engine = create_engine(stack.env["COURIER_DATABASE_URL"])
    try:
        return plans.plans(engine)
    finally:
        engine.dispose()


def _readyz(stack: Stack, calls: int) -> dict[str, Any]:
    never_accepts = socket.create_server(("127.0.0.1", 0), backlog=0)
    brokers = {
        "black-holed 10.255.255.1:5672": "amqp://guest:guest@10.255.255.1:5672/%2F",
        "listening, never accepting": (
            f"amqp://guest:guest@127.0.0.1:{never_accepts.getsockname()[1]}/%2F"
        ),
    }
    results = {}
    try:
        for name, url in brokers.items():
            port = processes.free_port()
            api = Process(
                "api-unreachable",
                [str(processes.BIN / "courier"), "api", "--bind", f"127.0.0.1:{port}"],
                env={**stack.env, "COURIER_BROKER_URL": url},
                logs=stack.logs,
            )
            try:
                processes.wait_http(f"http://127.0.0.1:{port}/healthz", api)
                latencies = []
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                for _ in range(calls):
                    began = time.perf_counter()
                    status = _get(connection, "/readyz", None)
                    latencies.append(time.perf_counter() - began)
                    assert status == 503, f"/readyz answered {status}"
                    time.sleep(0.25)  # polled four times a second, as a load balancer might
                connection.close()
                results[name] = _summary(latencies)
            finally:
                api.stop()
    finally:
        never_accepts.close()
    return results


if __name__ == "__main__":
    sys.exit(main())
