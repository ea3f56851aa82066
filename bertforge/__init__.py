"""bertforge: the command line and the stage graph (above corpora/ and pretrain/); bertforge.common sits below both."""
