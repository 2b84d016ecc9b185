"""Authentication: passwords, access and refresh tokens, API keys, login rate limiting."""
