"""Every error becomes one JSON shape, `{"title", "description", ...}`, mapped in one place."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import falcon
from pydantic import ValidationError

from store import errors as store_errors

log = logging.getLogger(__name__)


class Problem(falcon.HTTPError):
    """An HTTP error with the contract's body and optional extra fields."""

    def __init__(
        self,
        status: str,
        title: str,
        description: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(status, title=title, description=description, headers=headers)
        self.extra = extra

    def to_dict(self, obj_type: type = dict) -> Any:
        body = super().to_dict(obj_type)
        body.update(self.extra)
        return body


def not_found(description: str = "no such job") -> Problem:
    """404 in the contract's shape (also for other tenants' jobs)."""
    return Problem(falcon.HTTP_404, "Not Found", description)


def install(app: falcon.App) -> None:
    """Register the handlers that turn exceptions into answers."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(ValidationError, _invalid)
    app.add_error_handler(store_errors.StoreError, _store_error)
    app.add_error_handler(store_errors.DatabaseUnavailable, _database_down)
    app.add_error_handler(store_errors.InvalidValue, _invalid_data)


def _http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    resp.status = ex.status
    resp.media = _in_contract_shape(ex)
    if ex.headers:
        resp.set_headers(ex.headers)


#: What Falcon's own errors (no route, a method the route lacks, a path id that is not one)
#: say, since Falcon gives them only a title.
_FALCON_DESCRIPTIONS = {
    404: "no such resource",
    405: "this method is not allowed on this resource",
}


def _in_contract_shape(ex: falcon.HTTPError) -> dict[str, Any]:
    body: dict[str, Any] = dict(ex.to_dict())
    phrase = HTTPStatus(ex.status_code).phrase
    if body.get("title") == f"{ex.status_code} {phrase}":  # Falcon's default title
        body["title"] = phrase
    body.setdefault("description", _FALCON_DESCRIPTIONS.get(ex.status_code, phrase.lower()))
    return body


def _invalid(
    req: falcon.Request, resp: falcon.Response, ex: ValidationError, params: dict[str, Any]
) -> None:
    problem = as_problem(ex)
    _http_error(req, resp, problem, params)


def as_problem(ex: ValidationError) -> Problem:
    """400 for a body that is not JSON, else 422 naming each invalid field."""
    details = ex.errors(include_url=False, include_context=False, include_input=False)
    if any(d["type"] == "json_invalid" for d in details):
        return Problem(falcon.HTTP_400, "Malformed JSON", "the request body is not valid JSON")
    fields = [{"field": ".".join(str(p) for p in d["loc"]), "message": d["msg"]} for d in details]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields[:5])
    return Problem(falcon.HTTP_422, "Invalid request", summary, errors=fields)


def _store_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    _http_error(req, resp, store_problem(ex), params)


def store_problem(ex: Exception) -> Problem:
    """The answer for a transition the store refused."""
    if isinstance(ex, store_errors.JobNotFound):
        return not_found()
    if isinstance(ex, store_errors.DuplicateActiveJob):
        return Problem(
            falcon.HTTP_409, "Conflict", str(ex), existing_job_id=str(ex.existing_job_id)
        )
    if isinstance(ex, store_errors.IdempotencyConflict):
        return Problem(falcon.HTTP_422, "Idempotency-Key reused", str(ex))
    if isinstance(ex, store_errors.UnnamedReplay):
        return Problem(
            falcon.HTTP_422,
            "Nothing named",
            "name the dead jobs to replay (job_ids, type, error_type or tenant), "
            'or send "all": true to replay every dead job',
        )
    return Problem(falcon.HTTP_409, "Conflict", str(ex))


def _database_down(
    req: falcon.Request,
    resp: falcon.Response,
    ex: store_errors.DatabaseUnavailable,
    params: dict[str, Any],
) -> None:
    log.warning("%s", ex)
    problem = Problem(
        falcon.HTTP_503,
        "Database unavailable",
        "the job store is not answering; try again",
        headers={"Retry-After": "5"},
    )
    _http_error(req, resp, problem, params)


def _invalid_data(
    req: falcon.Request,
    resp: falcon.Response,
    ex: store_errors.InvalidValue,
    params: dict[str, Any],
) -> None:
    # Input the edge let through but the database cannot store: still the client's error.
    log.warning("database refused input on %s %s: %s", req.method, req.path, ex)
    _http_error(
        req, resp, Problem(falcon.HTTP_422, "Invalid request", "a value cannot be stored"), params
    )


def _unexpected(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    if isinstance(ex, falcon.HTTPError):
        _http_error(req, resp, ex, params)
        return
    log.exception("unexpected error on %s %s", req.method, req.path)
    problem = Problem(falcon.HTTP_500, "Internal Server Error", "an unexpected error occurred")
    _http_error(req, resp, problem, params)
