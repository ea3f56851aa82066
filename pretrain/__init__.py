"""bertforge's model side: the pretrain stage (from scratch or continued), and the evaluate and publish stages."""
