"""Replays: the live ledger compared with a shadow version, and promotion (see `service`)."""

from api.replays.service import Promotion, ReplayDiff, diff_replay, promote

__all__ = ["Promotion", "ReplayDiff", "diff_replay", "promote"]
