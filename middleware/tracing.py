"""The Tracing middleware: each attempt runs inside its job's trace.

It comes after Attempts, so its hook sees the claim (and the job's traceparent) and its
span does not cover the claim's bookkeeping; the span ends before Attempts records the
outcome. With tracing off it only remembers the job's traceparent for the attempt's
upstream calls.
"""

from __future__ import annotations

import threading
from typing import Any

from dramatiq import Broker, Middleware

from middleware import current_job
from tracing import context, spans


class Tracing(Middleware):
    """Opens a consumer span (OpenTelemetry messaging conventions) around every attempt."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        try:
            claim = current_job.current_job().claim
        except RuntimeError:  # not claimed: Attempts skipped the message
            return
        self._local.opened = spans.begin_attempt(
            context.for_job(claim.traceparent, claim.job_id),
            queue=message.queue_name,
            message_id=message.message_id,
            job_id=str(claim.job_id),
            job_type=claim.type,
            attempt=claim.number,
        )

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        opened: spans.Open | None = getattr(self._local, "opened", None)
        if opened is None:
            return
        self._local.opened = None
        opened.finish(exception)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self.after_process_message(broker, message)
