"""The audit log: every mutation writes who, what, when, before/after, request id and source IP in
the mutation's own transaction, hash-chained per company (`chain` is the pure part)."""

from api.audit.chain import ChainProblem, verify_chain
from api.audit.service import record

__all__ = ["ChainProblem", "record", "verify_chain"]
