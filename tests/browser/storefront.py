"""A local stand-in for a Shopify storefront, for the storefront-snippet browser test.

It serves HTTPS (a self-signed certificate made with `openssl`; the browser is told to accept it)
on a free loopback port, for any host name: Chromium maps the shop's real domain
(`{slug}.myshopify.com`) to it with `--host-resolver-rules`, so the page's origin is exactly
`https://{shop domain}`, as on a live shop, and cookies are the shop's own. Pages carry the
theme's script tag for the ingress's `/pixel/v1.js`. The cart is the part of Shopify's AJAX Cart
API the snippet and a theme use, as Shopify documents it:

- `GET /cart.js`: the cart as JSON (`token`, `note`, `attributes`, `item_count`, `items`,
  `total_price`, `currency`, ...), one per `cart` cookie (set on first visit);
- `POST /cart/update.js`: JSON (or form) `{"attributes": {...}, "note": ...}`; attributes are
  merged into the cart's, an attribute set to `""` is removed; answers the updated cart;
- `POST /cart/add.js`: `{"items": [{"id": variant id, "quantity": n}]}`; answers the added items.

The carts are kept in memory (`Storefront.carts`), so a test can place the order Shopify would.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The shop's catalogue: variant id -> (product id, sku, title, price in cents).
PRODUCTS = {
    41001: (9001, "SKU-DESK", "Standing desk", 89900),
    41002: (9002, "SKU-CHAIR", "Task chair", 24900),
}


@dataclass
class Cart:
    token: str
    attributes: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    lines: dict[int, int] = field(default_factory=dict)  # variant id -> quantity

    def as_json(self, currency: str) -> dict[str, Any]:
        items = [_item(variant, qty) for variant, qty in self.lines.items()]
        total = sum(i["line_price"] for i in items)
        return {
            "token": self.token, "note": self.note, "attributes": dict(self.attributes),
            "original_total_price": total, "total_price": total, "total_discount": 0,
            "total_weight": 0, "item_count": sum(self.lines.values()), "items": items,
            "requires_shipping": True, "currency": currency, "items_subtotal_price": total,
            "cart_level_discount_applications": [],
        }  # fmt: skip


def _item(variant: int, quantity: int) -> dict[str, Any]:
    product, sku, title, price = PRODUCTS[variant]
    return {
        "id": variant, "variant_id": variant, "product_id": product, "key": f"{variant}:1",
        "sku": sku, "title": title, "quantity": quantity, "price": price,
        "final_price": price, "line_price": price * quantity, "final_line_price": price * quantity,
        "discounts": [], "properties": {},
    }  # fmt: skip


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script src="{ingress}/pixel/v1.js" async></script>
</head><body>
<h1>{title}</h1>
<ul>{products}</ul>
</body></html>
"""


class Storefront:
    """`with Storefront(ingress_url, tmp_dir) as shop:` serving on `shop.port`."""

    def __init__(self, ingress_url: str, workdir: Path, currency: str = "USD") -> None:
        self.ingress_url = ingress_url
        self.currency = currency
        self.carts: dict[str, Cart] = {}
        self.lock = threading.Lock()
        self.requests: list[str] = []  # "METHOD host path", for the test's diagnostics
        cert, key = workdir / "storefront.crt", workdir / "storefront.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=storefront.test", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Storefront:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def cart(self, token: str) -> Cart:
        with self.lock:
            return self.carts.setdefault(token, Cart(token))


def _handler(shop: Storefront) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:  # quiet: the test prints what matters
            pass

        def _cart(self) -> tuple[Cart, str | None]:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
            token = jar["cart"].value if "cart" in jar else None
            if token is None:
                new = uuid.uuid4().hex
                return shop.cart(new), f"cart={new}; Path=/; SameSite=Lax; Secure"
            return shop.cart(token), None

        def _send(self, status: int, body: bytes, content_type: str, cookie: str | None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if cookie:
                self.send_header("Set-Cookie", cookie)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, body: Any, cookie: str | None) -> None:
            self._send(status, json.dumps(body).encode(), "application/json", cookie)

        def _body(self) -> dict[str, Any]:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            kind = self.headers.get("Content-Type", "").split(";")[0].strip()
            if kind == "application/json":
                parsed: dict[str, Any] = json.loads(raw or b"{}")
                return parsed
            # A theme's <form action="/cart/update">: attributes[name]=value
            form = parse_qs(raw.decode())
            attributes = {k[11:-1]: v[0] for k, v in form.items() if k.startswith("attributes[")}
            return {"attributes": attributes} if attributes else {}

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            shop.requests.append(f"GET {self.headers.get('Host')} {url.path}")
            cart, cookie = self._cart()
            if url.path == "/cart.js":
                with shop.lock:
                    self._json(200, cart.as_json(shop.currency), cookie)
                return
            if url.path == "/favicon.ico":
                self._send(204, b"", "image/x-icon", cookie)  # no icon, and no console error
                return
            products = "".join(f"<li data-variant='{v}'>{p[2]}</li>" for v, p in PRODUCTS.items())
            title = url.path.strip("/").replace("/", " / ") or "Home"
            page = PAGE.format(title=title, ingress=shop.ingress_url, products=products)
            self._send(200, page.encode(), "text/html; charset=utf-8", cookie)

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            shop.requests.append(f"POST {self.headers.get('Host')} {url.path}")
            cart, cookie = self._cart()
            try:
                body = self._body()
            except ValueError:
                self._json(400, {"status": 400, "message": "Bad Request"}, cookie)
                return
            if url.path == "/cart/update.js":
                with shop.lock:
                    for name, value in (body.get("attributes") or {}).items():
                        if value in ("", None):
                            cart.attributes.pop(str(name), None)
                        else:
                            cart.attributes[str(name)] = str(value)
                    if "note" in body:
                        cart.note = body["note"]
                    answer = cart.as_json(shop.currency)
                self._json(200, answer, cookie)
            elif url.path == "/cart/add.js":
                added = []
                with shop.lock:
                    for item in body.get("items") or []:
                        variant, quantity = int(item["id"]), int(item.get("quantity", 1))
                        if variant not in PRODUCTS:
                            error = {"status": 404, "message": "Cart Error",
                                     "description": "Cannot find variant"}  # fmt: skip
                            self._json(404, error, cookie)
                            return
                        cart.lines[variant] = cart.lines.get(variant, 0) + quantity
                        added.append(_item(variant, cart.lines[variant]))
                self._json(200, {"items": added}, cookie)
            else:
                self._json(404, {"status": 404, "message": "Not Found"}, cookie)

    return Handler
