"""Units: the tree of a company (region -> team) that roles are granted on."""
