"""API keys: per company, stored hashed, each scoped to one role on one unit subtree."""
