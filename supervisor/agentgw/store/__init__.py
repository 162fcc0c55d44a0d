"""The release store's read side: find, list, read manifests, re-hash and verify releases.

apply writes the store (add, gc, the links of promote) and reads it; observe, proofs, the registry
and the CLI read it. So the reads sit below both, beside ``bus`` and ``run``: the leaves through
which the layers above touch the host.
"""
