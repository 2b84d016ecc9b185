"""Programs: what agents promote (landing page, attribution policy, currency)."""
