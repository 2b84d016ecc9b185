"""The one error base class of the business core, and its RFC 9457 problem+json rendering.

Services raise `RefstreamError` subclasses; `install_problem_handlers` maps them (and FastAPI's
own validation and routing errors) to `application/problem+json` once, at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
_TYPE_PREFIX = "urn:refstream:problem:"


class FieldError(BaseModel):
    """One invalid field of a request that failed validation (`code` = `validation-error`)."""

    loc: list[str | int] = Field(description="Where: body/query/path/header, then the field path")
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error answer (`application/problem+json`, RFC 9457).

    `code` is the stable, machine-readable reason clients branch on (`not-found`, `forbidden`,
    `precondition-failed`, `validation-error`, `rate-limited`, ...); `type` is the same as a URN.
    """

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:refstream:problem:<code>")
    code: str = Field(description="Stable machine-readable reason")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path")
    request_id: str | None = Field(description="Quote it when reporting a problem")
    errors: list[FieldError] | None = Field(
        default=None, description="The invalid fields (validation errors only)"
    )


class RefstreamError(Exception):
    """A failure with an HTTP meaning: `status_code`, a stable `type` slug, a `title`.

    `commit_transaction` lets an error keep the request's writes (e.g. revoking a token family
    when a refresh token is reused must survive the 401 it answers).
    """

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    commit_transaction: ClassVar[bool] = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


class BadRequest(RefstreamError):
    status_code = 400
    type = "bad-request"
    title = "Bad request"


class Unauthorized(RefstreamError):
    status_code = 401
    type = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(RefstreamError):
    status_code = 403
    type = "forbidden"
    title = "Not allowed"


class NotFound(RefstreamError):
    """Also what another company's resources look like: their existence is not disclosed."""

    status_code = 404
    type = "not-found"
    title = "Not found"


class Conflict(RefstreamError):
    status_code = 409
    type = "conflict"
    title = "Conflict"


class Unprocessable(RefstreamError):
    """The request is well-formed but breaks a business rule (e.g. an invalid rule set)."""

    status_code = 422
    type = "unprocessable"
    title = "Unprocessable request"


class TooManyRequests(RefstreamError):
    status_code = 429
    type = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def problem(
    request: Request,
    *,
    status: int,
    type_: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document carrying the request id."""
    body: dict[str, Any] = {
        "type": _TYPE_PREFIX + type_,
        "code": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **(extensions or {}),
    }
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


async def _refstream_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RefstreamError)
    return problem(
        request,
        status=exc.status_code,
        type_=exc.type,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extensions=exc.extensions,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return problem(
        request,
        status=422,
        type_="validation-error",
        title="Request validation failed",
        detail=f"{len(errors)} invalid field(s)",
        extensions={"errors": errors},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem(
        request,
        status=exc.status_code,
        type_=slug,
        title=str(exc.detail),
        detail=str(exc.detail),
        headers=exc.headers,
    )


def _sqlstate(exc: DBAPIError) -> str:
    for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # SQLSTATE class 22 (e.g. a NUL character in text, a number out of a column's range): the
    # request carried a value the database cannot store, which is the client's to fix. Any other
    # database error stays a 500 (re-raised to the request middleware, which logs it).
    assert isinstance(exc, DBAPIError)
    if not _sqlstate(exc).startswith("22"):
        raise exc
    return problem(
        request,
        status=422,
        type_="invalid-data",
        title="Invalid data",
        detail="A value in the request cannot be stored (e.g. a NUL character or an out-of-range "
        "number).",
    )


def internal_error_body(*, path: str, request_id: str | None) -> dict[str, Any]:
    """The problem document of an unexpected failure (details go to the log, not the client)."""
    return {
        "type": _TYPE_PREFIX + RefstreamError.type,
        "code": RefstreamError.type,
        "title": RefstreamError.title,
        "status": 500,
        "detail": "The server could not complete the request.",
        "instance": path,
        "request_id": request_id,
    }


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RefstreamError, _refstream_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _data_error)
