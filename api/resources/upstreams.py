"""/v1/upstreams: the upstreams' circuits, and operators forcing one open or closed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import falcon
from sqlalchemy.orm import Session, sessionmaker

from api import auth
from api.errors import Problem
from api.resources.jobs import COMMON, WITH_BODY
from api.schemas import CircuitRequest, ErrorOut, UpstreamList, UpstreamOut
from api.serialize import timestamp
from api.spec import operation
from store import circuits


def shown(state: circuits.State) -> dict[str, Any]:
    """An upstream's circuit as the API answers it."""
    return {
        "upstream": state.upstream,
        "state": state.state,
        "failures": state.failures,
        "opened_at": timestamp(state.opened_at),
        "retry_at": timestamp(state.retry_at),
        "forced": state.forced,
        "reason": state.reason,
    }


class Upstreams:
    """Every known upstream's circuit; an operator forces one open or closed."""

    def __init__(self, sessions: sessionmaker[Session], upstreams: Sequence[str]) -> None:
        self._sessions = sessions
        self._upstreams = tuple(upstreams)

    @operation(auth="operator", responses={200: UpstreamList, 403: ErrorOut, **COMMON})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List the upstreams with their circuits' state."""
        with self._sessions() as session:
            states = circuits.states_of(session.connection(), self._upstreams)
        resp.media = {"upstreams": [shown(s) for s in states]}

    @operation(
        request=CircuitRequest,
        auth="operator",
        responses={200: UpstreamOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut, **WITH_BODY},
    )
    def on_post_circuit(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Force an upstream's circuit open (until an operator closes it) or closed; audited."""
        who = auth.require_operator(req)
        request: CircuitRequest = req.context.body
        if name not in self._upstreams:
            known = ", ".join(self._upstreams)
            raise Problem(falcon.HTTP_404, "Not Found", f"no upstream {name!r}; known: {known}")
        with self._sessions.begin() as session:
            state = circuits.force_by(
                session, name, request.state, actor=who.label, reason=request.reason
            )
        resp.media = shown(state)
