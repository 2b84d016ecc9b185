"""Users of a company and their memberships (one role per unit subtree)."""
