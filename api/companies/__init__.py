"""Companies (tenants): sign-up creates the company, its root unit and its first owner."""
