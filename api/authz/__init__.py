"""Role-based access control: a declared permission table, pure policy functions, and the route
dependency that applies them."""
