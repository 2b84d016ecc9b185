"""GDPR redaction (issue #17 item 4): Shopify's `customers/redact` and `shop/redact` erase the
personal data the archive and the analytics tables hold, and leave a record that carries none."""
