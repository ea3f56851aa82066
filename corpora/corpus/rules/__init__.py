"""Document rules of the corpus stage, as datatrove steps: quality, lines, word lists, language."""
