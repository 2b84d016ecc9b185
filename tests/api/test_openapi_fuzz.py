"""Schemathesis against the app's own OpenAPI document, in process, as a company owner: whatever
it sends, no operation answers 5xx, and every answer conforms to the document (its status code
is declared, its content type and headers are the declared ones, its body validates against the
declared schema, problem+json included). Bounded (a few examples per operation, no shrinking)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import get_client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from schemas.settings import Settings
from tests.api.factories import PASSWORD, unique_slug

EXAMPLES_PER_OPERATION = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def owner_token(client: Any) -> str:
    slug = unique_slug("fuzz")
    email = f"owner@{slug}.example"
    created = client.post(
        "/v1/companies",
        json={"name": "Fuzz", "slug": slug, "owner_email": email, "owner_password": PASSWORD},
    )
    assert created.status_code == 201, created.text
    tokens = client.post(
        "/v1/auth/login", json={"company": slug, "email": email, "password": PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    token: str = tokens.json()["access_token"]
    return token


def test_every_answer_conforms_to_the_document_and_none_is_5xx(api_settings: Settings) -> None:
    app = create_app(api_settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    with get_client(app) as client:
        headers = {"Authorization": f"Bearer {owner_token(client)}"}
        for result in schema.get_all_operations():
            operation = result.ok()
            if is_event_stream(operation):
                continue  # never ends in-process; tests/api/test_live.py drives it over HTTP
            fuzz(operation, client, headers, failures)
    assert failures == []


def is_event_stream(operation: Any) -> bool:
    ok = operation.definition.raw.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def fuzz(operation: Any, client: Any, headers: dict[str, str], failures: list[str]) -> None:
    """A few generated requests to one operation; 5xx and non-conforming answers are collected
    in `failures`."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(session=client, headers=headers)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as failure:
            failures.append(
                f"{operation.method.upper()} {operation.path}: {response.status_code} "
                f"for {case.path_parameters} {case.query} {case.body!r:.200}: {failure!s:.600}"
            )

    check()
