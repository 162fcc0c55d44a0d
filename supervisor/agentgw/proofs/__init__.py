"""Isolation and alignment proofs and proof records (signed with :mod:`agentgw.signing`)."""
