"""OpenAPI descriptions of the ingress's routes. The handlers read raw bodies (HMAC is computed
over the exact bytes), so FastAPI cannot infer bodies or answers: they are declared here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.events.click import PixelBatch

PROBLEM_JSON = "application/problem+json"

# The ingress's problem document, one named component (`install_components`) that every answer
# refers to, so a generated client has one type for them.
PROBLEM_REF: dict[str, Any] = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem document with a stable machine-readable `code`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}

_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "event_id"],
    "properties": {
        "status": {"type": "string", "enum": ["accepted", "duplicate", "dead_lettered"]},
        "event_id": {"type": "string"},
    },
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its `$defs` inlined (valid anywhere in an OpenAPI document)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def problems(*codes: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the refusals `codes` ((status, code) pairs), grouped by status,
    and a `4XX` catch-all (e.g. 405): every refusal is a problem document. Declaring them also
    keeps FastAPI from adding its 422 `HTTPValidationError`, which the ingress never answers
    (invalid parameters are a 400 `bad_request` problem)."""
    by_status: dict[int | str, list[str]] = {}
    for status, code in codes:
        by_status.setdefault(status, []).append(code)
    documented: dict[int | str, dict[str, Any]] = {
        status: {
            "description": "Problem; `code`: " + ", ".join(f"`{c}`" for c in names),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
        for status, names in sorted(by_status.items(), key=lambda item: str(item[0]))
    }
    documented["4XX"] = {
        "description": "Any other refusal (e.g. `method_not_allowed`)",
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    return documented


_INTERNAL_ERROR: dict[str, Any] = {
    "description": "Internal error (`code`: `internal_error`; quote `X-Request-Id`)",
    "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
}


def install_components(app: Any) -> None:
    """Add the named `Problem` schema the routes' answers refer to, and the 500 any operation
    can answer, to `app`'s document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document: dict[str, Any] = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", PROBLEM_SCHEMA)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault("500", _INTERNAL_ERROR)
        return document

    app.openapi = openapi


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def outcome(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {"application/json": {"schema": _OUTCOME_SCHEMA}},
        }
    }


_BODY_REFUSALS = ((415, "unsupported_media_type"), (413, "body_too_large"), (400, "bad_request"))
_BROKER = ((503, "broker_unavailable"),)

SHOPIFY: dict[str, Any] = {
    "operation_id": "webhooks.shopify",
    "responses": {
        **outcome(
            "Stored in Kafka (`accepted`), seen before (`duplicate`) or kept as a dead letter"
        ),
        **problems(
            *_BODY_REFUSALS,
            (401, "unknown_shop"),
            (401, "invalid_signature"),
            (403, "shop_uninstalled"),
            (429, "rate_limited"),
            *_BROKER,
        ),
    },
    "openapi_extra": {
        **json_body(
            {"type": "object", "description": "The payload of the topic in X-Shopify-Topic."},
            "A Shopify webhook payload, verified with X-Shopify-Hmac-Sha256 over the raw bytes.",
        ),
        "parameters": [
            {"name": name, "in": "header", "required": required, "schema": {"type": "string"}}
            for name, required in (
                ("X-Shopify-Topic", True),
                ("X-Shopify-Shop-Domain", True),
                ("X-Shopify-Hmac-Sha256", True),
                ("X-Shopify-Event-Id", False),
                ("X-Shopify-Webhook-Id", False),
            )
        ],
    },
}

ODOO: dict[str, Any] = {
    "operation_id": "webhooks.odoo",
    "responses": {
        **outcome(
            "Stored in Kafka (`accepted`), seen before (`duplicate`) or kept as a dead letter"
        ),
        **problems(*_BODY_REFUSALS, (401, "unknown_endpoint"), (429, "rate_limited"), *_BROKER),
    },
    "openapi_extra": json_body(
        {
            "type": "object",
            "required": ["_model", "_id"],
            "properties": {
                "_model": {"type": "string", "examples": ["sale.order", "account.move"]},
                "_id": {"type": "integer"},
                "_action": {"type": "string"},
            },
            "additionalProperties": True,
        },
        "An Odoo 'Send Webhook Notification' body: the record's model, id and fields.",
    ),
}

REDIRECT: dict[str, Any] = {
    "operation_id": "clicks.redirect",
    "status_code": 302,  # its answer: not FastAPI's default 200
    "responses": {
        302: {
            "description": "Redirect to the program's landing URL with `rsclid`; sets the "
            "`rs_vid` and `rs_clid` cookies",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
        **problems((404, "unknown_link"), (404, "bad_landing_url"), (400, "bad_request")),
    },
}

PIXEL: dict[str, Any] = {
    "operation_id": "clicks.pixel_batch",
    "status_code": 202,
    "responses": {
        202: {
            "description": "Accepted clicks (`index`, `click_id`, the recorded `occurred_at`, "
            "`bot`, `duplicate`, `redated` {`reason`, `claimed_at`} when the claimed time was "
            "replaced by the arrival, `relay` when forwarded headers were sent) and rejected "
            "items (`unknown_link`)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "accepted": {"type": "array", "items": {"type": "object"}},
                            "rejected": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                }
            },
        },
        **problems(*_BODY_REFUSALS, (403, "origin_not_allowed"), *_BROKER),
    },
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "Up to 100 clicks. A browser may send the same JSON as `text/plain` "
            "(`navigator.sendBeacon`, a CORS simple request); with an `Origin` header it must be "
            "the storefront of a registered shop (`https://{shop domain}`), else 403.",
            "content": {
                "application/json": {"schema": inline_schema(PixelBatch)},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
}

PREFLIGHT: dict[str, Any] = {
    "operation_id": "clicks.pixel_preflight",
    "status_code": 204,
    "responses": {
        204: {
            "description": "The origin is the storefront of a registered shop: "
            "`Access-Control-Allow-Origin` echoes it (with `Vary: Origin`, the allowed method "
            "and headers, and `Access-Control-Max-Age`)",
        },
        **problems((400, "bad_request"), (403, "origin_not_allowed")),
    },
}

PIXEL_SCRIPT: dict[str, Any] = {
    "operation_id": "clicks.pixel_script",
    "responses": {
        200: {
            "description": "The storefront snippet (plain JavaScript), with `ETag` and "
            "`Cache-Control`",
            "content": {"text/javascript": {"schema": {"type": "string"}}},
        },
        304: {"description": "Not modified (`If-None-Match` names the current `ETag`)"},
    },
}
