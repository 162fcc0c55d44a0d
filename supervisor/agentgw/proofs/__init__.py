"""Isolation and alignment proofs, proof records, and the Ed25519 signing they share."""
