"""Effects: atomic writes, symlink flips, users, unit control."""
