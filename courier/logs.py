"""Logging set-up for entry points: JSON lines in production, readable lines in `courier dev`."""

from __future__ import annotations

import logging
import sys

import structlog

from courier.redact import redact


def configure_logging(log_format: str, *, level: int = logging.INFO) -> None:
    """Route the standard library's logging through structlog's renderer.

    Modules log with `logging.getLogger(__name__)` and pass job fields (job_id, message_id,
    attempt, correlation_id, outcome) as `extra`; they become keys of the JSON line.
    Passwords in URLs are masked in every line, tracebacks included: a driver's error may
    quote the URL it was given.
    """
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _without_passwords,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Pika narrates every connection step at INFO.
    logging.getLogger("pika").setLevel(logging.WARNING)
    # httpx logs every request at INFO: two lines per job that say nothing the outcome does not.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _without_passwords(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return {key: redact(value) if isinstance(value, str) else value for key, value in event.items()}
