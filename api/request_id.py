"""X-Request-ID: taken from the client or made up, returned on every answer."""

from __future__ import annotations

import re
import uuid
from typing import Any

import falcon

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


class RequestId:
    """Falcon middleware that gives every request an id (used as a new job's correlation id)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID")
        req.context.request_id = given if given and _ACCEPTABLE.match(given) else str(uuid.uuid4())
        req.context.request_id_given = bool(given and _ACCEPTABLE.match(given))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        request_id = getattr(req.context, "request_id", None)
        if request_id:
            resp.set_header("X-Request-ID", request_id)
