"""/openapi.json and /docs: the API described from its own code."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import falcon

from api.spec import operation
from api.ui.render import render


class OpenApi:
    """The OpenAPI document and its rendered page."""

    public = True

    def __init__(self, document: Callable[[], dict[str, Any]]) -> None:
        self._document = document
        self._cached: dict[str, Any] | None = None

    def _doc(self) -> dict[str, Any]:
        if self._cached is None:
            self._cached = self._document()
        return self._cached

    @operation(auth=None, responses={200: None})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """This document."""
        resp.media = self._doc()

    def on_get_docs(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = render("docs.html", doc=self._doc(), pretty=lambda s: json.dumps(s, indent=2))
