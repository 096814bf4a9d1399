"""One source for validation and the OpenAPI document: responders declare their operation.

`@operation(...)` records what a responder accepts and answers; it also validates the body
(and query string) with the same pydantic models before the responder runs, so what the
document says is what the API enforces. `openapi()` walks the registered routes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import falcon
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import body
from api.auth import require_operator

ROLE_DESCRIPTIONS = {
    None: "No authentication.",
    "client": "Bearer token of a client (its own tenant) or an operator (all tenants).",
    "operator": "Bearer token of an operator.",
}


@dataclass(frozen=True)
class Operation:
    """What one responder accepts and answers."""

    summary: str
    auth: str | None
    request: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, type[BaseModel] | None]
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    optional_body: bool = False


def operation(
    *,
    responses: dict[int, type[BaseModel] | None],
    request: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    auth: str | None = "client",
    headers: dict[str, dict[str, Any]] | None = None,
    optional_body: bool = False,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Declare a responder's operation and validate its input with the declared models."""

    def decorate(responder: Callable[..., None]) -> Callable[..., None]:
        summary = (inspect.getdoc(responder) or responder.__name__).splitlines()[0]
        spec = Operation(summary, auth, request, query, responses, headers or {}, optional_body)

        @functools.wraps(responder)
        def validated(
            resource: Any, req: falcon.Request, resp: falcon.Response, **params: Any
        ) -> None:
            if auth == "operator":
                require_operator(req)
            if query is not None:
                if any("\x00" in str(v) for v in req.params.values()):
                    raise body.no_nul()
                req.context.query = query.model_validate(dict(req.params))
            if request is not None:
                req.context.body = body.parse(req, request, empty_ok=optional_body)
            responder(resource, req, resp, **params)

        validated.__openapi__ = spec  # type: ignore[attr-defined]
        return validated

    return decorate


class Routes:
    """Routes as they are added to the app, so the document can be generated from them."""

    def __init__(self, app: falcon.App) -> None:
        self.app = app
        self.added: list[tuple[str, Any, str | None]] = []

    def add(self, path: str, resource: Any, suffix: str | None = None) -> None:
        """`app.add_route`, remembered."""
        if suffix:
            self.app.add_route(path, resource, suffix=suffix)
        else:
            self.app.add_route(path, resource)
        self.added.append((path, resource, suffix))


def openapi(routes: Routes, *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared operation."""
    operations = list(_operations(routes))
    models = {m for _, _, op in operations for m in _models(op)}
    _, schemas = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in operations:
        paths.setdefault(_openapi_path(path), {})[method] = _describe(path, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operations(routes: Routes) -> Iterator[tuple[str, str, Operation]]:
    for path, resource, suffix in routes.added:
        for method in ("get", "post", "put", "patch", "delete"):
            name = f"on_{method}" + (f"_{suffix}" if suffix else "")
            spec = getattr(getattr(resource, name, None), "__openapi__", None)
            if spec is not None:
                yield path, method, spec


def _models(op: Operation) -> list[type[BaseModel]]:
    return [m for m in (op.request, *op.responses.values()) if m is not None]


def _openapi_path(path: str) -> str:
    return path.replace(":uuid}", "}")


def _describe(path: str, op: Operation) -> dict[str, Any]:
    described: dict[str, Any] = {
        "summary": op.summary,
        "description": ROLE_DESCRIPTIONS[op.auth],
        "responses": {
            str(status): _response(model) for status, model in sorted(op.responses.items())
        },
    }
    if op.auth is not None:
        described["security"] = [{"bearer": []}]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS[converter]}
        for name, converter in _path_params(path)
    ]
    if op.query is not None:
        for name, prop in op.query.model_json_schema()["properties"].items():
            parameters.append({"name": name, "in": "query", "required": False, "schema": prop})
    parameters += [
        {"name": name, "in": "header", "required": False, **header}
        for name, header in op.headers.items()
    ]
    if parameters:
        described["parameters"] = parameters
    if op.request is not None:
        described["requestBody"] = {
            "required": not op.optional_body,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{op.request.__name__}"}
                }
            },
        }
    return described


def _response(model: type[BaseModel] | None) -> dict[str, Any]:
    if model is None:
        return {"description": "No body."}
    return {
        "description": (model.__doc__ or model.__name__).strip().splitlines()[0],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


#: The schema of a path segment by its Falcon converter (none: any string).
_PATH_SCHEMAS: dict[str, dict[str, str]] = {
    "uuid": {"type": "string", "format": "uuid"},
    "": {"type": "string"},
}


def _path_params(path: str) -> list[tuple[str, str]]:
    """(name, converter) of each `{name}` or `{name:converter}` segment of `path`."""
    segments = (part[1:-1] for part in path.split("/") if part.startswith("{"))
    return [(name, converter) for name, _, converter in (s.partition(":") for s in segments)]
