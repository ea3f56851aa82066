"""bertforge's model side: the pretrain, evaluate and publish stages, and the `bertforge` CLI."""
