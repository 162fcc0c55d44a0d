"""Read-only views of the host: files, users, units, processes."""
