"""`python -m bench`: run the benchmark sections against the real stack, print and save results."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cpu, drain, history, memory, noop_job, reads, replay, report, throughput, ticks
from bench.peers import section as peers
from bench.stack import Shape, Stack

SECTIONS = {1: "single", 2: "batch", 3: "drain", 4: "reads", 5: "replay", 6: "memory", 7: "peers"}
HISTORY_SECTIONS = (1, 2, 3)  # run again with --history
PEERS = 7  # installs Celery and Procrastinate on first use: left out of --quick unless asked
FULL = {"jobs": 5000, "batch_size": 500, "drain_jobs": 10_000, "rows": "10000,1000000"}
FULL |= {"gets": 2000, "dead": 10_000, "replay_limit": 1000}
QUICK = {"jobs": 100, "batch_size": 50, "drain_jobs": 200, "rows": "1000,3000"}
QUICK |= {"gets": 50, "dead": 100, "replay_limit": 50}
RESULTS = Path(__file__).resolve().parent / "results"
PRODUCT = ("actors", "api", "courier", "middleware", "store")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--only", help="sections to run, e.g. 1,3 (default: all)")
    p.add_argument("--jobs", type=int, help="jobs for sections 1 and 2 (5000)")
    p.add_argument("--batch-size", type=int, help="jobs per batch request (500)")
    p.add_argument("--drain-jobs", type=int, help="jobs for section 3 (10000)")
    p.add_argument("--rows", help="table sizes for section 4 (10000,1000000)")
    p.add_argument("--gets", type=int, help="timed GETs per table size (2000)")
    p.add_argument("--get-clients", type=int, default=1, help="concurrent GET clients (1)")
    p.add_argument("--dead", type=int, help="dead jobs replayed in section 5 (10000)")
    p.add_argument("--replay-limit", type=int, help="jobs per replay request (1000)")
    p.add_argument(
        "--job-type",
        default=noop_job.NAME,
        help=f"what sections 1-3 submit: {noop_job.NAME} (default) or e.g. customer_sync",
    )
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument("--api-threads", type=int, default=4)
    p.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker process (8)")
    p.add_argument("--database", default="courier_bench", help="dropped and recreated")
    p.add_argument("--vhost", default="courier-bench", help="deleted and recreated")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument(
        "--profile",
        nargs="?",
        const="gil",
        choices=("gil", "cpu", "wall"),
        help="py-spy the API in 1, 4, 5 and the worker in 3: GIL holders (default), on-CPU or wall",
    )
    p.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="after sections 1-3, load N finished jobs (a month) and run 1-3 again (off)",
    )
    p.add_argument("--tick-calls", type=int, default=200, help="timed calls per tick query")
    p.add_argument("--keep", action="store_true", help="keep the database and vhost")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        chosen = {int(s) for s in args.only.split(",")} if args.only else None
    except ValueError:
        p.error(f"--only takes section numbers from {min(SECTIONS)} to {max(SECTIONS)}, e.g. 1,3")
    if chosen is None:
        chosen = {s for s in SECTIONS if not (args.quick and s == PEERS)}
    args.sections = sorted(chosen)
    if not chosen <= set(SECTIONS):
        p.error(f"--only takes section numbers from {min(SECTIONS)} to {max(SECTIONS)}")
    if PEERS in chosen and 3 not in chosen:
        p.error("section 7 compares the peers with section 3's Courier drain: add 3 (--only 3,7)")
    args.sizes = [int(r) for r in args.rows.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM (and SIGINT, even where a shell ignores it) unwind through the clean-up below.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shape = Shape(args.api_workers, args.api_threads, args.processes, args.threads)
    logs = args.results_dir / f"{stamp}-logs"
    stack = Stack(args.database, args.vhost, shape, logs=logs, job_type=args.job_type)
    run: dict[str, Any] = {
        "started_at": stamp,
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])]),
        "revision": revision(),
        "machine": report.machine(),
        "shape": vars(shape) | {"clients": args.clients},
        "job_type": args.job_type,
        "load_average_start": os.getloadavg(),
        "sections": {},
    }
    say(report.describe(run["machine"]))
    # Installing the peers (a minute, once) comes before anything is measured.
    try:
        peer_bins = peers.prepare() if PEERS in args.sections else {}
    except peers.venvs.InstallFailed as e:
        raise SystemExit(f"bench: {e}") from None
    profiler = None
    twice = [n for n in args.sections if n in HISTORY_SECTIONS] if args.history else []
    try:
        stack.start()
        if twice:
            run["history"] = {"rows": args.history, "tenants": history.SECTION_TENANTS}
            say(f"[ticks] on empty tables, {args.tick_calls} calls each ...")
            run["history"]["ticks_empty"] = _ticks(stack, args, plans=False)[0]
        for number in twice + [n for n in args.sections if n not in twice]:
            if number not in twice and twice and "sections" not in run["history"]:
                _history_round(stack, args, twice, run["history"])
            name = SECTIONS[number]
            say(f"[{number}] {name} ...")
            began = time.perf_counter()
            if args.profile and number in (1, 3, 4, 5):
                from bench import profiling

                target = "worker" if number == 3 else "api"
                profiler = profiling.Profiler(
                    stack, target=target, mode=args.profile, section=number
                )
            if number == PEERS:
                run["sections"][name] = _peers(stack, args, peer_bins, run["sections"]["drain"])
            else:
                run["sections"][name] = _section(number, stack, args, profiler)
            if profiler is not None:
                run["sections"][name]["profile"] = profiler.stop()
                profiler = None
            say(f"[{number}] {name} done in {time.perf_counter() - began:.1f}s")
        if twice and "sections" not in run["history"]:
            _history_round(stack, args, twice, run["history"])
    finally:
        if profiler is not None:
            profiler.stop()
        stack.close(keep=args.keep)
    run["load_average_end"] = os.getloadavg()
    run["figures"] = report.figures(run["sections"])
    if twice:
        h = run["history"]
        h["figures"] = report.figures(h["sections"])
        h["comparison"] = report.history_comparison(run["figures"], h["figures"])
        h["verdict"] = "met" if all(c["within"] for c in h["comparison"].values()) else "missed"
    path = args.results_dir / f"{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2, default=str) + "\n")
    print()
    print(f"Courier benchmark {stamp}, revision {run['revision']}")
    print(report.describe(run["machine"]))
    print(
        f"shape: API {shape.api_workers} workers x {shape.api_threads} threads, worker "
        f"{shape.processes} processes x {shape.threads} threads, {args.clients} clients, "
        f"job type {args.job_type}; "
        f"load average {run['load_average_start'][0]:.2f} at start, "
        f"{run['load_average_end'][0]:.2f} at end"
    )
    print()
    print(report.table(run["figures"], report.labels(run["sections"])))
    if twice:
        h = run["history"]
        print(
            f"\nsections {','.join(map(str, twice))} on empty tables and with "
            f"{args.history:,} finished jobs (and attempts) of history, loaded in "
            f"{h['seed_s']:.0f}s (tenants {', '.join(h['tenants'].values())} hold part of it):"
        )
        print(report.history_table(h["comparison"], report.labels(h["sections"]), args.history))
        print(f"verdict (every figure within 20 % of its empty-table value): {h['verdict']}")
        print(f"\nworker ticks, {args.tick_calls} calls each, empty and {args.history:,} history:")
        print(ticks.table(h["ticks"], args.history))
    print()
    for name, usage in _cpu_usage(run["sections"]):
        print(f"{name}: {cpu.summary(usage)}")
    print(f"\nresults: {path}")
    return 0


def _section(
    number: int, stack: Stack, args: argparse.Namespace, profiler: Any, tenants: dict | None = None
) -> dict:
    # With history loaded, sections 1-3 submit as tenants that hold part of it.
    tenant = {"tenant": tenants[SECTIONS[number]]} if tenants else {}
    if number == 1:
        return throughput.single(stack, jobs=args.jobs, clients=args.clients, **tenant)
    if number == 2:
        return throughput.batch(
            stack, jobs=args.jobs, clients=args.clients, size=args.batch_size, **tenant
        )
    if number == 3:
        return drain.drain(
            stack,
            jobs=args.drain_jobs,
            clients=args.clients,
            batch_size=args.batch_size,
            on_worker_start=profiler.attach if profiler else None,
            **tenant,
        )
    if number == 4:
        return reads.reads(stack, sizes=args.sizes, gets=args.gets, clients=args.get_clients)
    if number == 5:
        return replay.replay(stack, dead=args.dead, limit=args.replay_limit)
    return memory.memory(stack)


def _ticks(stack: Stack, args: argparse.Namespace, *, plans: bool) -> tuple[dict, dict]:
    """The worker ticks' statements timed on the stack's database (no worker running), and
    their plans if `plans`."""
    from store.db import make_engine

    stack.stop_worker()
    engine = make_engine(stack.env["COURIER_DATABASE_URL"])
    try:
        timed = ticks.timed(engine, calls=args.tick_calls)
        return timed, ticks.tick_plans(engine) if plans else {}
    finally:
        engine.dispose()


def _history_round(stack: Stack, args: argparse.Namespace, numbers: list[int], into: dict) -> None:
    """Load the history, time the ticks again, and run `numbers` (sections) again."""
    stack.stop_worker()
    say(f"[history] loading {args.history:,} finished jobs and their attempts ...")
    with stack.connect() as conn:
        into["seed_s"] = history.load(conn, args.history)
    say(f"[history] loaded in {into['seed_s']:.1f}s")
    say(f"[ticks] with {args.history:,} history ...")
    timed, explained = _ticks(stack, args, plans=True)
    into["ticks_history"], into["plans"] = timed, explained
    into["ticks"] = ticks.compare(into["ticks_empty"], timed, ticks.seq_scans(explained))
    into["sections"] = {}
    for number in numbers:
        name = SECTIONS[number]
        say(f"[{number}] {name}, {args.history:,} history ...")
        began = time.perf_counter()
        into["sections"][name] = _section(number, stack, args, None, history.SECTION_TENANTS)
        say(f"[{number}] {name}, history, done in {time.perf_counter() - began:.1f}s")


def _peers(stack: Stack, args: argparse.Namespace, bins: dict, drain_: dict) -> dict:
    return peers.peers(
        bins,
        database=args.database,
        vhost=args.vhost,
        processes=args.processes,
        threads=args.threads,
        jobs=args.drain_jobs,
        courier_per_s=drain_["courier"]["per_s"],
        logs=stack.logs,
        keep=args.keep,
    )


def _cpu_usage(sections: dict[str, Any]) -> list[tuple[str, dict]]:
    found = [(n, sections[n]["cpu"]) for n in ("single", "batch") if "cpu" in sections.get(n, {})]
    if "drain" in sections:
        found.append(("drain", sections["drain"]["courier"]["cpu"]))
    for name in peers.NAMES if "peers" in sections else ():
        found.append((f"peers {name}", sections["peers"][name]["cpu"]))
    return found


def revision() -> str:
    """The code measured: $BENCH_REVISION, else the git commit (+ "-dirty" if product code
    differs from it)."""
    if os.environ.get("BENCH_REVISION"):
        return os.environ["BENCH_REVISION"]
    root = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", *PRODUCT], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
