"""The dashboard's files are served by the API with a strict CSP, and every script and style the
page references is served (the page's behaviour is tested in a real browser, tests/browser)."""

from __future__ import annotations

import re

from httpx import AsyncClient


async def test_dashboard_page_and_its_assets_are_served(client: AsyncClient) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text)
    assert sorted(assets) == [
        "/dashboard/static/app.css",
        "/dashboard/static/app.js",
        "/dashboard/static/chart.js",
    ]
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 500, asset
    assert "<script>" not in page.text  # no inline code: the CSP would block it
