"""The commission ledger: entries are append-only facts; status changes (approve, reject, hold,
paid) are appended as status events, and an entry's current status is its newest event."""
