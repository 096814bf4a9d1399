"""Headers every answer carries: nothing is cached, no content type is guessed."""

from __future__ import annotations

from typing import Any

import falcon

# Answers hold tenants' jobs and operators' pages: no shared or browser cache may keep them,
# and a browser must not sniff a JSON or text answer into something it would run.
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class NoStore:
    """Falcon middleware that marks every answer, errors and 404s included, as not to be stored
    or sniffed."""

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_headers(HEADERS)
