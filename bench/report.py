"""The machine description, the headline figures with their targets, and the printed table."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from bench.stack import PG_ADMIN, rabbitmq_overview

# (key, section, measurement, format); keys are "<section name>.<figure>".
FIGURES: list[tuple[str, str, str, str]] = [
    ("single.accepted_per_s", "1", "POST /v1/jobs: accepted/s", "{:,.0f}"),
    ("single.completed_per_s", "1", "POST /v1/jobs: completed/s", "{:,.0f}"),
    ("single.accept_p50_ms", "1", "POST /v1/jobs: accept p50 (ms)", "{:.1f}"),
    ("single.accept_p99_ms", "1", "POST /v1/jobs: accept p99 (ms)", "{:.1f}"),
    ("single.done_p50_ms", "1", "POST /v1/jobs: to succeeded p50 (ms)", "{:,.0f}"),
    ("single.done_p99_ms", "1", "POST /v1/jobs: to succeeded p99 (ms)", "{:,.0f}"),
    ("batch.accepted_per_s", "2", "batch of {batch_size}: accepted/s", "{:,.0f}"),
    ("batch.completed_per_s", "2", "batch of {batch_size}: completed/s", "{:,.0f}"),
    ("batch.accept_p50_ms", "2", "batch: request p50 (ms)", "{:,.0f}"),
    ("batch.accept_p99_ms", "2", "batch: request p99 (ms)", "{:,.0f}"),
    ("batch.done_p50_ms", "2", "batch: to succeeded p50 (ms)", "{:,.0f}"),
    ("batch.done_p99_ms", "2", "batch: to succeeded p99 (ms)", "{:,.0f}"),
    ("drain.courier_per_s", "3", "drain: Courier jobs/s", "{:,.0f}"),
    ("drain.bare_per_s", "3", "drain: bare Dramatiq no-op msg/s", "{:,.0f}"),
    ("drain.bare_upstream_per_s", "3", "drain: bare + 2 upstream calls msg/s", "{:,.0f}"),
    ("drain.ratio", "3", "drain: ratio Courier / bare", "{:.2f}"),
    ("drain.ratio_vs_bare_upstream", "3", "drain: ratio Courier / bare + upstream", "{:.2f}"),
    ("reads.small_p50_ms", "4", "GET job, {small_rows:,} rows: p50 (ms)", "{:.2f}"),
    ("reads.small_p99_ms", "4", "GET job, {small_rows:,} rows: p99 (ms)", "{:.2f}"),
    ("reads.large_p50_ms", "4", "GET job, {large_rows:,} rows: p50 (ms)", "{:.2f}"),
    ("reads.large_p99_ms", "4", "GET job, {large_rows:,} rows: p99 (ms)", "{:.2f}"),
    ("reads.small_sql_p99_ms", "4", "same lookup in SQL, {small_rows:,} rows: p99 (ms)", "{:.2f}"),
    ("reads.large_sql_p99_ms", "4", "same lookup in SQL, {large_rows:,} rows: p99 (ms)", "{:.2f}"),
    ("reads.p99_growth_pct", "4", "GET job: p99 growth small→large (%)", "{:+.0f}"),
    ("replay.seconds", "5", "replay {dead:,} dead jobs (s)", "{:.1f}"),
    ("replay.per_s", "5", "replay: jobs/s", "{:,.0f}"),
    ("memory.api_worker_rss_mib", "6", "RSS per API worker (MiB)", "{:.0f}"),
    ("memory.api_total_rss_mib", "6", "RSS API, master + workers (MiB)", "{:.0f}"),
    ("memory.worker_process_rss_mib", "6", "RSS per worker process (MiB)", "{:.0f}"),
    ("memory.worker_total_rss_mib", "6", "RSS worker group, all processes (MiB)", "{:.0f}"),
    ("memory.bare_process_rss_mib", "6", "RSS per bare Dramatiq process (MiB)", "{:.0f}"),
    ("peers.celery_per_s", "7", "peers: Celery no-op jobs/s", "{:,.0f}"),
    ("peers.procrastinate_per_s", "7", "peers: Procrastinate no-op jobs/s", "{:,.0f}"),
    ("peers.ratio_vs_celery", "7", "peers: ratio Courier / Celery", "{:.2f}"),
    ("peers.ratio_vs_procrastinate", "7", "peers: ratio Courier / Procrastinate", "{:.2f}"),
]

# key -> (comparison, threshold); the targets.
TARGETS: dict[str, tuple[str, float]] = {
    "single.completed_per_s": (">=", 500),
    "batch.completed_per_s": (">=", 1500),
    "drain.ratio": (">=", 0.4),
    "reads.large_p99_ms": ("<", 10),
    "reads.p99_growth_pct": ("<=", 20),
    "replay.seconds": ("<", 10),
    "peers.ratio_vs_celery": (">=", 5),
    "peers.ratio_vs_procrastinate": (">=", 5),
}


def figures(sections: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The headline figures of a run, flat."""
    out: dict[str, float] = {}
    for name in ("single", "batch"):
        if name in sections:
            for key in ("accepted_per_s", "completed_per_s", "accept_p50_ms", "accept_p99_ms"):
                out[f"{name}.{key}"] = sections[name][key]
            out[f"{name}.done_p50_ms"] = sections[name]["done_p50_ms"]
            out[f"{name}.done_p99_ms"] = sections[name]["done_p99_ms"]
    if "drain" in sections:
        d = sections["drain"]
        out["drain.courier_per_s"] = d["courier"]["per_s"]
        out["drain.bare_per_s"] = d["bare"]["per_s"]
        out["drain.ratio"] = d["ratio"]
        if d.get("bare_upstream"):  # only for job types that make the two upstream calls
            out["drain.bare_upstream_per_s"] = d["bare_upstream"]["per_s"]
            out["drain.ratio_vs_bare_upstream"] = d["ratio_vs_bare_upstream"]
    if "peers" in sections:
        for peer in ("celery", "procrastinate"):
            out[f"peers.{peer}_per_s"] = sections["peers"][peer]["per_s"]
            out[f"peers.ratio_vs_{peer}"] = sections["peers"][f"ratio_vs_{peer}"]
    if "reads" in sections:
        sizes = sections["reads"]["sizes"]
        small, large = sizes[0], sizes[-1]
        out |= {"reads.small_p50_ms": small["p50_ms"], "reads.small_p99_ms": small["p99_ms"]}
        out |= {"reads.large_p50_ms": large["p50_ms"], "reads.large_p99_ms": large["p99_ms"]}
        out |= {"reads.small_sql_p99_ms": small["sql_p99_ms"]}
        out |= {"reads.large_sql_p99_ms": large["sql_p99_ms"]}
        if small["p99_ms"]:
            out["reads.p99_growth_pct"] = (large["p99_ms"] / small["p99_ms"] - 1) * 100
    if "replay" in sections:
        r = sections["replay"]
        out["replay.seconds"] = r["seconds"]
        out["replay.per_s"] = r["replayed"] / r["seconds"] if r["seconds"] else 0.0
    if "memory" in sections:
        groups = sections["memory"]["groups"]
        for role, prefix in (("api", "api"), ("worker", "worker"), ("bare", "bare")):
            if role in groups:
                g = groups[role]
                per = "worker" if role == "api" else "process"
                out[f"memory.{prefix}_{per}_rss_mib"] = g["per_worker_rss_mib"]
                out[f"memory.{prefix}_total_rss_mib"] = g["total_rss_mib"]
    return out


