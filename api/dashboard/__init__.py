"""The `/dashboard` page: static HTML, CSS and plain JavaScript served by the API (no build)."""
