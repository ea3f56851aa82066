"""The word-start table lives on the data side now (`corpora.vocab.word_starts`): the shards stage needs it
for static whole-word masking. Re-exported here so model-side imports keep working."""

from corpora.vocab.word_starts import load_word_start_table, word_start_table  # noqa: F401
