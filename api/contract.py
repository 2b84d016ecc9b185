"""The OpenAPI document as a product for generated clients (web console, Flutter app, SDKs).

`install_contract(app)` replaces FastAPI's document builder with one that, for every operation,
declares the problem+json answers it can give with the shared `Problem` schema (so a generated
client can type them and branch on `code`), the `ETag` of successful GETs and their 304 answer.
Which statuses an operation documents follows from what the operation declares:

- authenticated (has `security`): 401, 403;  path parameters: 404;
- any parameter or body: 422 (validation);  a `cursor` query parameter: 400 (malformed cursor);
- a write (POST/PUT/PATCH/DELETE): 409;  an `If-Match` header: 412;
- GET: 304 (conditional GET, see `api.conditional`);  analytics: 503 (ClickHouse unavailable);
  login: 429 (rate limit);  every operation: 500;  any other 4xx: the `4XX` catch-all.

Operation ids are explicit in each route (`notes.list`, `ledger.approve_entry`);
`missing_operation_ids` lists the routes that lack one (tests/api/test_contract.py fails on it).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from api.errors import PROBLEM_JSON, FieldError, Problem

_REF = "#/components/schemas/Problem"
_WRITES = frozenset({"post", "put", "patch", "delete"})
_DESCRIPTIONS: dict[str, str] = {
    "304": "Not modified: the `If-None-Match` tag is still current (no body)",
    "400": "Malformed request (e.g. a cursor that was not issued by this list)",
    "401": "Authentication required, or the token/key is invalid or expired",
    "403": "Authenticated, but the caller's roles do not allow it here",
    "404": "Not found (another company's resources look the same)",
    "409": "Conflict with the current state (duplicate, or a state change not allowed)",
    "412": "Precondition failed: the `If-Match` tag is stale",
    "422": "Validation failed (`errors` lists the fields) or a business rule refused it",
    "429": "Too many requests (`Retry-After` says when to retry)",
    "500": "Internal error (quote `request_id`)",
    "503": "A store is unavailable; retry later",
    "4XX": "Any other client error",
}
_ETAG_HEADER = {
    "ETag": {
        "description": "Tag of this representation; send it back as `If-None-Match`",
        "schema": {"type": "string"},
    }
}


def problem_statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """The problem statuses `operation` (at `method` `path`) documents, by the rules above."""
    # If-None-Match is ours (added below); it cannot fail validation.
    params = [p for p in operation.get("parameters", []) if p.get("name") != "If-None-Match"]
    where = {(p.get("in"), p.get("name", "").lower()) for p in params}
    statuses = {"4XX", "500"}
    if operation.get("security"):
        statuses |= {"401", "403"}
    if any(kind == "path" for kind, _ in where):
        statuses.add("404")
    if params or "requestBody" in operation:
        statuses.add("422")
    if ("query", "cursor") in where:
        statuses.add("400")
    if method in _WRITES:
        statuses.add("409")
    if ("header", "if-match") in where:
        statuses.add("412")
    if path.startswith("/v1/analytics"):
        statuses.add("503")
    if path == "/v1/auth/login":
        statuses.add("429")
    return sorted(statuses)


def document_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    """Add the problem answers, and for GETs the `ETag` header and 304, to `operation`."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in problem_statuses(path, method, operation):
        existing = responses.get(status, {})
        responses[status] = {
            "description": existing.get("description") or _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": _REF}}},
        }
    if method != "get":
        return
    ok = responses.get("200")
    if ok is None or "application/json" not in ok.get("content", {}):
        return
    ok.setdefault("headers", {}).update(_ETAG_HEADER)
    responses["304"] = {"description": _DESCRIPTIONS["304"], "headers": _ETAG_HEADER}
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "if-none-match" for p in parameters):
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "The `ETag` of the copy you hold: 304 if it is still current",
                "schema": {"type": "string"},
            }
        )


def with_problem_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with `Problem` in its components and every operation's problems declared."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (FieldError, Problem):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        schemas[model.__name__] = schema
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                document_operation(path, method, operation)
    return document


def install_contract(app: FastAPI) -> None:
    """Post-process `app`'s OpenAPI document (FastAPI rebuilds it when routes change; the
    post-processing is idempotent) so it declares the problem answers."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return with_problem_schemas(build())

    app.openapi = openapi  # type: ignore[method-assign]


def missing_operation_ids(app: FastAPI) -> list[str]:
    """Routes in the document without an explicit `operation_id`, or sharing one, as
    readable lines (`GET /v1/shops (module.function): no operation_id; add ...`)."""
    routes = [
        r
        for r in iter_route_contexts(app.routes)
        if isinstance(r.original_route, APIRoute) and getattr(r, "include_in_schema", False)
    ]
    ids = [getattr(r, "operation_id", None) for r in routes]
    counts = Counter(i for i in ids if i)
    problems: list[str] = []
    for route, operation_id in zip(routes, ids, strict=True):
        endpoint = route.original_route.endpoint  # type: ignore[attr-defined]
        methods = sorted(getattr(route, "methods", None) or ())
        for method in methods:
            where = f"{method} {route.path_format} ({endpoint.__module__}.{endpoint.__name__})"
            if not operation_id:
                tags = getattr(route, "tags", None) or ["<tag>"]
                tag = str(tags[0]).replace(" ", "_")
                problems.append(
                    f'{where}: no operation_id; add operation_id="{tag}.<verb>" to its decorator'
                )
            elif counts[operation_id] > 1 or len(methods) > 1:
                problems.append(f"{where}: operation_id {operation_id!r} is not unique")
    return problems
