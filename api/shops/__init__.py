"""Shopify shops and their webhook secrets (write-only: never returned by the API)."""
