"""The corpus stage: raw sources -> cleaned, deduplicated documents + a report of every removal."""
