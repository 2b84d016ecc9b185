"""Shopify app installation through OAuth (authorization code grant)."""
