"""A server span per request, current while the request is handled (installed only when
tracing is on), so that what a request publishes is part of its trace."""

from __future__ import annotations

from typing import Any

import falcon

from tracing import spans


class RequestSpans:
    """Falcon middleware that wraps each request in a span of the caller's trace."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.span = spans.begin_request(req.method, req.path, req.get_header("traceparent"))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        opened: spans.Open | None = getattr(req.context, "span", None)
        if opened is None:
            return
        spans.name_request(opened, req.method, req.uri_template)
        status = resp.status_code
        # A server error marks the span, as the HTTP conventions say; a 4xx is the client's.
        opened.finish(failed=status >= 500, attributes={"http.response.status_code": status})
