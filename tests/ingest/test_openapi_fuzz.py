"""Schemathesis against the ingress's own OpenAPI document, in process, with a registered shop,
Odoo endpoint and link: whatever it sends, no operation answers 5xx and every answer conforms to
the document (declared status, content type, headers and body schema, problem+json included).
Generated requests carry no valid HMAC, so webhooks exercise the refusals, not the broker."""

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

from ingest.app import create_app
from schemas.settings import Settings
from tests.ingest.conftest import Registered

EXAMPLES_PER_OPERATION = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_every_ingress_answer_conforms_to_the_document(
    stack_settings: Settings, registered: Registered
) -> None:
    app = create_app(stack_settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    with get_client(app) as client:
        for result in schema.get_all_operations():
            fuzz(result.ok(), client, failures)
    assert failures == []


def fuzz(operation: Any, client: Any, failures: list[str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(session=client, allow_redirects=False)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as failure:
            failures.append(
                f"{operation.method.upper()} {operation.path}: {response.status_code} "
                f"for {case.path_parameters} {case.query} {case.body!r:.200}: {failure!s:.600}"
            )

    check()
