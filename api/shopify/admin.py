"""The two Shopify calls an install makes, as Shopify documents them:

- the token exchange, `POST {admin}/admin/oauth/access_token` with a JSON body of `client_id`,
  `client_secret` and `code`; the answer is `{"access_token": "...", "scope": "a,b"}` (an offline
  token: it lasts until the app is uninstalled);
- webhook subscriptions through the GraphQL Admin API (REST is legacy for new apps since
  2024-10), one `webhookSubscriptionCreate(topic:, webhookSubscription: {callbackUrl, format:
  JSON})` per topic at `POST {admin}/admin/api/2024-10/graphql.json`, authenticated by
  `X-Shopify-Access-Token`; a refusal comes back as `userErrors` (HTTP 200) or `errors`.

The compliance topics (`customers/data_request`, `customers/redact`, `shop/redact`) cannot be
subscribed through the API: they are set once in the app's configuration (Partner Dashboard or
`shopify.app.toml`) and are signed with the same client secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from schemas.events.shopify import SHOPIFY_TOPICS

API_VERSION = "2024-10"
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# What an install subscribes to: every topic the ingress reads but the compliance ones.
SUBSCRIBED_TOPICS = tuple(sorted(SHOPIFY_TOPICS - COMPLIANCE_TOPICS))

SUBSCRIBE = """
mutation webhookSubscriptionCreate($topic: WebhookSubscriptionTopic!,
                                   $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic }
    userErrors { field message }
  }
}
"""


class AdminCallFailed(RuntimeError):
    """Shopify refused a call or could not be reached; `detail` says which and why."""


def graphql_topic(topic: str) -> str:
    """`orders/create` → `ORDERS_CREATE` (the `WebhookSubscriptionTopic` enum's spelling)."""
    return topic.replace("/", "_").upper()


@dataclass(frozen=True, slots=True)
class Grant:
    access_token: str
    scope: str


async def exchange_code(
    client: httpx.AsyncClient, base: str, *, client_id: str, client_secret: str, code: str
) -> Grant:
    """The offline access token for an authorization `code` (single use, Shopify-side)."""
    try:
        response = await client.post(
            f"{base}/admin/oauth/access_token",
            json={"client_id": client_id, "client_secret": client_secret, "code": code},
            headers={"Accept": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise AdminCallFailed(f"token exchange: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise AdminCallFailed(f"token exchange answered {response.status_code}")
    try:
        body = response.json()
        return Grant(access_token=str(body["access_token"]), scope=str(body.get("scope", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise AdminCallFailed("token exchange answered without an access_token") from exc


async def subscribe_webhooks(
    client: httpx.AsyncClient, base: str, token: str, callback_url: str
) -> list[str]:
    """One subscription per `SUBSCRIBED_TOPICS` entry; returns the topics subscribed. A topic
    already subscribed at this URL is a `userErrors` entry "Address for this topic has already
    been taken", which counts as done (a re-install)."""
    done: list[str] = []
    for topic in SUBSCRIBED_TOPICS:
        variables = {
            "topic": graphql_topic(topic),
            "webhookSubscription": {"callbackUrl": callback_url, "format": "JSON"},
        }
        try:
            response = await client.post(
                f"{base}/admin/api/{API_VERSION}/graphql.json",
                json={"query": SUBSCRIBE, "variables": variables},
                headers={"X-Shopify-Access-Token": token, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise AdminCallFailed(f"{topic}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise AdminCallFailed(f"{topic}: the GraphQL Admin API answered {response.status_code}")
        _check_subscribed(topic, response)
        done.append(topic)
    return done


def _check_subscribed(topic: str, response: httpx.Response) -> None:
    """`AdminCallFailed` unless the answer is a created (or already existing) subscription."""
    try:
        body: dict[str, Any] = response.json()
        if body.get("errors"):
            raise AdminCallFailed(f"{topic}: {body['errors']}")
        payload = body["data"]["webhookSubscriptionCreate"]
        errors = payload.get("userErrors") or []
        if any("already been taken" in str(e.get("message", "")) for e in errors):
            return
        if errors:
            raise AdminCallFailed(f"{topic}: {errors[0].get('message')}")
        if not payload["webhookSubscription"]["id"]:
            raise AdminCallFailed(f"{topic}: no subscription id in the answer")
    except (ValueError, KeyError, TypeError) as exc:
        raise AdminCallFailed(f"{topic}: not a webhookSubscriptionCreate answer") from exc
