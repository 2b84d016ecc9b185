"""Commission rules of a program, versioned: a change is version n+1, old versions stay
readable, and every ledger entry names the version it was computed with."""
