"""/openapi.json and /docs: the API described from its own code, and an explorer to try it.

The explorer is Swagger UI, served from the files the `swagger-ui-py` package ships (no CDN):
it loads /openapi.json, and its Authorize button takes a bearer token that "Try it out" then
sends with each call.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from importlib import resources
from typing import Any

import falcon

from api.spec import operation
from api.ui.render import render

#: The explorer's files, as Swagger UI's distribution names them.
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "LICENSE")
# Swagger UI's stylesheet draws its icons as data: images; everything else it loads (its
# files, the document, the "Try it out" calls) comes from here, and no script is inline.
EXPLORER_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


class OpenApi:
    """The OpenAPI document and the explorer page that loads it."""

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
        info = self._doc()["info"]
        resp.content_type = falcon.MEDIA_HTML
        resp.text = render("docs.html", title=info["title"], version=info["version"])
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("Content-Security-Policy", EXPLORER_POLICY)

    def on_get_asset(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in ASSETS:
            raise falcon.HTTPNotFound(title="Not Found", description="no such file")
        resp.content_type = mimetypes.guess_type(name)[0] or "text/plain"
        resp.data = (resources.files("swagger_ui") / "static" / name).read_bytes()
        # The files change only with the package; a day's caching spares the 1.5 MB bundle.
        resp.cache_control = ["public", "max-age=86400"]
