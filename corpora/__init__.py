"""bertforge's data side: the corpus, vocab and shards stages."""