def verdict(key: str, value: float | None) -> tuple[str, str]:
    """(target text, "met" / "missed by ...") for a figure that has a target, else ("", "")."""
    if key not in TARGETS or value is None:
        return "", ""
    op, limit = TARGETS[key]
    ok = {">=": value >= limit, "<": value < limit, "<=": value <= limit}[op]
    target = f"{op} {limit:g}"
    if ok:
        return target, "met"
    if key.endswith("_pct"):
        return target, f"missed by {value - limit:.0f} points"
    gap = abs(value - limit) / limit * 100
    return target, f"missed by {gap:.0f}%"


def labels(sections: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Measurement names, with this run's sizes filled in."""
    sizes = sections.get("reads", {}).get("sizes") or [{"rows": 0}]
    context = {
        "batch_size": sections.get("batch", {}).get("batch_size", 0),
        "small_rows": sizes[0]["rows"],
        "large_rows": sizes[-1]["rows"],
        "dead": sections.get("replay", {}).get("dead", 0),
    }
    return {key: label.format(**context) for key, _, label, _ in FIGURES}


def table(values: dict[str, float], names: dict[str, str]) -> str:
    """The figures as an aligned text table with targets and verdicts."""
    rows = [("#", "measurement", "value", "target", "verdict")]
    for key, section, _, fmt in FIGURES:
        if key in values:
            target, outcome = verdict(key, values[key])
            rows.append((section, names[key], fmt.format(values[key]), target, outcome))
    return aligned(rows, right={2})


def aligned(rows: list[tuple[str, ...]], *, right: set[int]) -> str:
    """Rows as a text table: the first a header ruled off, columns in `right` right-aligned,
    the others left-aligned, the last one not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2
    with psycopg.connect(PG_ADMIN) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    overview = rabbitmq_overview()
    packages = ("dramatiq", "pika", "falcon", "gunicorn", "SQLAlchemy", "psycopg", "pydantic")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres,
        "rabbitmq": overview.get("rabbitmq_version"),
        "erlang": overview.get("erlang_version"),
        "packages": {name: metadata.version(name) for name in packages},
    }


def describe(info: dict[str, Any]) -> str:
    """The machine in two lines."""
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}\n"
        f"software: Python {info['python']}, PostgreSQL {info['postgresql']}, "
        f"RabbitMQ {info['rabbitmq']} (Erlang {info['erlang']}); {packages}"
    )


#: Within this share of the empty-table figure with history loaded (`--history`).
HISTORY_SHARE = 0.20


def history_comparison(empty: dict[str, float], full: dict[str, float]) -> dict[str, dict]:
    """Each figure of both rounds: its values, history/empty, and whether it is within
    `HISTORY_SHARE` of the empty one (no lower for rates and ratios, no higher for times)."""
    out = {}
    for key, *_ in FIGURES:
        if key in empty and key in full:
            a, b = empty[key], full[key]
            ratio = b / a if a else 0.0
            higher_is_better = not key.endswith("_ms")
            ok = ratio >= 1 - HISTORY_SHARE if higher_is_better else ratio <= 1 + HISTORY_SHARE
            out[key] = {"empty": a, "history": b, "ratio": ratio, "within": ok}
    return out


def history_table(comparison: dict[str, dict], names: dict[str, str], rows: int) -> str:
    """The figures of both rounds side by side with their ratio and verdict."""
    head = ("#", "measurement", "empty", f"{rows:,} history", "history/empty", "verdict")
    lines = [head]
    for key, section, _, fmt in FIGURES:
        if key in comparison:
            c = comparison[key]
            within = f"within {HISTORY_SHARE:.0%}"
            if c["within"]:
                verdict = f"{within}: met"
            else:
                off = abs(c["ratio"] - 1) * 100 - HISTORY_SHARE * 100
                verdict = f"{within}: missed by {off:.1f} points"
            lines.append(
                (
                    section,
                    names[key],
                    fmt.format(c["empty"]),
                    fmt.format(c["history"]),
                    f"{c['ratio']:.2f}",
                    verdict,
                )
            )
    return aligned(lines, right={2, 3, 4})
