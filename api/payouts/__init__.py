"""Payouts: paying an agent the approved, unpaid entries of one currency (and period)."""
