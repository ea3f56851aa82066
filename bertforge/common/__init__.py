"""The layer below both sides: errors users act on and atomic, hash-named stage folders."""
