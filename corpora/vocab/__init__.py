"""The vocab stage: cleaned documents -> a tokenizer (tokenizer.json) + intrinsic metrics."""
