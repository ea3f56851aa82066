"""The shards stage: documents + tokenizer -> packed, memory-mapped token rows."""
